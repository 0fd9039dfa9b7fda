#include "server/common/input_shape.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace kaizen::common {

std::optional<int64_t> InputsInShape(absl::Span<const int64_t> shape,
                                     absl::Span<const int64_t> chw) {
  if (shape == chw) return 1;
  if (shape.size() == chw.size() + 1 && std::equal(chw.begin(), chw.end(), shape.begin() + 1)) {
    return shape[0];
  }
  return std::nullopt;
}

std::string ShapeText(absl::Span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

}  // namespace kaizen::common
