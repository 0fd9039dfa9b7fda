// The Predictor, the protocol-neutral way into inference: its limits, how it
// checks and batches tensor and image inputs against a model, and how it
// stops for the caller's deadline and cancellation. Runs a tiny TorchScript
// model through a real ModelServer batcher (no store: the model is loaded
// here, not acquired).
#include "server/serving/predictor.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/metrics/metrics.h"
#include "server/models/model_file.h"
#include "server/serving/loaded_model.h"
#include "server/serving/model_server.h"
#include "tests/test_util/image_fixtures.h"
#include "tests/test_util/temp_dir.h"
#include "tests/unit/serving/serving_test_util.h"

namespace kaizen::serving {
namespace {

using Kind = ModelInput::Kind;

using fixtures::TinyModel;

ModelInput Tensor(std::string what, std::vector<int64_t> shape, const std::vector<float>& values,
                  bool single = false) {
  ModelInput in;
  in.kind = Kind::kTensor;
  in.what = std::move(what);
  in.shape = std::move(shape);
  in.values = absl::MakeConstSpan(values);
  in.single = single;
  return in;
}

ModelInput Image(std::string what, absl::string_view bytes) {
  ModelInput in;
  in.kind = Kind::kEncodedImage;
  in.what = std::move(what);
  in.encoded_image = bytes;
  return in;
}

class PredictorTest : public ::testing::Test {
 protected:
  PredictorTest() {
    ModelServer::Options o;
    o.preload = false;
    o.quarantine_interrupted_loads = false;  // no catalogue
    o.device = "cpu";
    absl::StatusOr<std::unique_ptr<ModelServer>> server =
        ModelServer::Create(o, /*models=*/nullptr, metrics_.get());
    EXPECT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    options_.max_request_inputs = 4;
  }

  Predictor predictor() const { return Predictor(server_.get(), options_); }

  test_util::TempDir dir_;
  std::unique_ptr<metrics::Metrics> metrics_ = *metrics::Metrics::Create("127.0.0.1", -1);
  std::unique_ptr<ModelServer> server_;
  Predictor::Options options_;
  std::shared_ptr<const LoadedModel> model_ = TinyModel(dir_);
};

TEST_F(PredictorTest, OptionsComeFromTheServersLimits) {
  ModelServer::Options s;
  s.max_request_inputs = 7;
  s.max_image_pixels = 1234;
  s.max_jpeg_scans = 9;
  s.decode_budget.max_bytes = 5678;
  const Predictor::Options o = Predictor::OptionsFor(s);
  EXPECT_EQ(o.max_request_inputs, 7);
  EXPECT_EQ(o.max_image_pixels, 1234);
  EXPECT_EQ(o.max_jpeg_scans, 9);
  EXPECT_EQ(o.decode_budget.max_bytes, 5678);
}

TEST_F(PredictorTest, TooManyInputsAreRefusedWithTheLimit) {
  EXPECT_TRUE(predictor().CheckInputCount(4).ok());
  const absl::Status st = predictor().CheckInputCount(5);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(), "5 inputs in one request exceed the limit of 4; split the batch");
}

TEST_F(PredictorTest, BatchesTensorsAndImagesInOrderAndRunsThem) {
  const std::vector<float> one = {0, 5, 0, 0};                        // class 1
  const std::vector<float> two = {7, 0, 0, 0, /**/ 0, 0, 9, 0};       // classes 0, 2
  const std::string png = test_util::EncodePng(8, 8, 1, /*seed=*/3);  // preprocessed to [1, 2, 2]
  const std::vector<ModelInput> inputs = {Tensor("inputs[0]", {1, 2, 2}, one),
                                          Tensor("inputs[1]", {2, 1, 2, 2}, two),
                                          Image("inputs[2]", png)};
  auto probs = predictor().Predict(model_, inputs, InferOptions{});
  ASSERT_TRUE(probs.ok()) << probs.status();
  ASSERT_EQ(probs->sizes(), (std::vector<int64_t>{4, 3}));
  EXPECT_EQ(probs->argmax(1)[0].item<int64_t>(), 1);
  EXPECT_EQ(probs->argmax(1)[1].item<int64_t>(), 0);
  EXPECT_EQ(probs->argmax(1)[2].item<int64_t>(), 2);
  EXPECT_NEAR(probs->sum(1)[3].item<float>(), 1.0f, 1e-5);
}

TEST_F(PredictorTest, TensorsOfAnotherShapeOrSizeAreRefusedNamingTheInput) {
  const std::vector<float> v(8, 0.5f);
  auto shape = predictor().Predict(model_, {Tensor("inputs[0]", {2, 2, 2}, v)}, InferOptions{});
  EXPECT_EQ(shape.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(shape.status().message(),
            "inputs[0] has shape [2, 2, 2]; model \"tiny\" takes [1, 2, 2] or [N, 1, 2, 2]");
  const std::vector<float> seven(7, 0.5f);
  auto count =
      predictor().Predict(model_, {Tensor("inputs[0]", {2, 1, 2, 2}, seven)}, InferOptions{});
  EXPECT_EQ(count.status().message(), "inputs[0] has 7 values; shape [2, 1, 2, 2] needs 8");
}

TEST_F(PredictorTest, ASingleInputTensorMustHoldExactlyOneInput) {
  const std::vector<float> v(8, 0.5f);
  auto two =
      predictor().Predict(model_, {Tensor("inputs[3]", {2, 1, 2, 2}, v, true)}, InferOptions{});
  EXPECT_EQ(two.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(two.status().message(),
            "inputs[3] holds 2 inputs; each PredictInput is one input of shape [1, 2, 2]");
  const std::vector<float> four(4, 0.5f);
  EXPECT_TRUE(predictor()
                  .Predict(model_, {Tensor("inputs[0]", {1, 1, 2, 2}, four, true)}, InferOptions{})
                  .ok());
}

TEST_F(PredictorTest, EmptyBatchesAndInputsWithoutDataAreRefused) {
  auto empty = predictor().Predict(model_, {}, InferOptions{});
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  ModelInput none;
  none.what = "inputs[0]";
  auto no_data = predictor().Predict(model_, {none}, InferOptions{});
  EXPECT_EQ(no_data.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(no_data.status().message(), "inputs[0] has neither encoded_image nor tensor");
}

TEST_F(PredictorTest, AnExpiredDeadlineStopsImagesAndTensorsBeforeCompute) {
  InferOptions late;
  late.deadline = absl::Now() - absl::Milliseconds(1);
  const std::string png = test_util::EncodePng(8, 8, 1, 1);
  auto image = predictor().Predict(model_, {Image("inputs[0]", png)}, late);
  EXPECT_EQ(image.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(absl::StartsWith(image.status().message(), "inputs[0]: ")) << image.status();
  const std::vector<float> v(4, 0.5f);
  auto tensor = predictor().Predict(model_, {Tensor("inputs[0]", {1, 2, 2}, v)}, late);
  EXPECT_EQ(tensor.status().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST_F(PredictorTest, ACancelledCallerStopsImagesAndTensorsBeforeCompute) {
  InferOptions gone;
  gone.cancelled = [] { return true; };
  const std::string png = test_util::EncodePng(8, 8, 1, 1);
  auto image = predictor().Predict(model_, {Image("inputs[0]", png)}, gone);
  EXPECT_EQ(image.status().code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(absl::StartsWith(image.status().message(), "inputs[0]: ")) << image.status();
  const std::vector<float> v(4, 0.5f);
  auto tensor = predictor().Predict(model_, {Tensor("inputs[0]", {1, 2, 2}, v)}, gone);
  EXPECT_EQ(tensor.status().code(), absl::StatusCode::kCancelled);
}

TEST_F(PredictorTest, ImagesAreDecodedUnderTheRequestsLimits) {
  options_.max_image_pixels = 63;  // an 8x8 image has 64
  const std::string png = test_util::EncodePng(8, 8, 1, 1);
  auto big = predictor().Predict(model_, {Image("inputs[1]", png)}, InferOptions{});
  EXPECT_EQ(big.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(absl::StartsWith(big.status().message(), "inputs[1]: ")) << big.status();

  options_.max_image_pixels = 25'000'000;
  options_.decode_budget.max_bytes = 100;  // one 8x8 grey image is 64 bytes
  auto spent = predictor().Predict(model_, {Image("inputs[0]", png), Image("inputs[1]", png)},
                                   InferOptions{});
  EXPECT_EQ(spent.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(absl::StartsWith(spent.status().message(), "inputs[1]: ")) << spent.status();
}

}  // namespace
}  // namespace kaizen::serving
