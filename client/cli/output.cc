#include "client/cli/output.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "google/protobuf/util/json_util.h"

namespace kaizen::cli {
namespace {

// Class names shown inline in a model's details before "...".
constexpr int kMaxInlineClassNames = 10;

// "  key:" padded so that the values line up.
void Field(std::string* out, absl::string_view key, absl::string_view value) {
  absl::StrAppendFormat(out, "  %-15s %s\n", absl::StrCat(key, ":"), value);
}

std::string Indent(const std::string& text, int spaces) {
  std::string out;
  const std::string pad(spaces, ' ');
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!line.empty()) absl::StrAppend(&out, pad, line, "\n");
  }
  return out;
}

std::string ReportDetails(const kaizen::v1::DatasetReport& report) {
  std::string out;
  if (report.failed_files_size() > 0) {
    absl::StrAppend(&out, "failed files (", report.failed_files_size(),
                    ", left out):\n");
    for (const auto& failed : report.failed_files()) {
      absl::StrAppend(&out, "  ", failed.path(), ": ", failed.reason(), "\n");
    }
  }
  const int64_t duplicates =
      std::max<int64_t>(report.duplicate_count(), report.duplicates_size());
  if (duplicates > 0) {
    absl::StrAppend(&out, "duplicates (", duplicates);
    if (duplicates > report.duplicates_size()) {
      absl::StrAppend(&out, ", ", report.duplicates_size(), " listed");
    }
    absl::StrAppend(&out, ", kept):\n");
    for (const auto& duplicate : report.duplicates()) {
      absl::StrAppend(&out, "  ", duplicate.path(), " is a copy of ",
                      duplicate.duplicate_of(), "\n");
    }
  }
  if (report.ignored_files_size() > 0) {
    absl::StrAppend(&out, "ignored files (", report.ignored_files_size(),
                    "):\n");
    for (const std::string& ignored : report.ignored_files()) {
      absl::StrAppend(&out, "  ", ignored, "\n");
    }
  }
  if (report.image_sizes_size() > 0) {
    absl::StrAppend(
        &out, "image sizes: ", absl::StrJoin(report.image_sizes(), ", "), "\n");
  }
  if (report.imbalance_ratio() > 0) {
    absl::StrAppendFormat(&out, "imbalance ratio: %.2f\n",
                          report.imbalance_ratio());
  }
  if (report.warnings_size() > 0) {
    absl::StrAppend(&out, "warnings:\n");
    for (const std::string& warning : report.warnings()) {
      absl::StrAppend(&out, "  ", warning, "\n");
    }
  }
  return out;
}

std::string JoinFloats(const google::protobuf::RepeatedField<float>& values) {
  return absl::StrJoin(values, ",", [](std::string* out, float v) {
    absl::StrAppendFormat(out, "%g", v);
  });
}

std::string HeadKindName(kaizen::v1::HeadKind kind) {
  switch (kind) {
    case kaizen::v1::HEAD_KIND_LINEAR:
      return "linear";
    case kaizen::v1::HEAD_KIND_MLP:
      return "mlp";
    default:
      return "unknown";
  }
}

std::string WithThousands(int64_t n) {
  std::string digits = absl::StrCat(n < 0 ? -n : n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return n < 0 ? absl::StrCat("-", out) : out;
}

}  // namespace

absl::StatusOr<std::string> ToJson(const google::protobuf::Message& message) {
  // An empty response (e.g. from a delete) prints as "{}" on one line.
  if (message.GetDescriptor()->field_count() == 0) return std::string("{}\n");
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.always_print_primitive_fields = true;
  std::string json;
  const auto status =
      google::protobuf::util::MessageToJsonString(message, &json, options);
  if (!status.ok()) {
    return absl::InternalError(
        absl::StrCat("cannot print the response as JSON: ", status.ToString()));
  }
  if (json.empty() || json.back() != '\n') json += '\n';
  return json;
}

Table::Table(std::vector<std::string> header) {
  rows_.push_back(std::move(header));
}

void Table::AddRow(std::vector<std::string> row) {
  rows_.push_back(std::move(row));
}

std::string Table::Render() const {
  std::vector<size_t> widths;
  for (const auto& row : rows_) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (size_t c = 0; c < row.size(); ++c) {
      widths[c] = std::max(widths[c], row[c].size());
    }
  }
  std::string out;
  for (const auto& row : rows_) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) {
      if (c + 1 == row.size()) {
        line += row[c];  // no trailing blanks
      } else {
        absl::StrAppend(&line, row[c],
                        std::string(widths[c] - row[c].size() + 2, ' '));
      }
    }
    absl::StrAppend(&out, line, "\n");
  }
  return out;
}

std::string FormatBytes(int64_t bytes) {
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  double value = bytes / 1024.0;
  int unit = 0;
  while (value >= 1024.0 && unit < 3) {
    value /= 1024.0;
    ++unit;
  }
  return absl::StrFormat("%.1f %s", value, units[unit]);
}

std::string FormatShape(const google::protobuf::RepeatedField<int64_t>& shape) {
  if (shape.empty()) return "-";
  return absl::StrJoin(shape, "x");
}

std::string FormatTime(const google::protobuf::Timestamp& time) {
  if (time.seconds() == 0 && time.nanos() == 0) return "-";
  const absl::Time t =
      absl::FromUnixSeconds(time.seconds()) + absl::Nanoseconds(time.nanos());
  return absl::FormatTime("%Y-%m-%d %H:%M", t, absl::LocalTimeZone());
}

std::string FormatCount(int64_t count) {
  if (count >= 1000000000) return absl::StrFormat("%.1fG", count / 1e9);
  if (count >= 1000000) return absl::StrFormat("%.1fM", count / 1e6);
  if (count >= 10000) return absl::StrFormat("%.0fK", count / 1e3);
  return absl::StrCat(count);
}

std::string DatasetFormatName(kaizen::v1::DatasetFormat format) {
  switch (format) {
    case kaizen::v1::DATASET_FORMAT_IMAGE_FOLDER:
      return "image-folder";
    case kaizen::v1::DATASET_FORMAT_IDX:
      return "idx";
    default:
      return "unspecified";
  }
}

std::string ModelSourceName(kaizen::v1::ModelSource source) {
  switch (source) {
    case kaizen::v1::MODEL_SOURCE_UPLOADED:
      return "uploaded";
    case kaizen::v1::MODEL_SOURCE_BUILTIN:
      return "builtin";
    case kaizen::v1::MODEL_SOURCE_FINE_TUNED:
      return "fine-tuned";
    default:
      return "unspecified";
  }
}

std::string DatasetTable(const kaizen::v1::ListDatasetsResponse& response) {
  Table table(
      {"NAME", "FORMAT", "EXAMPLES", "CLASSES", "SHAPE", "SIZE", "CREATED"});
  for (const kaizen::v1::Dataset& d : response.datasets()) {
    table.AddRow({d.name(), DatasetFormatName(d.format()),
                  absl::StrCat(d.num_examples()),
                  absl::StrCat(d.classes_size()), FormatShape(d.input_shape()),
                  FormatBytes(d.upload_bytes()), FormatTime(d.create_time())});
  }
  return table.Render();
}

std::string DatasetDetails(const kaizen::v1::Dataset& d) {
  std::string out = absl::StrCat("Dataset ", d.name(), "\n");
  if (!d.description().empty()) Field(&out, "description", d.description());
  Field(&out, "format", DatasetFormatName(d.format()));
  Field(&out, "examples", absl::StrCat(d.num_examples()));
  Field(&out, "input shape", FormatShape(d.input_shape()));
  Field(&out, "uploaded",
        absl::StrCat(FormatBytes(d.upload_bytes()), ", sha256 ", d.sha256()));
  Field(&out, "stored", FormatBytes(d.stored_bytes()));
  Field(&out, "created", FormatTime(d.create_time()));
  absl::StrAppend(&out, "  classes (", d.classes_size(), "):\n");
  Table classes({"LABEL", "NAME", "COUNT"});
  for (const kaizen::v1::ClassCount& c : d.classes()) {
    classes.AddRow(
        {absl::StrCat(c.label()), c.class_name(), absl::StrCat(c.count())});
  }
  absl::StrAppend(&out, Indent(classes.Render(), 4));
  const std::string report = ReportDetails(d.report());
  if (report.empty()) {
    absl::StrAppend(&out, "  report: clean\n");
  } else {
    absl::StrAppend(&out, "  report:\n", Indent(report, 4));
  }
  return out;
}

std::string ModelTable(const kaizen::v1::ListModelsResponse& response) {
  Table table({"NAME", "VERSION", "SOURCE", "ARCH", "INPUT", "CLASSES",
               "PARAMS", "CREATED"});
  for (const kaizen::v1::Model& m : response.models()) {
    const int64_t classes = m.head().out_features() > 0
                                ? m.head().out_features()
                                : m.class_names_size();
    table.AddRow(
        {m.name(), absl::StrCat(m.version()), ModelSourceName(m.source()),
         m.architecture().empty() ? "-" : m.architecture(),
         FormatShape(m.input_shape()), absl::StrCat(classes),
         FormatCount(m.parameter_count()), FormatTime(m.create_time())});
  }
  return table.Render();
}

std::string ModelDetails(const kaizen::v1::Model& m) {
  std::string out =
      absl::StrCat("Model ", m.name(), " (version ", m.version(), ")\n");
  if (!m.description().empty()) Field(&out, "description", m.description());
  Field(&out, "source", ModelSourceName(m.source()));
  Field(&out, "architecture",
        m.architecture().empty() ? "-" : m.architecture());
  Field(&out, "input shape", FormatShape(m.input_shape()));
  if (m.has_normalization()) {
    Field(&out, "normalization",
          absl::StrCat("mean ", JoinFloats(m.normalization().mean()), "  std ",
                       JoinFloats(m.normalization().std())));
  }
  if (m.has_head()) {
    Field(&out, "head",
          absl::StrFormat("%s (%s, %d -> %d)", m.head().module_path(),
                          HeadKindName(m.head().kind()), m.head().in_features(),
                          m.head().out_features()));
  }
  Field(&out, "parameters", WithThousands(m.parameter_count()));
  Field(&out, "size",
        absl::StrCat(FormatBytes(m.size_bytes()), ", sha256 ", m.sha256()));
  if (m.versions_size() > 0) {
    Field(&out, "versions",
          absl::StrCat(absl::StrJoin(m.versions(), ", "), " (latest ",
                       m.latest_version(), ", best ", m.best_version(), ")"));
  }
  if (m.class_names_size() > 0) {
    std::vector<std::string> shown(
        m.class_names().begin(),
        m.class_names().begin() +
            std::min(m.class_names_size(), kMaxInlineClassNames));
    if (m.class_names_size() > kMaxInlineClassNames) shown.push_back("...");
    Field(&out, "classes",
          absl::StrCat(m.class_names_size(), ": ", absl::StrJoin(shown, ", ")));
  }
  if (!m.job_id().empty()) Field(&out, "job", m.job_id());
  if (!m.metrics().empty()) {
    std::vector<std::pair<std::string, double>> metrics(m.metrics().begin(),
                                                        m.metrics().end());
    std::sort(metrics.begin(), metrics.end());
    Field(&out, "metrics",
          absl::StrJoin(metrics, ", ", [](std::string* s, const auto& kv) {
            absl::StrAppendFormat(s, "%s=%.4f", kv.first, kv.second);
          }));
  }
  Field(&out, "created", FormatTime(m.create_time()));
  return out;
}

}  // namespace kaizen::cli
