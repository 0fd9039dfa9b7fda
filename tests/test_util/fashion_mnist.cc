#include "tests/test_util/fashion_mnist.h"

#include <gtest/gtest.h>

#include <map>

#include "absl/strings/str_cat.h"
#include "server/datasets/idx_ingestor.h"
#include "tests/test_util/bytes.h"
#include "tests/test_util/image_fixtures.h"

namespace kaizen::test_util {

void WriteFashionSubset(const std::string& which, const std::vector<int>& classes, int per_class,
                        int skip, const std::string& images_path, const std::string& labels_path) {
  static std::map<std::string, datasets::DecodedDataset>* cache =
      new std::map<std::string, datasets::DecodedDataset>();
  if (!cache->count(which)) {
    auto r = datasets::IngestIdx(absl::StrCat(kFashionDir, "/", which, "-images-idx3-ubyte.gz"),
                                 absl::StrCat(kFashionDir, "/", which, "-labels-idx1-ubyte.gz"), {},
                                 "images", "labels", {});
    ASSERT_TRUE(r.ok()) << r.status();
    (*cache)[which] = std::move(r->data);
  }
  const datasets::DecodedDataset& all = (*cache)[which];
  std::string pixels, labels;
  for (size_t k = 0; k < classes.size(); ++k) {
    int seen = 0, taken = 0;
    for (const auto& rec : all.records) {
      if (rec.label != classes[k]) continue;
      if (seen++ < skip) continue;
      pixels.append(reinterpret_cast<const char*>(all.pixels.data() + rec.offset), 28 * 28);
      labels.push_back(static_cast<char>(k));
      if (++taken == per_class) break;
    }
  }
  const uint32_t n = static_cast<uint32_t>(labels.size());
  WriteBinaryFile(images_path, BigEndian32(0x803) + BigEndian32(n) + BigEndian32(28) + BigEndian32(28) + pixels);
  WriteBinaryFile(labels_path, BigEndian32(0x801) + BigEndian32(n) + labels);
}

}  // namespace kaizen::test_util
