// End-to-end tests of the Open Inference Protocol (inference.GRPCInferenceService)
// on a real in-process server on a loopback port: health, metadata, and
// ModelInfer in every input form Triton clients send, checked against
// kaizen.v1.InferenceService/Predict on the same inputs, plus the statuses
// of malformed requests. One server and one small fine-tuned model serve the
// whole suite, to keep it fast.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/lib/kaizen_client.h"
#include "inference/grpc_service.grpc.pb.h"
#include "server/api/server.h"
#include "tests/test_util/image_fixtures.h"
#include "tests/test_util/server/loopback_server.h"
#include "tests/test_util/server/serving_fixture.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen {
namespace {

using inference::ModelInferRequest;
using inference::ModelInferResponse;

constexpr const char* kModel = test_util::kShapesModel;

// What the suite shares: the server, its clients and the model they query.
struct Suite {
  test_util::TempDir data;
  test_util::LoopbackServer s;
  std::unique_ptr<inference::GRPCInferenceService::Stub> oip;
  v1::Model model;
  std::string setup_error;
};

Suite* suite = nullptr;

// Starts a server on a copy of the serving fixture, whose kModel is
// cnn-small trained from scratch on two classes of small PNG images.
std::string StartSuite(Suite& out) {
  absl::Status copied = test_util::CopyServingFixture(out.data.path());
  if (!copied.ok()) return copied.ToString();
  absl::StatusOr<test_util::LoopbackServer> s =
      test_util::StartLoopbackServer(test_util::LoopbackOptions(out.data.path()));
  if (!s.ok()) return s.status().ToString();
  out.s = *std::move(s);
  out.oip = inference::GRPCInferenceService::NewStub(out.s.channel);
  auto model = out.s.client->GetModel(kModel);
  if (!model.ok()) return model.status().ToString();
  out.model = *std::move(model);
  return "";
}

class OipE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    suite = new Suite();
    suite->setup_error = StartSuite(*suite);
  }
  static void TearDownTestSuite() {
    delete suite;
    suite = nullptr;
  }

  void SetUp() override { ASSERT_EQ(suite->setup_error, "") << "suite set-up failed"; }

  inference::GRPCInferenceService::Stub& oip() { return *suite->oip; }
  const v1::Model& model() { return suite->model; }
  int64_t classes() { return model().head().out_features(); }
  // [C, H, W]
  std::vector<int64_t> chw() {
    return std::vector<int64_t>(model().input_shape().begin(), model().input_shape().end());
  }
  int64_t values_per_input() {
    int64_t n = 1;
    for (int64_t d : chw()) n *= d;
    return n;
  }

  absl::StatusOr<ModelInferResponse> Infer(const ModelInferRequest& request) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    ModelInferResponse response;
    grpc::Status st = oip().ModelInfer(&ctx, request, &response);
    if (!st.ok()) return client::FromGrpcStatus(st);
    return response;
  }

  absl::StatusOr<bool> ModelReady(const std::string& name, const std::string& version = "") {
    grpc::ClientContext ctx;
    inference::ModelReadyRequest r;
    r.set_name(name);
    r.set_version(version);
    inference::ModelReadyResponse response;
    grpc::Status st = oip().ModelReady(&ctx, r, &response);
    if (!st.ok()) return client::FromGrpcStatus(st);
    return response.ready();
  }

  absl::StatusOr<inference::ModelMetadataResponse> Metadata(const std::string& name,
                                                            const std::string& version = "") {
    grpc::ClientContext ctx;
    inference::ModelMetadataRequest r;
    r.set_name(name);
    r.set_version(version);
    inference::ModelMetadataResponse response;
    grpc::Status st = oip().ModelMetadata(&ctx, r, &response);
    if (!st.ok()) return client::FromGrpcStatus(st);
    return response;
  }

  // `n` preprocessed inputs of the model's shape, deterministic.
  std::vector<float> RandomInputs(int n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
    std::vector<float> v(static_cast<size_t>(n * values_per_input()));
    for (float& x : v) x = dist(rng);
    return v;
  }

  // An FP32 request for `n` inputs, without values.
  ModelInferRequest Fp32Request(int n) {
    ModelInferRequest r;
    r.set_model_name(kModel);
    r.set_id("req-7");
    auto* input = r.add_inputs();
    input->set_name("input");
    input->set_datatype("FP32");
    input->add_shape(n);
    for (int64_t d : chw()) input->add_shape(d);
    return r;
  }

  // The probabilities of the single FP32 output, checked for form.
  std::vector<float> Probabilities(const ModelInferResponse& response, int n) {
    EXPECT_EQ(response.outputs_size(), 1);
    EXPECT_EQ(response.raw_output_contents_size(), 1);
    if (response.outputs_size() != 1 || response.raw_output_contents_size() != 1) return {};
    const auto& out = response.outputs(0);
    EXPECT_EQ(out.name(), "probabilities");
    EXPECT_EQ(out.datatype(), "FP32");
    EXPECT_EQ(std::vector<int64_t>(out.shape().begin(), out.shape().end()),
              (std::vector<int64_t>{n, classes()}));
    const std::string& raw = response.raw_output_contents(0);
    EXPECT_EQ(raw.size(), static_cast<size_t>(n * classes()) * sizeof(float));
    std::vector<float> p(raw.size() / sizeof(float));
    std::memcpy(p.data(), raw.data(), p.size() * sizeof(float));
    return p;
  }

  // Predict's probabilities for the same inputs, as a dense [N, classes].
  std::vector<float> PredictProbabilities(const v1::PredictRequest& base) {
    v1::PredictRequest r = base;
    r.set_model(kModel);
    r.set_top_k(static_cast<int32_t>(classes()));
    auto response = suite->s.client->Predict(r, absl::Seconds(30));
    EXPECT_TRUE(response.ok()) << response.status();
    if (!response.ok()) return {};
    std::vector<float> p(static_cast<size_t>(r.inputs_size() * classes()), -1.0f);
    for (int i = 0; i < response->predictions_size(); ++i) {
      for (const auto& c : response->predictions(i).classes()) {
        p[static_cast<size_t>(i * classes() + c.index())] = c.probability();
      }
    }
    return p;
  }

  static void ExpectNear(const std::vector<float>& a, const std::vector<float>& b) {
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-6) << "at " << i;
  }
};

std::string LengthPrefixed(const std::vector<std::string>& elements) {
  std::string raw;
  for (const std::string& e : elements) {
    const uint32_t n = static_cast<uint32_t>(e.size());
    for (int i = 0; i < 4; ++i) raw.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
    raw += e;
  }
  return raw;
}

TEST_F(OipE2E, ServerHealthAndMetadata) {
  {
    grpc::ClientContext ctx;
    inference::ServerLiveResponse r;
    ASSERT_TRUE(oip().ServerLive(&ctx, {}, &r).ok());
    EXPECT_TRUE(r.live());
  }
  {
    grpc::ClientContext ctx;
    inference::ServerReadyResponse r;
    ASSERT_TRUE(oip().ServerReady(&ctx, {}, &r).ok());
    EXPECT_TRUE(r.ready());
  }
  grpc::ClientContext ctx;
  inference::ServerMetadataResponse r;
  ASSERT_TRUE(oip().ServerMetadata(&ctx, {}, &r).ok());
  EXPECT_EQ(r.name(), "kaizen");
  EXPECT_FALSE(r.version().empty());
  EXPECT_EQ(r.extensions_size(), 0);
}

TEST_F(OipE2E, ModelReadyIsTrueForALoadedModelOnly) {
  // The new version loads in the background; it must be ready soon after.
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  absl::StatusOr<bool> ready = false;
  while (absl::Now() < deadline) {
    ready = ModelReady(kModel);
    if (!ready.ok() || *ready) break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_TRUE(ready.ok()) << ready.status();
  EXPECT_TRUE(*ready);
  EXPECT_EQ(ModelReady(kModel, absl::StrCat(model().latest_version())).value_or(false), true);
  EXPECT_EQ(ModelReady(kModel, "999").value_or(true), false);
  EXPECT_EQ(ModelReady("no-such-model").value_or(true), false);
  absl::StatusOr<bool> bad = ModelReady(kModel, "v1");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << bad.status();
  EXPECT_NE(bad.status().message().find("\"v1\""), absl::string_view::npos) << bad.status();
}

TEST_F(OipE2E, ModelMetadataDescribesTheTensors) {
  auto md = Metadata(kModel);
  ASSERT_TRUE(md.ok()) << md.status();
  EXPECT_EQ(md->name(), kModel);
  EXPECT_EQ(md->platform(), "pytorch_torchscript");
  ASSERT_GE(md->versions_size(), 1);
  EXPECT_EQ(md->versions(md->versions_size() - 1), absl::StrCat(model().latest_version()));
  ASSERT_EQ(md->inputs_size(), 1);
  EXPECT_EQ(md->inputs(0).name(), "input");
  EXPECT_EQ(md->inputs(0).datatype(), "FP32");
  std::vector<int64_t> want_in = {-1};
  for (int64_t d : chw()) want_in.push_back(d);
  EXPECT_EQ(std::vector<int64_t>(md->inputs(0).shape().begin(), md->inputs(0).shape().end()),
            want_in);
  ASSERT_EQ(md->outputs_size(), 1);
  EXPECT_EQ(md->outputs(0).name(), "probabilities");
  EXPECT_EQ(md->outputs(0).datatype(), "FP32");
  EXPECT_EQ(std::vector<int64_t>(md->outputs(0).shape().begin(), md->outputs(0).shape().end()),
            (std::vector<int64_t>{-1, classes()}));

  EXPECT_TRUE(Metadata(kModel, absl::StrCat(model().latest_version())).ok());
  EXPECT_EQ(Metadata("no-such-model").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Metadata(kModel, "999").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Metadata(kModel, "-1").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(OipE2E, Fp32ContentsAndRawGiveThePredictScores) {
  constexpr int kN = 3;
  const std::vector<float> values = RandomInputs(kN, 11);

  ModelInferRequest typed = Fp32Request(kN);
  for (float v : values) typed.mutable_inputs(0)->mutable_contents()->add_fp32_contents(v);
  auto a = Infer(typed);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->model_name(), kModel);
  EXPECT_EQ(a->model_version(), absl::StrCat(model().latest_version()));
  EXPECT_EQ(a->id(), "req-7");
  const std::vector<float> from_typed = Probabilities(*a, kN);

  ModelInferRequest raw = Fp32Request(kN);
  raw.add_raw_input_contents(
      std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float)));
  auto b = Infer(raw);
  ASSERT_TRUE(b.ok()) << b.status();
  const std::vector<float> from_raw = Probabilities(*b, kN);

  v1::PredictRequest predict;
  for (int i = 0; i < kN; ++i) {
    auto* t = predict.add_inputs()->mutable_tensor();
    for (int64_t d : chw()) t->add_shape(d);
    const float* first = values.data() + i * values_per_input();
    t->mutable_values()->Add(first, first + values_per_input());
  }
  const std::vector<float> expected = PredictProbabilities(predict);
  ExpectNear(from_typed, expected);
  ExpectNear(from_raw, expected);
  float sum = 0;
  for (int64_t c = 0; c < classes(); ++c) sum += from_raw[static_cast<size_t>(c)];
  EXPECT_NEAR(sum, 1.0f, 1e-5);

  // One input as [C, H, W], and a pinned version.
  ModelInferRequest single = Fp32Request(1);
  single.mutable_inputs(0)->mutable_shape()->erase(
      single.mutable_inputs(0)->mutable_shape()->begin());
  single.set_model_version(absl::StrCat(model().latest_version()));
  single.add_raw_input_contents(std::string(reinterpret_cast<const char*>(values.data()),
                                            values_per_input() * sizeof(float)));
  auto c = Infer(single);
  ASSERT_TRUE(c.ok()) << c.status();
  ExpectNear(Probabilities(*c, 1),
             std::vector<float>(expected.begin(), expected.begin() + classes()));
}

TEST_F(OipE2E, BytesImagesGiveThePredictScores) {
  // Other sizes and channel counts than the model's: resized and converted.
  const std::vector<std::string> images = {test_util::EncodePng(28, 28, 1, 3),
                                           test_util::EncodePng(40, 30, 3, 4),
                                           test_util::EncodePng(17, 23, 4, 5)};
  const int n = static_cast<int>(images.size());
  v1::PredictRequest predict;
  for (const std::string& png : images) predict.add_inputs()->set_encoded_image(png);
  const std::vector<float> expected = PredictProbabilities(predict);

  ModelInferRequest typed;
  typed.set_model_name(kModel);
  auto* input = typed.add_inputs();
  input->set_name("images");
  input->set_datatype("BYTES");
  input->add_shape(n);
  ModelInferRequest raw = typed;
  for (const std::string& png : images) input->mutable_contents()->add_bytes_contents(png);
  raw.add_raw_input_contents(LengthPrefixed(images));

  auto a = Infer(typed);
  ASSERT_TRUE(a.ok()) << a.status();
  ExpectNear(Probabilities(*a, n), expected);
  auto b = Infer(raw);
  ASSERT_TRUE(b.ok()) << b.status();
  ExpectNear(Probabilities(*b, n), expected);
}

TEST_F(OipE2E, MalformedRequestsGetPreciseErrors) {
  auto fp32 = [&](int n) {
    ModelInferRequest r = Fp32Request(n);
    const std::vector<float> v = RandomInputs(n, 5);
    r.add_raw_input_contents(
        std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float)));
    return r;
  };
  struct Case {
    std::string label;
    ModelInferRequest request;
    absl::StatusCode code;
    std::vector<std::string> needles;
  };
  std::vector<Case> cases;

  ModelInferRequest wrong_shape = fp32(2);
  wrong_shape.mutable_inputs(0)->set_shape(1, chw()[0] + 2);
  cases.push_back({"wrong shape",
                   wrong_shape,
                   absl::StatusCode::kInvalidArgument,
                   {"input \"input\"", absl::StrCat("shape [2, ", chw()[0] + 2), "expected [N, "}});

  ModelInferRequest short_raw = fp32(2);
  short_raw.mutable_raw_input_contents(0)->resize(100);
  cases.push_back({"raw size",
                   short_raw,
                   absl::StatusCode::kInvalidArgument,
                   {"raw_input_contents[0] holds 100 bytes",
                    absl::StrCat("needs ", 2 * values_per_input() * 4)}});

  ModelInferRequest short_typed = Fp32Request(1);
  short_typed.mutable_inputs(0)->mutable_contents()->add_fp32_contents(1.0f);
  cases.push_back({"typed size",
                   short_typed,
                   absl::StatusCode::kInvalidArgument,
                   {"fp32_contents holds 1 values", absl::StrCat("needs ", values_per_input())}});

  ModelInferRequest both = fp32(1);
  both.mutable_inputs(0)->mutable_contents()->add_fp32_contents(1.0f);
  cases.push_back({"contents and raw",
                   both,
                   absl::StatusCode::kInvalidArgument,
                   {"contents", "raw_input_contents"}});

  ModelInferRequest int8 = fp32(1);
  int8.mutable_inputs(0)->set_datatype("INT8");
  cases.push_back({"datatype",
                   int8,
                   absl::StatusCode::kInvalidArgument,
                   {"datatype \"INT8\"", "FP32", "BYTES"}});

  ModelInferRequest unknown_model = fp32(1);
  unknown_model.set_model_name("no-such-model");
  cases.push_back({"unknown model", unknown_model, absl::StatusCode::kNotFound, {"no-such-model"}});

  ModelInferRequest unknown_version = fp32(1);
  unknown_version.set_model_version("999");
  cases.push_back({"unknown version", unknown_version, absl::StatusCode::kNotFound, {}});

  ModelInferRequest bad_version = fp32(1);
  bad_version.set_model_version("latest");
  cases.push_back({"bad version",
                   bad_version,
                   absl::StatusCode::kInvalidArgument,
                   {"model_version \"latest\""}});

  ModelInferRequest bad_output = fp32(1);
  bad_output.add_outputs()->set_name("logits");
  cases.push_back({"requested output",
                   bad_output,
                   absl::StatusCode::kInvalidArgument,
                   {"\"logits\"", "probabilities"}});

  ModelInferRequest empty = fp32(1);
  empty.mutable_inputs(0)->set_shape(0, 0);
  empty.mutable_raw_input_contents(0)->clear();
  cases.push_back({"empty batch", empty, absl::StatusCode::kInvalidArgument, {"empty"}});

  ModelInferRequest too_many = Fp32Request(100000);
  cases.push_back(
      {"too many inputs", too_many, absl::StatusCode::kInvalidArgument, {"100000", "at most"}});

  ModelInferRequest two_inputs = fp32(1);
  *two_inputs.add_inputs() = two_inputs.inputs(0);
  cases.push_back({"two inputs", two_inputs, absl::StatusCode::kInvalidArgument, {"exactly one"}});

  ModelInferRequest bytes_shape;
  bytes_shape.set_model_name(kModel);
  auto* in = bytes_shape.add_inputs();
  in->set_name("images");
  in->set_datatype("BYTES");
  in->add_shape(1);
  in->add_shape(1);
  in->mutable_contents()->add_bytes_contents(test_util::EncodePng(28, 28, 1, 1));
  cases.push_back({"bytes shape",
                   bytes_shape,
                   absl::StatusCode::kInvalidArgument,
                   {"input \"images\"", "[1, 1]", "expected [N]"}});

  ModelInferRequest not_an_image = bytes_shape;
  not_an_image.mutable_inputs(0)->mutable_shape()->RemoveLast();
  not_an_image.mutable_inputs(0)->mutable_contents()->set_bytes_contents(
      0, test_util::EncodePng(28, 28, 1, 1).substr(0, 40));
  cases.push_back(
      {"undecodable", not_an_image, absl::StatusCode::kInvalidArgument, {"input \"images\"[0]"}});

  ModelInferRequest truncated_raw = not_an_image;
  truncated_raw.mutable_inputs(0)->clear_contents();
  truncated_raw.add_raw_input_contents(LengthPrefixed({"abcdef"}).substr(0, 7));
  cases.push_back({"truncated raw bytes",
                   truncated_raw,
                   absl::StatusCode::kInvalidArgument,
                   {"declares 6 bytes"}});

  for (const Case& c : cases) {
    absl::StatusOr<ModelInferResponse> r = Infer(c.request);
    EXPECT_EQ(r.status().code(), c.code) << c.label << ": " << r.status();
    for (const std::string& needle : c.needles) {
      EXPECT_NE(r.status().message().find(needle), absl::string_view::npos)
          << c.label << ": \"" << needle << "\" not in: " << r.status();
    }
  }
}

}  // namespace
}  // namespace kaizen
