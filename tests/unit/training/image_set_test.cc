#include "server/training/image_set.h"

#include "gtest/gtest.h"

namespace kaizen::training {
namespace {

TEST(ImageSetTest, ConvertsSizesAndChannels) {
  datasets::DecodedDataset d;
  d.class_names = {"a", "b"};
  // A 10x10 RGB image of one colour and a 28x28 grayscale one.
  d.records.push_back({0, 10, 10, 3, 0});
  for (int i = 0; i < 100; ++i) d.pixels.insert(d.pixels.end(), {200, 100, 50});
  d.records.push_back({1, 28, 28, 1, static_cast<int64_t>(d.pixels.size())});
  for (int i = 0; i < 28 * 28; ++i) d.pixels.push_back(static_cast<uint8_t>(i % 256));

  auto gray = ConvertDataset(d, {1, 28, 28});
  ASSERT_TRUE(gray.ok()) << gray.status();
  EXPECT_EQ(gray->images.sizes(), (std::vector<int64_t>{2, 1, 28, 28}));
  // Luminance of (200, 100, 50), resized without changing a flat colour.
  EXPECT_EQ(gray->images[0].min().item<int>(), 124);
  EXPECT_EQ(gray->images[0].max().item<int>(), 124);
  EXPECT_EQ(gray->images[1][0][0][5].item<int>(), 5);
  EXPECT_EQ(gray->labels[1].item<int64_t>(), 1);

  auto rgb = ConvertDataset(d, {3, 14, 14});
  ASSERT_TRUE(rgb.ok()) << rgb.status();
  EXPECT_EQ(rgb->images.sizes(), (std::vector<int64_t>{2, 3, 14, 14}));
  EXPECT_EQ(rgb->images[0][0][3][3].item<int>(), 200);
  EXPECT_EQ(rgb->images[0][2][3][3].item<int>(), 50);
  EXPECT_TRUE(torch::equal(rgb->images[1][0], rgb->images[1][2]));  // gray repeated

  d.records.push_back({1, 28, 28, 1, static_cast<int64_t>(d.pixels.size())});  // no pixels
  EXPECT_EQ(ConvertDataset(d, {1, 28, 28}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ImageSetTest, StratifiedSplitKeepsClassProportions) {
  std::vector<int32_t> labels;
  for (int i = 0; i < 100; ++i) labels.push_back(i < 80 ? 0 : 1);
  auto [train, val] = StratifiedSplit(labels, 0.1, 4);
  EXPECT_EQ(train.size() + val.size(), 100u);
  int val1 = 0;
  for (int64_t i : val) val1 += labels[i];
  EXPECT_EQ(val.size(), 10u);
  EXPECT_EQ(val1, 2);
  EXPECT_EQ(StratifiedSplit(labels, 0.1, 4).second, val);
  EXPECT_NE(StratifiedSplit(labels, 0.1, 5).second, val);
}

}  // namespace
}  // namespace kaizen::training
