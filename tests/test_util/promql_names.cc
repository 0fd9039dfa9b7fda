#include "tests/test_util/promql_names.h"

#include <cctype>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "server/common/atomic_file.h"

namespace kaizen::test_util {
namespace {

bool IsIdentStart(char c) {
  return std::isalpha(static_cast<unsigned char>(c)) || c == '_' || c == ':';
}
bool IsIdentChar(char c) { return IsIdentStart(c) || std::isdigit(static_cast<unsigned char>(c)); }

// PromQL's aggregation operators and keywords: never metric names when they
// stand where the grammar puts them.
const absl::flat_hash_set<std::string>& Keywords() {
  static const auto* k = new absl::flat_hash_set<std::string>{
      "sum",        "min",         "max",          "avg",     "group",  "stddev",
      "stdvar",     "count",       "count_values", "bottomk", "topk",   "quantile",
      "limitk",     "limit_ratio", "by",           "without", "on",     "ignoring",
      "group_left", "group_right", "and",          "or",      "unless", "bool",
      "offset",     "atan2",       "inf",          "nan",     "start",  "end"};
  return *k;
}

// Keywords followed by a parenthesised list of label names.
bool TakesLabelList(const std::string& word) {
  return word == "by" || word == "without" || word == "on" || word == "ignoring" ||
         word == "group_left" || word == "group_right";
}

// Index just past the string literal that starts at `i` (quote at expr[i]).
size_t SkipString(absl::string_view expr, size_t i) {
  const char quote = expr[i++];
  while (i < expr.size() && expr[i] != quote) {
    if (expr[i] == '\\' && quote != '`') ++i;
    ++i;
  }
  return i + 1;
}

// Index just past the bracket that closes the one at `i`.
size_t SkipBracketed(absl::string_view expr, size_t i, char open, char close) {
  int depth = 0;
  while (i < expr.size()) {
    const char c = expr[i];
    if (c == '"' || c == '\'' || c == '`') {
      i = SkipString(expr, i);
      continue;
    }
    if (c == open) ++depth;
    if (c == close && --depth == 0) return i + 1;
    ++i;
  }
  return i;
}

size_t SkipSpace(absl::string_view expr, size_t i) {
  while (i < expr.size() && std::isspace(static_cast<unsigned char>(expr[i]))) ++i;
  return i;
}

}  // namespace

std::set<std::string> PromqlMetricNames(absl::string_view expr) {
  // Grafana's label_values(metric, label): only the first argument is PromQL.
  absl::string_view e = absl::StripAsciiWhitespace(expr);
  if (absl::ConsumePrefix(&e, "label_values(") && absl::ConsumeSuffix(&e, ")")) {
    const size_t comma = e.rfind(',');
    if (comma != absl::string_view::npos) e = e.substr(0, comma);
    expr = e;
  }
  std::set<std::string> names;
  size_t i = 0;
  while (i < expr.size()) {
    const char c = expr[i];
    if (c == '"' || c == '\'' || c == '`') {
      i = SkipString(expr, i);
    } else if (c == '{') {
      i = SkipBracketed(expr, i, '{', '}');  // label matchers
    } else if (c == '[') {
      i = SkipBracketed(expr, i, '[', ']');  // ranges and subqueries
    } else if (c == '#') {
      while (i < expr.size() && expr[i] != '\n') ++i;
    } else if (c == '$') {
      // Grafana variables: $name or ${name}.
      ++i;
      if (i < expr.size() && expr[i] == '{') {
        i = SkipBracketed(expr, i, '{', '}');
      } else {
        while (i < expr.size() && IsIdentChar(expr[i])) ++i;
      }
    } else if (std::isdigit(static_cast<unsigned char>(c)) || c == '.') {
      // Numbers and durations (0.99, 1e3, 15m, 0x1f).
      while (i < expr.size() && (IsIdentChar(expr[i]) || expr[i] == '.')) ++i;
    } else if (IsIdentStart(c)) {
      const size_t start = i;
      while (i < expr.size() && IsIdentChar(expr[i])) ++i;
      const std::string word(expr.substr(start, i - start));
      const size_t next = SkipSpace(expr, i);
      if (TakesLabelList(word)) {
        if (next < expr.size() && expr[next] == '(') i = SkipBracketed(expr, next, '(', ')');
      } else if (Keywords().contains(word)) {
        // An operator, not a name.
      } else if (next < expr.size() && expr[next] == '(') {
        // A function call.
      } else {
        names.insert(word);
      }
    } else {
      ++i;
    }
  }
  return names;
}

absl::StatusOr<RuleExpressions> ReadRuleExpressions(const std::string& path) {
  std::string text;
  if (absl::Status st = common::ReadFile(path, &text); !st.ok()) return st;
  RuleExpressions out;
  std::vector<absl::string_view> lines = absl::StrSplit(text, '\n');
  auto indent = [](absl::string_view line) {
    size_t n = 0;
    while (n < line.size() && (line[n] == ' ' || line[n] == '-')) ++n;
    return n;
  };
  for (size_t i = 0; i < lines.size(); ++i) {
    absl::string_view line = lines[i];
    absl::string_view body = absl::StripLeadingAsciiWhitespace(line);
    if (absl::StartsWith(body, "- alert:") || absl::StartsWith(body, "- record:")) ++out.rules;
    if (absl::ConsumePrefix(&body, "- ")) body = absl::StripLeadingAsciiWhitespace(body);
    if (!absl::ConsumePrefix(&body, "expr:")) continue;
    body = absl::StripAsciiWhitespace(body);
    if (body == "|" || body == "|-" || body == ">" || body == ">-") {
      // A block scalar: the lines indented deeper than the key.
      const size_t key_indent = indent(line);
      std::string expr;
      for (size_t j = i + 1; j < lines.size(); ++j) {
        absl::string_view next = lines[j];
        if (!absl::StripAsciiWhitespace(next).empty() && indent(next) <= key_indent) break;
        absl::StrAppend(&expr, absl::StripAsciiWhitespace(next), "\n");
        i = j;
      }
      out.exprs.push_back(expr);
    } else {
      if (body.size() >= 2 && (body.front() == '"' || body.front() == '\'') &&
          body.back() == body.front()) {
        body = body.substr(1, body.size() - 2);
      }
      out.exprs.emplace_back(body);
    }
  }
  return out;
}

namespace {

void CollectExpressions(const google::protobuf::Value& v, const std::string& key,
                        DashboardExpressions* out) {
  switch (v.kind_case()) {
    case google::protobuf::Value::kStringValue:
      if (key == "expr" || key == "query" || key == "definition") {
        if (!v.string_value().empty()) out->exprs.push_back(v.string_value());
      }
      break;
    case google::protobuf::Value::kStructValue: {
      // A datasource variable's query names a plugin ("prometheus"), not PromQL.
      const auto& fields = v.struct_value().fields();
      const auto type = fields.find("type");
      if (type != fields.end() && type->second.string_value() == "datasource") break;
      for (const auto& [k, child] : fields) {
        if (k == "targets" && child.kind_case() == google::protobuf::Value::kListValue) {
          out->targets += child.list_value().values_size();
        }
        CollectExpressions(child, k, out);
      }
      break;
    }
    case google::protobuf::Value::kListValue:
      for (const auto& child : v.list_value().values()) CollectExpressions(child, key, out);
      break;
    default:
      break;
  }
}

}  // namespace

absl::StatusOr<DashboardExpressions> ReadDashboardExpressions(const std::string& path) {
  std::string text;
  if (absl::Status st = common::ReadFile(path, &text); !st.ok()) return st;
  google::protobuf::Value root;
  const auto st = google::protobuf::util::JsonStringToMessage(text, &root);
  if (!st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not JSON: ", st.ToString()));
  }
  DashboardExpressions out;
  CollectExpressions(root, "", &out);
  return out;
}

std::vector<std::string> UnknownMetrics(const std::set<std::string>& referenced,
                                        const std::set<std::string>& exported) {
  std::vector<std::string> out;
  for (const std::string& name : referenced) {
    if (name != "up" && exported.count(name) == 0) out.push_back(name);
  }
  return out;
}

}  // namespace kaizen::test_util
