// Unit tests of request preprocessing: images decoded, resized and
// normalised like training images; budgets, deadlines and tensor shapes.
#include "server/serving/preprocess.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <limits>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "tests/test_util/image_fixtures.h"

namespace kaizen::serving {
namespace {

TEST(PreprocessTest, ImagesAreConvertedResizedAndNormalisedLikeTrainingImages) {
  kaizen::v1::Model meta;
  meta.set_name("m");
  for (int64_t d : {3, 8, 8}) meta.add_input_shape(d);
  meta.mutable_normalization()->add_mean(0.5f);
  meta.mutable_normalization()->add_std(0.25f);
  // A grey 8x8 PNG becomes 3 identical channels, (x/255 - 0.5) / 0.25.
  const std::string png = test_util::EncodePng(8, 8, 1, 3);
  const std::vector<uint8_t> pixels = test_util::MakePixels(8, 8, 1, 3);
  auto x = PreprocessImage(png, meta, 1 << 20, "inputs[0]");
  ASSERT_TRUE(x.ok()) << x.status();
  ASSERT_EQ(x->sizes(), (std::vector<int64_t>{3, 8, 8}));
  for (int c = 0; c < 3; ++c) {
    EXPECT_NEAR((*x)[c][2][5].item<float>(), (pixels[2 * 8 + 5] / 255.0f - 0.5f) / 0.25f, 1e-5);
  }
  // Any size is resized to the model's.
  auto big = PreprocessImage(test_util::EncodeJpeg(40, 30, 3, 1), meta, 1 << 20, "inputs[1]");
  ASSERT_TRUE(big.ok());
  EXPECT_EQ(big->sizes(), (std::vector<int64_t>{3, 8, 8}));
  auto bad = PreprocessImage("not an image", meta, 1 << 20, "inputs[2]");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StartsWith(bad.status().message(), "inputs[2]: ")) << bad.status();
  auto huge = PreprocessImage(test_util::EncodePng(64, 64, 1, 1), meta, 100, "inputs[3]");
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(PreprocessTest, ExifOrientationIsAppliedLikeInTraining) {
  // A phone photo: stored landscape (48x32) with EXIF orientation 6 (turn 90
  // degrees clockwise to show it). Serving decodes through the same decoder as
  // training ingest, so it must preprocess exactly like the upright image.
  const int w = 32, h = 48;  // upright, portrait
  const std::vector<uint8_t> upright = test_util::MakePixels(w, h, 3, 9);
  std::vector<uint8_t> stored(upright.size());
  for (int sy = 0; sy < w; ++sy) {    // stored height = upright width
    for (int sx = 0; sx < h; ++sx) {  // stored width = upright height
      const int x = w - 1 - sy, y = sx;
      for (int c = 0; c < 3; ++c) {
        stored[(static_cast<size_t>(sy) * h + sx) * 3 + c] =
            upright[(static_cast<size_t>(y) * w + x) * 3 + c];
      }
    }
  }
  const std::string stored_jpeg = test_util::EncodeJpegPixels(stored, h, w, 3);
  kaizen::v1::Model meta;
  meta.set_name("m");
  for (int64_t d : {3, 24, 16}) meta.add_input_shape(d);
  meta.mutable_normalization()->add_mean(0.0f);
  meta.mutable_normalization()->add_std(1.0f);

  auto expected =
      PreprocessImage(test_util::EncodeJpegPixels(upright, w, h, 3), meta, 1 << 20, "inputs[0]");
  auto rotated =
      PreprocessImage(test_util::InsertExifOrientation(stored_jpeg, 6), meta, 1 << 20, "inputs[1]");
  auto as_stored = PreprocessImage(stored_jpeg, meta, 1 << 20, "inputs[2]");
  ASSERT_TRUE(expected.ok()) << expected.status();
  ASSERT_TRUE(rotated.ok()) << rotated.status();
  ASSERT_TRUE(as_stored.ok()) << as_stored.status();
  ASSERT_EQ(rotated->sizes(), expected->sizes());
  // JPEG rounds the two encodings a little differently; the layout is the same.
  EXPECT_LT((*rotated - *expected).abs().mean().item<float>(), 0.02f);
  EXPECT_LT((*rotated - *expected).abs().max().item<float>(), 0.1f);
  // Without the orientation the same pixels are far off (the test can fail).
  EXPECT_GT((*as_stored - *expected).abs().mean().item<float>(), 0.1f);
}

TEST(PreprocessTest, RequestImageDecoderStopsOnCancelDeadlineAndBudget) {
  kaizen::v1::Model meta;
  meta.set_name("m");
  for (int64_t d : {1, 8, 8}) meta.add_input_shape(d);
  const std::string png = test_util::EncodePng(100, 100, 3, 1);  // 30,000 decoded bytes

  RequestImageDecoder::Options o;
  o.budget.max_bytes = 50'000;
  RequestImageDecoder budgeted(o, static_cast<int64_t>(png.size()));
  EXPECT_TRUE(budgeted.Decode(png, meta, "inputs[0]").ok());
  auto second = budgeted.Decode(png, meta, "inputs[1]");
  EXPECT_EQ(second.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(absl::StartsWith(second.status().message(), "inputs[1]: PNG of 100x100"))
      << second.status();

  bool cancelled = false;
  RequestImageDecoder::Options c;
  c.cancelled = [&cancelled] { return cancelled; };
  RequestImageDecoder cancellable(c, 0);
  EXPECT_TRUE(cancellable.Decode(png, meta, "inputs[0]").ok());
  cancelled = true;
  EXPECT_EQ(cancellable.Decode(png, meta, "inputs[1]").status().code(),
            absl::StatusCode::kCancelled);

  RequestImageDecoder::Options d;
  d.deadline = absl::Now() - absl::Seconds(1);
  auto late = RequestImageDecoder(d, 0).Decode(png, meta, "inputs[0]");
  EXPECT_EQ(late.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(absl::StartsWith(late.status().message(), "inputs[0]: ")) << late.status();
}

TEST(PreprocessTest, TensorsMustMatchTheModelShape) {
  kaizen::v1::Model meta;
  meta.set_name("m");
  for (int64_t d : {1, 2, 2}) meta.add_input_shape(d);
  std::vector<float> v(8, 0.5f);
  auto one = BatchFromFloats(v.data(), 4, {1, 2, 2}, meta, "x");
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->sizes(), (std::vector<int64_t>{1, 1, 2, 2}));
  auto two = BatchFromFloats(v.data(), 8, {2, 1, 2, 2}, meta, "x");
  ASSERT_TRUE(two.ok());
  EXPECT_EQ(two->size(0), 2);
  EXPECT_EQ(BatchFromFloats(v.data(), 8, {2, 2, 2}, meta, "x").status().message(),
            "x has shape [2, 2, 2]; model \"m\" takes [1, 2, 2] or [N, 1, 2, 2]");
  EXPECT_EQ(BatchFromFloats(v.data(), 7, {2, 1, 2, 2}, meta, "x").status().message(),
            "x has 7 values; shape [2, 1, 2, 2] needs 8");
  v[3] = std::numeric_limits<float>::infinity();
  EXPECT_EQ(BatchFromFloats(v.data(), 4, {1, 2, 2}, meta, "x").status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kaizen::serving
