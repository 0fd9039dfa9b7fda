// End-to-end tests of serving: Predict on a loopback server against models
// written by real fine-tuning jobs, hot swaps under concurrent load, broken
// versions, queue limits, deadlines, cancellation and health transitions.
#include <gtest/gtest.h>
#include <torch/script.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "client/lib/kaizen_client.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "inference/grpc_service.grpc.pb.h"
#include "kaizen/v1/finetune_service.grpc.pb.h"
#include "kaizen/v1/inference_service.grpc.pb.h"
#include "server/api/server.h"
#include "server/datasets/image_decoder.h"
#include "server/models/model_metadata.h"
#include "server/store/model_store.h"
#include "tests/test_util/fake_clock.h"
#include "tests/test_util/image_fixtures.h"
#include "tests/test_util/server/loopback_server.h"
#include "tests/test_util/server/serving_fixture.h"
#include "tests/test_util/temp_dir.h"
#include "tests/test_util/wait.h"

namespace kaizen {
namespace {

using v1::PredictRequest;
using v1::PredictResponse;

constexpr const char* kModel = test_util::kShoesModel;

class PredictE2E : public ::testing::Test {
 protected:
  // Every test serves its own copy of the serving fixture (a data directory
  // in which "shoes" was fine-tuned once for the whole CTest run).
  void SetUp() override {
    const absl::Status copied = test_util::CopyServingFixture(data_.path());
    ASSERT_TRUE(copied.ok()) << copied;
  }

  api::KaizenServer::Options Options() const { return test_util::LoopbackOptions(data_.path()); }

  static v1::StartFineTuneRequest Request(const std::string& output, int epochs) {
    v1::StartFineTuneRequest r;
    r.set_base_model("cnn-small");
    r.set_dataset("few");
    r.set_output_model(output);
    r.set_strategy(v1::STRATEGY_FULL);
    r.mutable_hyperparameters()->set_epochs(epochs);
    r.mutable_hyperparameters()->set_seed(3);
    r.mutable_hyperparameters()->mutable_validation()->set_split(0.2);
    return r;
  }

  void StartServer(api::KaizenServer::Options o, bool wait_ready = true) {
    auto s = test_util::StartLoopbackServer(std::move(o), wait_ready);
    ASSERT_TRUE(s.ok()) << s.status();
    s_ = *std::move(s);
    inference_ = v1::InferenceService::NewStub(s_.channel);
  }
  void StartServer() { StartServer(Options()); }

  grpc::Status Predict(const PredictRequest& r, PredictResponse* out,
                       absl::Duration timeout = absl::Seconds(60)) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    return inference_->Predict(&ctx, r, out);
  }

  std::string Metrics() { return s_.Metrics(); }
  double Metric(const std::string& sample) { return test_util::MetricValue(Metrics(), sample); }
  // Waits until `sample` reads `value` (the server acts on requests on its
  // own threads); true once it does.
  bool AwaitMetric(const std::string& sample, double value) {
    return test_util::WaitUntil([&] { return Metric(sample) == value; });
  }

  static void AddTensor(PredictRequest* r, const std::vector<float>& values,
                        std::vector<int64_t> shape = {1, 28, 28}) {
    v1::FloatTensor* t = r->add_inputs()->mutable_tensor();
    for (int64_t d : shape) t->add_shape(d);
    t->mutable_values()->Add(values.begin(), values.end());
  }

  static std::vector<float> RandomInput(uint32_t seed, int64_t n = 784) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> d(0, 1);
    std::vector<float> v(n);
    for (float& x : v) x = d(rng);
    return v;
  }

  test_util::TempDir data_;
  test_util::TempDir files_;
  test_util::LoopbackServer s_;
  std::unique_ptr<v1::InferenceService::Stub> inference_;
};

TEST_F(PredictE2E, PredictionsMatchTheModelRunDirectly) {
  StartServer();
  const std::string path = files_.File("shoes.pt");
  auto m = s_.client->DownloadModel(kModel, 0, path);
  ASSERT_TRUE(m.ok()) << m.status();
  torch::jit::Module direct = torch::jit::load(path);
  direct.eval();

  PredictRequest r;
  r.set_model(kModel);
  r.set_top_k(5);
  std::vector<std::vector<float>> inputs = {RandomInput(1), RandomInput(2), RandomInput(3)};
  for (const auto& in : inputs) AddTensor(&r, in);
  // A 28x28 grey PNG: the server scales to [0, 1] and normalises.
  const std::string png = test_util::EncodePng(28, 28, 1, 9);
  r.add_inputs()->set_encoded_image(png);
  auto image = datasets::DecodeImage(png, 1 << 20);
  ASSERT_TRUE(image.ok());
  const float mean = m->normalization().mean_size() ? m->normalization().mean(0) : 0.f;
  const float stdv = m->normalization().std_size() ? m->normalization().std(0) : 1.f;
  std::vector<float> from_png(784);
  for (int i = 0; i < 784; ++i) from_png[i] = (image->pixels[i] / 255.0f - mean) / stdv;
  inputs.push_back(from_png);

  PredictResponse resp;
  ASSERT_TRUE(Predict(r, &resp).ok());
  EXPECT_EQ(resp.model(), kModel);
  EXPECT_EQ(resp.version(), m->latest_version());
  ASSERT_EQ(resp.predictions_size(), 4);
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < inputs.size(); ++i) {
    torch::Tensor x = torch::from_blob(inputs[i].data(), {1, 1, 28, 28}).clone();
    torch::Tensor p = torch::softmax(direct.forward({x}).toTensor(), 1)[0];
    const auto& pred = resp.predictions(static_cast<int>(i));
    ASSERT_EQ(pred.classes_size(), 5);
    for (int k = 0; k < 5; ++k) {
      const auto& c = pred.classes(k);
      EXPECT_NEAR(c.probability(), p[c.index()].item<float>(), 1e-5) << "input " << i;
      EXPECT_EQ(c.label(), test_util::ShoesClasses()[c.index()]);
      if (k > 0) EXPECT_LE(c.probability(), pred.classes(k - 1).probability());
    }
    EXPECT_EQ(pred.classes(0).index(), p.argmax().item<int64_t>());
  }
  // top_k 0 means 1; more than the classes means all of them.
  r.set_top_k(0);
  ASSERT_TRUE(Predict(r, &resp).ok());
  EXPECT_EQ(resp.predictions(0).classes_size(), 1);
  r.set_top_k(50);
  ASSERT_TRUE(Predict(r, &resp).ok());
  EXPECT_EQ(resp.predictions(0).classes_size(), 5);
}

TEST_F(PredictE2E, ServesAnUploadedTorchvisionClassifierOnImagesOfAnySize) {
  StartServer();
  v1::UploadModelHeader h;
  h.set_name("resnet18");
  ASSERT_TRUE(s_.client->UploadModel(h, absl::StrCat(KAIZEN_FIXTURE_DIR, "/resnet18.pt")).ok());
  PredictRequest r;
  r.set_model("resnet18");
  r.set_top_k(3);
  r.add_inputs()->set_encoded_image(test_util::EncodeJpeg(40, 30, 3, 1));
  r.add_inputs()->set_encoded_image(test_util::EncodePng(300, 250, 1, 2));
  PredictResponse resp;
  grpc::Status st = Predict(r, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(resp.version(), 1);
  ASSERT_EQ(resp.predictions_size(), 2);
  for (const auto& p : resp.predictions()) {
    ASSERT_EQ(p.classes_size(), 3);
    EXPECT_LT(p.classes(0).index(), 1000);
    EXPECT_EQ(p.classes(0).label(), absl::StrCat(p.classes(0).index()));  // no class names
  }
}

TEST_F(PredictE2E, BadInputsFailPreciselyAndTheServerKeepsServing) {
  api::KaizenServer::Options o = Options();
  o.serving.max_request_inputs = 4;
  StartServer(o);
  struct Case {
    std::string name;
    std::function<void(PredictRequest*)> build;
    grpc::StatusCode code;
    std::string message;
  };
  const std::vector<float> good = RandomInput(1);
  std::vector<Case> cases = {
      {"empty batch", [](PredictRequest*) {}, grpc::INVALID_ARGUMENT, "inputs is empty"},
      {"over the limit",
       [&](PredictRequest* r) {
         for (int i = 0; i < 5; ++i) AddTensor(r, good);
       },
       grpc::INVALID_ARGUMENT, "5 inputs in one request exceed the limit of 4"},
      {"undecodable image",
       [&](PredictRequest* r) {
         AddTensor(r, good);
         r->add_inputs()->set_encoded_image("\x89PNG\r\n\x1a\nnot really");
       },
       grpc::INVALID_ARGUMENT, "inputs[1]: "},
      {"GIF", [](PredictRequest* r) { r->add_inputs()->set_encoded_image("GIF89a......"); },
       grpc::FAILED_PRECONDITION, "inputs[0]: unsupported image format GIF"},
      {"wrong shape",
       [&](PredictRequest* r) {
         AddTensor(r, RandomInput(1, 3 * 784), {3, 28, 28});
       },
       grpc::INVALID_ARGUMENT,
       "inputs[0] has shape [3, 28, 28]; model \"shoes\" takes [1, 28, 28]"},
      {"wrong count", [&](PredictRequest* r) { AddTensor(r, RandomInput(1, 700)); },
       grpc::INVALID_ARGUMENT, "inputs[0] has 700 values; shape [1, 28, 28] needs 784"},
      {"NaN",
       [&](PredictRequest* r) {
         std::vector<float> v = good;
         v[17] = std::nanf("");
         AddTensor(r, v);
       },
       grpc::INVALID_ARGUMENT, "inputs[0] holds a non-finite value"},
      {"no data", [](PredictRequest* r) { r->add_inputs(); }, grpc::INVALID_ARGUMENT,
       "inputs[0] has neither encoded_image nor tensor"},
      {"unknown model",
       [&](PredictRequest* r) {
         r->set_model("nope");
         AddTensor(r, good);
       },
       grpc::NOT_FOUND, "nope"},
      {"unknown version",
       [&](PredictRequest* r) {
         r->set_version(99);
         AddTensor(r, good);
       },
       grpc::NOT_FOUND, "99"},
      {"built-in",
       [&](PredictRequest* r) {
         r->set_model("cnn-small");
         AddTensor(r, good);
       },
       grpc::FAILED_PRECONDITION, "built-in architecture with random weights"},
      {"negative top_k",
       [&](PredictRequest* r) {
         r->set_top_k(-1);
         AddTensor(r, good);
       },
       grpc::INVALID_ARGUMENT, "top_k is -1"},
  };
  for (const Case& c : cases) {
    PredictRequest r;
    r.set_model(kModel);
    c.build(&r);
    PredictResponse resp;
    grpc::Status st = Predict(r, &resp);
    EXPECT_EQ(st.error_code(), c.code) << c.name << ": " << st.error_message();
    EXPECT_NE(st.error_message().find(c.message), std::string::npos)
        << c.name << ": " << st.error_message();
  }
  PredictRequest r;
  r.set_model(kModel);
  AddTensor(&r, good);
  PredictResponse resp;
  EXPECT_TRUE(Predict(r, &resp).ok());
}

TEST_F(PredictE2E, DecodeBudgetsStopHostileImagesInPredictAndModelInfer) {
  StartServer();                                                            // the default limits
  const std::string many_scans = test_util::EncodeManyScanJpeg(64, 64, 3);  // 192 scans
  const std::string flat = test_util::EncodeFlatPng(5000, 5000);            // 75 MB of pixels
  ASSERT_LT(flat.size(), 200u << 10);

  PredictRequest scans;
  scans.set_model(kModel);
  scans.add_inputs()->set_encoded_image(many_scans);
  PredictResponse resp;
  grpc::Status st = Predict(scans, &resp);
  EXPECT_EQ(st.error_code(), grpc::RESOURCE_EXHAUSTED) << st.error_message();
  EXPECT_NE(st.error_message().find("inputs[0]: progressive JPEG has more than 100 scans"),
            std::string::npos)
      << st.error_message();

  // Each image passes the pixel limit; a request of them is a decompression
  // bomb (1000:1) that the budget stops before the first one is decoded.
  PredictRequest bomb;
  bomb.set_model(kModel);
  for (int i = 0; i < 3; ++i) bomb.add_inputs()->set_encoded_image(flat);
  st = Predict(bomb, &resp);
  EXPECT_EQ(st.error_code(), grpc::RESOURCE_EXHAUSTED) << st.error_message();
  EXPECT_NE(st.error_message().find("inputs[0]: PNG of 5000x5000"), std::string::npos)
      << st.error_message();
  EXPECT_NE(st.error_message().find("decode budget"), std::string::npos) << st.error_message();

  auto oip = inference::GRPCInferenceService::NewStub(s_.channel);
  for (const std::string* image : {&many_scans, &flat}) {
    inference::ModelInferRequest infer;
    infer.set_model_name(kModel);
    inference::ModelInferRequest::InferInputTensor* input = infer.add_inputs();
    input->set_name("input");
    input->set_datatype("BYTES");
    input->add_shape(1);
    input->mutable_contents()->add_bytes_contents(*image);
    grpc::ClientContext ctx;
    inference::ModelInferResponse out;
    st = oip->ModelInfer(&ctx, infer, &out);
    EXPECT_EQ(st.error_code(), grpc::RESOURCE_EXHAUSTED) << st.error_message();
    EXPECT_NE(st.error_message().find("input \"input\"[0]: "), std::string::npos)
        << st.error_message();
  }

  // The server keeps serving ordinary requests.
  PredictRequest good;
  good.set_model(kModel);
  good.add_inputs()->set_encoded_image(test_util::EncodePng(28, 28, 1, 4));
  EXPECT_TRUE(Predict(good, &resp).ok());
}

TEST_F(PredictE2E, PinnedVersionsAndTheBestPolicy) {
  StartServer();
  auto m = s_.client->GetModel(kModel);
  ASSERT_TRUE(m.ok());
  ASSERT_GE(m->versions_size(), 2);
  PredictRequest r;
  r.set_model(kModel);
  AddTensor(&r, RandomInput(4));
  PredictResponse resp;
  r.set_version(m->versions(0));
  ASSERT_TRUE(Predict(r, &resp).ok());
  EXPECT_EQ(resp.version(), m->versions(0));
  r.set_version(0);
  r.set_policy(v1::VERSION_POLICY_BEST);
  ASSERT_TRUE(Predict(r, &resp).ok());
  EXPECT_EQ(resp.version(), m->best_version());
  r.set_policy(v1::VERSION_POLICY_LATEST);
  ASSERT_TRUE(Predict(r, &resp).ok());
  EXPECT_EQ(resp.version(), m->latest_version());
}

// A job writes version after version while 32 clients call Predict: every
// request succeeds and each client sees the answering version only move
// forward.
TEST_F(PredictE2E, HotSwapsUnderConcurrentLoadLoseNoRequest) {
  StartServer();
  constexpr int kEpochs = 24;
  v1::StartFineTuneRequest req = Request("live", kEpochs);
  req.set_keep_checkpoints(2);
  auto job = s_.client->StartFineTune(req);
  ASSERT_TRUE(job.ok()) << job.status();
  PredictRequest r;
  r.set_model("live");
  AddTensor(&r, RandomInput(5));
  PredictResponse resp;
  // Wait for the first version.
  ASSERT_TRUE(test_util::WaitUntil([&] { return Predict(r, &resp).ok(); }, absl::Minutes(5)));

  std::atomic<bool> done{false};
  std::atomic<int64_t> ok{0}, failed{0}, backwards{0};
  std::mutex mu;
  std::set<int64_t> seen;
  std::string first_error;
  std::vector<std::thread> clients;
  for (int c = 0; c < 32; ++c) {
    clients.emplace_back([&] {
      auto stub = v1::InferenceService::NewStub(s_.channel);
      int64_t last = 0;
      std::set<int64_t> mine;
      while (!done) {
        grpc::ClientContext ctx;
        ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
        PredictResponse out;
        grpc::Status st = stub->Predict(&ctx, r, &out);
        if (!st.ok()) {
          ++failed;
          std::lock_guard<std::mutex> lock(mu);
          if (first_error.empty()) first_error = st.error_message();
          continue;
        }
        ++ok;
        if (out.version() < last) ++backwards;
        last = out.version();
        mine.insert(out.version());
      }
      std::lock_guard<std::mutex> lock(mu);
      seen.insert(mine.begin(), mine.end());
    });
  }
  const absl::StatusOr<v1::Job> final_job =
      test_util::WaitForJob(*s_.client, job->id(), {v1::JOB_STATE_SUCCEEDED}, absl::Minutes(8));
  // The clients run on until the last version has been swapped in.
  const bool last_swapped = test_util::WaitUntil(
      [&] { return Predict(r, &resp).ok() && resp.version() == kEpochs; }, absl::Minutes(1));
  done = true;
  for (auto& t : clients) t.join();
  ASSERT_TRUE(final_job.ok()) << final_job.status();
  ASSERT_TRUE(last_swapped) << "version " << kEpochs << " never answered";
  EXPECT_EQ(failed.load(), 0) << first_error;
  EXPECT_EQ(backwards.load(), 0);
  const std::string metrics = Metrics();
  const double swaps_ok =
      test_util::MetricValue(metrics, "kaizen_model_loads_total{model=\"live\",result=\"ok\"}");
  std::cout << "hot swap: " << ok << " requests ok, " << failed << " failed, " << seen.size()
            << " versions answered (" << *seen.begin() << ".." << *seen.rbegin() << "), "
            << swaps_ok << " versions loaded, job wrote " << kEpochs << "\n";
  // How many versions the clients saw depends on the machine's speed; that
  // they saw the model change under them does not.
  EXPECT_GE(seen.size(), 2u);
}

TEST_F(PredictE2E, AVersionThatFailsToLoadNeverReplacesAGoodOne) {
  StartServer();
  auto m = s_.client->GetModel(kModel);
  ASSERT_TRUE(m.ok());
  const int64_t good = m->latest_version();
  // In use, so that the versions written are loaded as they come (an idle
  // model would wait for its next request).
  PredictRequest r;
  r.set_model(kModel);
  AddTensor(&r, RandomInput(6));
  PredictResponse resp;
  ASSERT_TRUE(Predict(r, &resp).ok());
  // A checkpoint whose forward() does not return [N, classes].
  torch::jit::Module broken("Broken");
  broken.define("def forward(self, x):\n  return (x, x)\n");
  v1::Model meta = *m;
  meta.clear_versions();
  auto added = s_.server->model_store()->AddVersion(kModel, broken, meta, "");
  ASSERT_TRUE(added.ok()) << added.status();
  const std::string failed_sample = "kaizen_model_loads_total{model=\"shoes\",result=\"failed\"}";
  EXPECT_TRUE(AwaitMetric(failed_sample, 1));
  ASSERT_TRUE(Predict(r, &resp).ok());
  EXPECT_EQ(resp.version(), good);

  // The next good version is swapped in.
  const std::string path = files_.File("good.pt");
  ASSERT_TRUE(s_.client->DownloadModel(kModel, good, path).ok());
  auto next = s_.server->model_store()->AddVersion(kModel, torch::jit::load(path), meta, "");
  ASSERT_TRUE(next.ok());
  EXPECT_TRUE(test_util::WaitUntil(
      [&] { return Predict(r, &resp).ok() && resp.version() == next->version(); }));
  EXPECT_EQ(resp.version(), next->version());
}

// Once armed, holds the executor of kModel inside its next forward pass
// until released, so that requests queue behind it for as long as a test
// needs, whatever the machine's speed.
class ExecutorGate {
 public:
  void Arm() { armed_ = true; }
  void BeforeForward(const std::string& model) {
    if (model != kModel || !armed_.exchange(false)) return;
    entered_.Notify();
    release_.WaitForNotification();
  }
  void AwaitHeld() { entered_.WaitForNotification(); }
  void Release() { release_.Notify(); }

 private:
  std::atomic<bool> armed_{false};
  absl::Notification entered_, release_;
};

TEST_F(PredictE2E, QueueFullDeadlineAndCancellationAreNotComputed) {
  ExecutorGate gate;
  api::KaizenServer::Options o = Options();
  o.serving.max_queue_size = 2;
  // One executor, held by the gate: every later request waits in the queue.
  o.serving.instances = 1;
  o.serving.before_forward = [&gate](const std::string& model) { gate.BeforeForward(model); };
  StartServer(o);
  PredictRequest one;
  one.set_model(kModel);
  AddTensor(&one, RandomInput(1));
  PredictResponse resp;
  ASSERT_TRUE(Predict(one, &resp).ok());  // loaded and warm

  const std::string queued =
      absl::StrCat("kaizen_inference_queue_requests{model=\"", kModel, "\"}");
  auto dropped = [](const std::string& reason) {
    return absl::StrCat("kaizen_inference_dropped_total{model=\"", kModel, "\",reason=\"", reason,
                        "\"}");
  };
  gate.Arm();
  grpc::Status busy_status;
  std::thread busy([&] {
    PredictResponse out;
    busy_status = Predict(one, &out);
  });
  gate.AwaitHeld();  // the executor has taken the request and waits
  {
    // A deadline that passes while queued: dropped before compute.
    grpc::Status late = Predict(one, &resp, absl::Milliseconds(200));
    EXPECT_EQ(late.error_code(), grpc::DEADLINE_EXCEEDED) << late.error_message();
    EXPECT_TRUE(AwaitMetric(dropped("deadline"), 1));
    ASSERT_TRUE(AwaitMetric(queued, 0)) << "the dropped request left the queue";

    // A caller that goes away while queued: not computed.
    grpc::ClientContext ctx;
    std::thread canceller([&] {
      if (AwaitMetric(queued, 1)) ctx.TryCancel();
    });
    grpc::Status cancelled = inference_->Predict(&ctx, one, &resp);
    canceller.join();
    EXPECT_EQ(cancelled.error_code(), grpc::CANCELLED) << cancelled.error_message();
    EXPECT_TRUE(AwaitMetric(dropped("cancelled"), 1));
    ASSERT_TRUE(AwaitMetric(queued, 0)) << "the cancelled request left the queue";

    // Two requests fill the queue; the third is refused without waiting: had
    // it been queued, it could only end when the executor is released.
    std::vector<std::thread> fill;
    std::atomic<int> fill_ok{0};
    for (int i = 0; i < 2; ++i) {
      fill.emplace_back([&] {
        PredictResponse out;
        if (Predict(one, &out).ok()) ++fill_ok;
      });
    }
    ASSERT_TRUE(AwaitMetric(queued, 2)) << "the two requests should be waiting";
    grpc::Status full = Predict(one, &resp);
    EXPECT_EQ(full.error_code(), grpc::RESOURCE_EXHAUSTED) << full.error_message();
    EXPECT_NE(full.error_message().find(absl::StrCat("queue of model \"", kModel, "\" is full")),
              std::string::npos)
        << full.error_message();
    gate.Release();
    busy.join();
    for (auto& t : fill) t.join();
    EXPECT_TRUE(busy_status.ok()) << busy_status.error_message();
    EXPECT_EQ(fill_ok.load(), 2);
  }
  const std::string metrics = Metrics();
  EXPECT_EQ(test_util::MetricValue(metrics, dropped("deadline")), 1) << metrics;
  EXPECT_EQ(test_util::MetricValue(metrics, dropped("cancelled")), 1);
  EXPECT_EQ(test_util::MetricValue(metrics, dropped("queue_full")), 1);
  ASSERT_TRUE(Predict(one, &resp).ok());
}

TEST_F(PredictE2E, HealthIsNotServingUntilModelsLoadAndWhileDraining) {
  absl::Notification release;
  api::KaizenServer::Options o = Options();
  o.serving.before_preload = [&release] { release.WaitForNotification(); };
  test_util::FakeClock drain_clock;
  o.drain_delay = absl::Seconds(30);
  o.drain_clock = &drain_clock;
  StartServer(o, /*wait_ready=*/false);
  auto health = grpc::health::v1::Health::NewStub(s_.channel);
  auto check = [&](const std::string& service) {
    grpc::ClientContext ctx;
    grpc::health::v1::HealthCheckRequest req;
    req.set_service(service);
    grpc::health::v1::HealthCheckResponse resp;
    grpc::Status st = health->Check(&ctx, req, &resp);
    EXPECT_TRUE(st.ok()) << service << ": " << st.error_message();
    return resp.status();
  };
  using H = grpc::health::v1::HealthCheckResponse;
  EXPECT_EQ(check(""), H::NOT_SERVING);
  EXPECT_EQ(check("kaizen.v1.InferenceService"), H::NOT_SERVING);
  release.Notify();
  ASSERT_TRUE(test_util::WaitUntil([&] { return s_.server->ready(); }));
  EXPECT_EQ(check(""), H::SERVING);
  EXPECT_EQ(check("kaizen.v1.InferenceService"), H::SERVING);

  std::thread stopper([&] { s_.server->Shutdown(absl::Seconds(5)); });
  // The server is in its drain delay until the test moves its clock on.
  drain_clock.BlockUntilWaiters(1);
  EXPECT_EQ(check(""), H::NOT_SERVING);
  EXPECT_EQ(check("kaizen.v1.InferenceService"), H::NOT_SERVING);
  // Still answering while draining.
  PredictRequest r;
  r.set_model(kModel);
  AddTensor(&r, RandomInput(7));
  PredictResponse resp;
  EXPECT_TRUE(Predict(r, &resp).ok());
  drain_clock.Advance(absl::Seconds(30));
  stopper.join();
}

}  // namespace
}  // namespace kaizen
