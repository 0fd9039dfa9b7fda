#include "server/common/names.h"

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kaizen::common {
namespace {

bool IsLeading(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool IsInner(char c) { return IsLeading(c) || c == '.' || c == '_' || c == '-'; }

}  // namespace

absl::Status ValidateName(absl::string_view field, absl::string_view name) {
  if (name.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(field, " is empty"));
  }
  if (name.size() > static_cast<size_t>(kMaxNameLength)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s is %d characters long; at most %d are allowed", field, name.size(), kMaxNameLength));
  }
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    if (i == 0 ? !IsLeading(c) : !IsInner(c)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s \"%s\" is not allowed: character %d ('%s') must match %s; names "
          "match [a-z0-9][a-z0-9._-]*",
          field, absl::CHexEscape(name), i + 1, absl::CHexEscape(absl::string_view(&name[i], 1)),
          i == 0 ? "[a-z0-9]" : "[a-z0-9._-]"));
    }
  }
  return absl::OkStatus();
}

absl::Status ParseModelRef(absl::string_view ref, std::string* name, int64_t* version) {
  *version = 0;
  const size_t colon = ref.rfind(':');
  if (colon == absl::string_view::npos) {
    *name = std::string(ref);
  } else {
    *name = std::string(ref.substr(0, colon));
    absl::string_view v = ref.substr(colon + 1);
    if (!absl::SimpleAtoi(v, version) || *version <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("model reference \"", absl::CHexEscape(ref), "\" has a bad version \"",
                       absl::CHexEscape(v), "\"; expected NAME or NAME:VERSION with VERSION >= 1"));
    }
  }
  return ValidateName("model name", *name);
}

}  // namespace kaizen::common
