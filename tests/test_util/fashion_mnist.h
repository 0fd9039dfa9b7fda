// Fashion-MNIST subsets (from Debian's dataset-fashion-mnist) as IDX files,
// for tests that train real models.
#pragma once

#include <string>
#include <vector>

namespace kaizen::test_util {

inline constexpr char kFashionDir[] = "/usr/share/datasets/fashion-mnist";

// Writes an uncompressed IDX pair holding `per_class` images of each class in
// `classes` (relabelled 0..k-1), skipping the first `skip` of each class.
// `which` is "train" or "t10k".
void WriteFashionSubset(const std::string& which, const std::vector<int>& classes, int per_class,
                        int skip, const std::string& images_path, const std::string& labels_path);

}  // namespace kaizen::test_util
