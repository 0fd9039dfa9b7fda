#include "server/common/text_limits.h"

#include "absl/container/flat_hash_set.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/reflection.h"

namespace kaizen::common {
namespace {

bool IsControl(char32_t cp) {
  return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F) || cp == 0x2028 || cp == 0x2029;
}

// Checks UTF-8 and control characters; `allow_layout` admits \t and \n.
absl::Status CheckText(absl::string_view field, absl::string_view text, bool allow_layout) {
  for (size_t i = 0; i < text.size();) {
    const size_t at = i;
    const char32_t cp = NextCodePoint(text, &i);
    if (cp == kInvalidCodePoint) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s \"%s\" is not valid UTF-8 (byte %d is 0x%02x); use UTF-8 text", field,
          absl::CHexEscape(text.substr(0, 64)), at + 1, static_cast<unsigned char>(text[at])));
    }
    if (IsControl(cp) && !(allow_layout && (cp == '\t' || cp == '\n'))) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s \"%s\" contains the control character U+%04X at byte %d; only printable text is "
          "allowed",
          field, absl::CHexEscape(text.substr(0, 64)), static_cast<uint32_t>(cp), at + 1));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckLength(absl::string_view field, absl::string_view text, size_t max) {
  if (text.size() > max) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s is %d bytes long; at most %d bytes are allowed", field, text.size(), max));
  }
  return absl::OkStatus();
}

// The path of the first string field below `m` that is not valid UTF-8, or "".
std::string FindInvalidUtf8(const google::protobuf::Message& m, const std::string& prefix) {
  using google::protobuf::FieldDescriptor;
  const google::protobuf::Reflection* r = m.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  r->ListFields(m, &fields);
  for (const FieldDescriptor* f : fields) {
    const std::string name = prefix.empty() ? f->name() : absl::StrCat(prefix, ".", f->name());
    const bool text = f->type() == FieldDescriptor::TYPE_STRING;
    const bool message = f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE;
    if (!text && !message) continue;
    const int n = f->is_repeated() ? r->FieldSize(m, f) : 1;
    for (int i = 0; i < n; ++i) {
      const std::string at = f->is_repeated() ? absl::StrCat(name, "[", i, "]") : name;
      if (text) {
        const std::string s = f->is_repeated() ? r->GetRepeatedString(m, f, i) : r->GetString(m, f);
        if (!IsValidUtf8(s)) return at;
      } else {
        const google::protobuf::Message& sub =
            f->is_repeated() ? r->GetRepeatedMessage(m, f, i) : r->GetMessage(m, f);
        std::string bad = FindInvalidUtf8(sub, at);
        if (!bad.empty()) return bad;
      }
    }
  }
  return "";
}

}  // namespace

absl::Status ValidateClassName(absl::string_view field, absl::string_view name) {
  if (name.empty()) return absl::InvalidArgumentError(absl::StrCat(field, " is empty"));
  if (absl::Status st = CheckLength(field, name, kMaxClassNameBytes); !st.ok()) return st;
  return CheckText(field, name, /*allow_layout=*/false);
}

absl::Status ValidateClassNames(absl::string_view field, const std::vector<std::string>& names) {
  if (absl::Status st = ValidateCount(field, static_cast<int>(names.size()), kMaxClasses);
      !st.ok()) {
    return st;
  }
  absl::flat_hash_set<absl::string_view> seen;
  for (size_t i = 0; i < names.size(); ++i) {
    const std::string at = absl::StrCat(field, "[", i, "]");
    if (absl::Status st = ValidateClassName(at, names[i]); !st.ok()) return st;
    if (!seen.insert(names[i]).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(at, " \"", names[i], "\" is given twice; class names must differ"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateDescription(absl::string_view field, absl::string_view text) {
  if (absl::Status st = CheckLength(field, text, kMaxDescriptionBytes); !st.ok()) return st;
  return CheckText(field, text, /*allow_layout=*/true);
}

absl::Status ValidateToken(absl::string_view field, absl::string_view text, size_t max_bytes) {
  if (absl::Status st = CheckLength(field, text, max_bytes); !st.ok()) return st;
  return CheckText(field, text, /*allow_layout=*/false);
}

absl::Status ValidateCount(absl::string_view field, int count, int max) {
  if (count > max) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s has %d entries; at most %d are allowed", field, count, max));
  }
  return absl::OkStatus();
}

absl::Status ValidateRecord(absl::string_view what, const google::protobuf::Message& record) {
  const std::string bad = FindInvalidUtf8(record, "");
  if (!bad.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", bad, " is not valid UTF-8; the record was not stored"));
  }
  const size_t bytes = record.ByteSizeLong();
  if (bytes > kMaxRecordBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: the record would take %d bytes; at most %d can be stored (fewer or shorter class "
        "names, a shorter description)",
        what, bytes, kMaxRecordBytes));
  }
  return absl::OkStatus();
}

}  // namespace kaizen::common
