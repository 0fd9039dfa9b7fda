#include "server/training/exemplar_memory.h"

#include <torch/torch.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/test_util/temp_dir.h"
#include "tests/unit/training/training_test_util.h"

namespace kaizen::training {
namespace {

TEST(ExemplarMemoryTest, BoundsPerClassByTheTotal) {
  EXPECT_EQ(ExemplarsPerClass(50, 2000, 10), 50);
  EXPECT_EQ(ExemplarsPerClass(50, 200, 10), 20);
  EXPECT_EQ(ExemplarsPerClass(50, 5, 10), 1);  // never none
}

TEST(ExemplarMemoryTest, HerdingKeepsTheRunningMeanNearTheClassMean) {
  torch::Tensor f = torch::tensor({{1.0, 0.1}, {1.0, -0.1}, {1.0, 0.05}, {1.0, -0.05}, {1.0, 5.0}});
  const std::vector<int64_t> order = HerdingOrder(f, 5);
  ASSERT_EQ(order.size(), 5u);
  EXPECT_EQ(std::set<int64_t>(order.begin(), order.end()).size(), 5u);  // distinct
  // Against brute force: each pick is the unused row that brings the mean
  // of the picked (normalised) rows closest to the class mean.
  const torch::Tensor n = f / f.norm(2, 1, true);
  const torch::Tensor mean = n.mean(0);
  std::vector<int64_t> picked;
  for (int64_t step = 0; step < 5; ++step) {
    int64_t best = -1;
    double best_d = 1e9;
    for (int64_t i = 0; i < 5; ++i) {
      if (std::find(picked.begin(), picked.end(), i) != picked.end()) continue;
      std::vector<int64_t> with = picked;
      with.push_back(i);
      const double d =
          (n.index_select(0, torch::tensor(with)).mean(0) - mean).norm().item<double>();
      if (d < best_d) {
        best = i;
        best_d = d;
      }
    }
    picked.push_back(best);
  }
  EXPECT_EQ(order, picked);
  // A smaller memory is a prefix; the order is deterministic.
  EXPECT_EQ(HerdingOrder(f, 2), std::vector<int64_t>(order.begin(), order.begin() + 2));
  EXPECT_EQ(HerdingOrder(f, 99).size(), 5u);
}

TEST(ExemplarMemoryTest, HerdingMeanBeatsRandomMean) {
  torch::manual_seed(3);
  const torch::Tensor f = torch::randn({200, 16}) + 2.0;
  const torch::Tensor n = f / f.norm(2, 1, true);
  const torch::Tensor mean = n.mean(0);
  auto error = [&](const std::vector<int64_t>& rows) {
    return (n.index_select(0, torch::tensor(rows)).mean(0) - mean).norm().item<double>();
  };
  EXPECT_LT(error(HerdingOrder(f, 10)), error(RandomOrder(200, 10, 1)));
}

TEST(ExemplarMemoryTest, RandomOrderIsSeeded) {
  const std::vector<int64_t> a = RandomOrder(100, 10, 42);
  EXPECT_EQ(a, RandomOrder(100, 10, 42));
  EXPECT_NE(a, RandomOrder(100, 10, 43));
  EXPECT_EQ(std::set<int64_t>(a.begin(), a.end()).size(), 10u);
  EXPECT_EQ(RandomOrder(3, 10, 1).size(), 3u);
}

TEST(ExemplarMemoryTest, ShrinkRelabelsByNameAndKeepsAPrefix) {
  datasets::DecodedDataset d = fixtures::SyntheticDataset(3, 4);  // class0..class2
  // The merged list puts class2 first and has a class the memory lacks.
  const std::vector<std::string> classes = {"class2", "class0", "new"};
  const datasets::DecodedDataset m = ShrinkMemory(d, classes, 2);
  EXPECT_EQ(m.class_names, classes);
  EXPECT_EQ(MemoryClassCounts(m), (std::vector<int64_t>{2, 2, 0}));
  // The first two class2 records of `d`, pixel for pixel.
  std::vector<const datasets::DecodedDataset::Record*> class2;
  for (const auto& r : d.records) {
    if (r.label == 2) class2.push_back(&r);
  }
  const int64_t bytes = 28 * 28;
  int seen = 0;
  for (const auto& r : m.records) {
    if (r.label != 0) continue;
    EXPECT_TRUE(std::equal(m.pixels.begin() + r.offset, m.pixels.begin() + r.offset + bytes,
                           d.pixels.begin() + class2[seen]->offset));
    ++seen;
  }
  EXPECT_EQ(seen, 2);
  // AppendByName counts what is there already.
  datasets::DecodedDataset more = m;
  AppendByName(d, 3, &more);
  EXPECT_EQ(MemoryClassCounts(more), (std::vector<int64_t>{3, 3, 0}));
}

TEST(ExemplarMemoryTest, AppendedImagesRoundTripThroughTheDatasetFile) {
  const torch::Tensor images = torch::randint(0, 256, {3, 2, 5, 4}, torch::kUInt8);  // NCHW
  datasets::DecodedDataset memory;
  memory.class_names = {"a", "b"};
  AppendExemplars(images.narrow(0, 0, 2), 1, &memory);
  AppendExemplars(images.narrow(0, 2, 1), 0, &memory);
  ASSERT_EQ(memory.records.size(), 3u);
  EXPECT_EQ(memory.records[0].height, 5);
  EXPECT_EQ(memory.records[0].width, 4);
  EXPECT_EQ(memory.records[0].channels, 2);
  // HWC bytes of image 1.
  const torch::Tensor hwc = images[1].permute({1, 2, 0}).contiguous();
  EXPECT_TRUE(std::equal(memory.pixels.begin() + memory.records[1].offset,
                         memory.pixels.begin() + memory.records[1].offset + 40,
                         hwc.data_ptr<uint8_t>()));
  // Stored as a dataset file (temporary file, fsync, rename) and read back.
  test_util::TempDir dir;
  const std::string path = dir.path() + "/v1.pt.exemplars";
  ASSERT_TRUE(datasets::WriteDatasetFile(path, memory).ok());
  absl::StatusOr<datasets::DecodedDataset> back = datasets::ReadDatasetFile(path);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->class_names, memory.class_names);
  EXPECT_EQ(back->pixels, memory.pixels);
  EXPECT_EQ(MemoryClassCounts(*back), (std::vector<int64_t>{1, 2}));
}

}  // namespace
}  // namespace kaizen::training
