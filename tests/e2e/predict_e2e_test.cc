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
#include "tests/test_util/fashion_mnist.h"
#include "tests/test_util/http_get.h"
#include "tests/test_util/image_fixtures.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen {
namespace {

using v1::PredictRequest;
using v1::PredictResponse;

constexpr char kModel[] = "shoes";
const std::vector<std::string> kClasses = {"sandal", "shirt", "sneaker", "bag", "ankle-boot"};

// The value of one sample line of the Prometheus text format, or -1.
double MetricValue(const std::string& body, const std::string& sample) {
  const size_t at = body.find(sample + " ");
  if (at == std::string::npos) return -1;
  return std::stod(body.substr(at + sample.size() + 1));
}

class PredictE2E : public ::testing::Test {
 protected:
  // One data directory with a fine-tuned model, trained once for the suite;
  // every test serves a copy of it.
  static void SetUpTestSuite() {
    seed_dir_ = new test_util::TempDir();
    test_util::TempDir files;
    api::KaizenServer::Options o = BaseOptions(seed_dir_->path());
    auto server = api::KaizenServer::Start(o);
    ASSERT_TRUE(server.ok()) << server.status();
    auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", (*server)->grpc_port()),
                                       grpc::InsecureChannelCredentials());
    client::KaizenClient client(channel);
    const std::string images = files.File("images"), labels = files.File("labels");
    test_util::WriteFashionSubset("train", {5, 6, 7, 8, 9}, 20, 0, images, labels);
    v1::UploadDatasetHeader h;
    h.set_name("few");
    h.set_format(v1::DATASET_FORMAT_IDX);
    for (const auto& c : kClasses) h.add_class_names(c);
    ASSERT_TRUE(client.UploadDataset(h, {images, labels}).ok());
    v1::StartFineTuneRequest r = Request(kModel, 2);
    auto job = client.StartFineTune(r);
    ASSERT_TRUE(job.ok()) << job.status();
    for (int i = 0; i < 1200; ++i) {
      auto j = client.GetJob(job->id());
      ASSERT_TRUE(j.ok());
      if (j->state() == v1::JOB_STATE_SUCCEEDED) break;
      ASSERT_NE(j->state(), v1::JOB_STATE_FAILED) << j->error();
      absl::SleepFor(absl::Milliseconds(100));
    }
    (*server)->Shutdown(absl::Seconds(5));
    (*server)->Wait();
  }

  static void TearDownTestSuite() {
    delete seed_dir_;
    seed_dir_ = nullptr;
  }

  static api::KaizenServer::Options BaseOptions(const std::string& data_dir) {
    api::KaizenServer::Options o;
    o.data_dir = data_dir;
    o.grpc_address = "127.0.0.1:0";
    o.metrics_host = "127.0.0.1";
    o.metrics_port = 0;
    o.threads = 2;
    return o;
  }

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

  void SetUp() override {
    std::filesystem::copy(seed_dir_->path(), data_.path(),
                          std::filesystem::copy_options::recursive |
                              std::filesystem::copy_options::overwrite_existing);
  }

  void StartServer(api::KaizenServer::Options o, bool wait_ready = true) {
    auto server = api::KaizenServer::Start(std::move(o));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->grpc_port()),
                                   grpc::InsecureChannelCredentials());
    client_ = std::make_unique<client::KaizenClient>(channel_);
    inference_ = v1::InferenceService::NewStub(channel_);
    if (wait_ready) {
      for (int i = 0; i < 3000 && !server_->ready(); ++i) absl::SleepFor(absl::Milliseconds(10));
      ASSERT_TRUE(server_->ready());
    }
  }
  void StartServer() { StartServer(BaseOptions(data_.path())); }

  grpc::Status Predict(const PredictRequest& r, PredictResponse* out,
                       absl::Duration timeout = absl::Seconds(60)) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    return inference_->Predict(&ctx, r, out);
  }

  std::string Metrics() { return test_util::HttpGet(server_->metrics_port(), "/metrics"); }

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
  std::unique_ptr<api::KaizenServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<client::KaizenClient> client_;
  std::unique_ptr<v1::InferenceService::Stub> inference_;
  static test_util::TempDir* seed_dir_;
};

test_util::TempDir* PredictE2E::seed_dir_ = nullptr;

TEST_F(PredictE2E, PredictionsMatchTheModelRunDirectly) {
  StartServer();
  const std::string path = files_.File("shoes.pt");
  auto m = client_->DownloadModel(kModel, 0, path);
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
      EXPECT_EQ(c.label(), kClasses[c.index()]);
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
  ASSERT_TRUE(client_->UploadModel(h, absl::StrCat(KAIZEN_FIXTURE_DIR, "/resnet18.pt")).ok());
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
  api::KaizenServer::Options o = BaseOptions(data_.path());
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

  auto oip = inference::GRPCInferenceService::NewStub(channel_);
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
  auto m = client_->GetModel(kModel);
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
  constexpr int kEpochs = 52;
  v1::StartFineTuneRequest req = Request("live", kEpochs);
  req.set_keep_checkpoints(2);
  auto job = client_->StartFineTune(req);
  ASSERT_TRUE(job.ok()) << job.status();
  PredictRequest r;
  r.set_model("live");
  AddTensor(&r, RandomInput(5));
  PredictResponse resp;
  // Wait for the first version.
  for (int i = 0; i < 3000 && !Predict(r, &resp).ok(); ++i) absl::SleepFor(absl::Milliseconds(20));
  ASSERT_TRUE(Predict(r, &resp).ok());

  std::atomic<bool> done{false};
  std::atomic<int64_t> ok{0}, failed{0}, backwards{0};
  std::mutex mu;
  std::set<int64_t> seen;
  std::string first_error;
  std::vector<std::thread> clients;
  for (int c = 0; c < 32; ++c) {
    clients.emplace_back([&] {
      auto stub = v1::InferenceService::NewStub(channel_);
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
  v1::Job final_job;
  for (int i = 0; i < 6000; ++i) {
    auto j = client_->GetJob(job->id());
    ASSERT_TRUE(j.ok());
    final_job = *j;
    if (final_job.state() == v1::JOB_STATE_SUCCEEDED || final_job.state() == v1::JOB_STATE_FAILED) {
      break;
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  absl::SleepFor(absl::Milliseconds(500));  // the last swap
  done = true;
  for (auto& t : clients) t.join();
  ASSERT_EQ(final_job.state(), v1::JOB_STATE_SUCCEEDED) << final_job.error();
  EXPECT_EQ(failed.load(), 0) << first_error;
  EXPECT_EQ(backwards.load(), 0);
  const std::string metrics = Metrics();
  const double swaps_ok =
      MetricValue(metrics, "kaizen_model_loads_total{model=\"live\",result=\"ok\"}");
  std::cout << "hot swap: " << ok << " requests ok, " << failed << " failed, " << seen.size()
            << " versions answered (" << *seen.begin() << ".." << *seen.rbegin() << "), "
            << swaps_ok << " versions loaded, job wrote " << kEpochs << "\n";
  EXPECT_GE(static_cast<int>(seen.size()), kEpochs / 3);
  EXPECT_EQ(*seen.rbegin(), kEpochs);  // the last version answers in the end
}

TEST_F(PredictE2E, AVersionThatFailsToLoadNeverReplacesAGoodOne) {
  StartServer();
  auto m = client_->GetModel(kModel);
  ASSERT_TRUE(m.ok());
  const int64_t good = m->latest_version();
  // A checkpoint whose forward() does not return [N, classes].
  torch::jit::Module broken("Broken");
  broken.define("def forward(self, x):\n  return (x, x)\n");
  v1::Model meta = *m;
  meta.clear_versions();
  auto added = server_->model_store()->AddVersion(kModel, broken, meta, "");
  ASSERT_TRUE(added.ok()) << added.status();
  const std::string failed_sample = "kaizen_model_loads_total{model=\"shoes\",result=\"failed\"}";
  for (int i = 0; i < 500 && MetricValue(Metrics(), failed_sample) < 1; ++i) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_EQ(MetricValue(Metrics(), failed_sample), 1);
  PredictRequest r;
  r.set_model(kModel);
  AddTensor(&r, RandomInput(6));
  PredictResponse resp;
  ASSERT_TRUE(Predict(r, &resp).ok());
  EXPECT_EQ(resp.version(), good);

  // The next good version is swapped in.
  const std::string path = files_.File("good.pt");
  ASSERT_TRUE(client_->DownloadModel(kModel, good, path).ok());
  auto next = server_->model_store()->AddVersion(kModel, torch::jit::load(path), meta, "");
  ASSERT_TRUE(next.ok());
  for (int i = 0; i < 500; ++i) {
    ASSERT_TRUE(Predict(r, &resp).ok());
    if (resp.version() == next->version()) break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_EQ(resp.version(), next->version());
}

// Keeps the executor busy with a large request on torchvision's resnet18.
class BusyModel {
 public:
  BusyModel(v1::InferenceService::Stub* stub, int inputs) {
    request_.set_model("resnet18");
    request_.set_disable_batching(true);
    for (int i = 0; i < inputs; ++i)
      request_.add_inputs()->set_encoded_image(test_util::EncodeJpeg(224, 224, 3, i));
    thread_ = std::thread([this, stub] {
      grpc::ClientContext ctx;
      PredictResponse out;
      status_ = stub->Predict(&ctx, request_, &out);
    });
  }
  ~BusyModel() { thread_.join(); }
  grpc::Status status() {
    thread_.join();
    thread_ = std::thread([] {});
    return status_;
  }

 private:
  PredictRequest request_;
  grpc::Status status_;
  std::thread thread_;
};

TEST_F(PredictE2E, QueueFullDeadlineAndCancellationAreNotComputed) {
  api::KaizenServer::Options o = BaseOptions(data_.path());
  o.serving.max_queue_size = 2;
  StartServer(o);
  v1::UploadModelHeader h;
  h.set_name("resnet18");
  ASSERT_TRUE(client_->UploadModel(h, absl::StrCat(KAIZEN_FIXTURE_DIR, "/resnet18.pt")).ok());
  PredictRequest one;
  one.set_model("resnet18");
  one.add_inputs()->set_encoded_image(test_util::EncodeJpeg(64, 64, 3, 1));
  PredictResponse resp;
  ASSERT_TRUE(Predict(one, &resp).ok());  // loaded and warm

  {
    // Polls a metric until it reaches `value`, for up to 10 s: the server
    // acts on requests in their own time (the executor takes a batch; it
    // notices deadlines and cancellations of queued requests within 50 ms).
    auto await_metric = [this](const std::string& name, double value) {
      for (int i = 0; i < 1000 && MetricValue(Metrics(), name) != value; ++i) {
        absl::SleepFor(absl::Milliseconds(10));
      }
      return MetricValue(Metrics(), name);
    };
    BusyModel busy(inference_.get(), 192);  // seconds of work, even optimised
    // Wait until the executor has taken it (a batch is counted before its
    // forward pass): the warm-up request above was the first.
    ASSERT_EQ(await_metric("kaizen_inference_batch_size_count{model=\"resnet18\"}", 2), 2);
    const std::string queued = "kaizen_inference_queue_requests{model=\"resnet18\"}";
    // A deadline that passes while queued: dropped before compute.
    grpc::Status late = Predict(one, &resp, absl::Milliseconds(200));
    EXPECT_EQ(late.error_code(), grpc::DEADLINE_EXCEEDED);
    EXPECT_EQ(
        await_metric("kaizen_inference_dropped_total{model=\"resnet18\",reason=\"deadline\"}", 1),
        1);
    // A caller that goes away while queued: not computed.
    grpc::ClientContext ctx;
    std::thread canceller([&] {
      absl::SleepFor(absl::Milliseconds(200));
      ctx.TryCancel();
    });
    EXPECT_EQ(inference_->Predict(&ctx, one, &resp).error_code(), grpc::CANCELLED);
    canceller.join();
    EXPECT_EQ(
        await_metric("kaizen_inference_dropped_total{model=\"resnet18\",reason=\"cancelled\"}", 1),
        1);
    ASSERT_EQ(await_metric(queued, 0), 0) << "the dropped requests left the queue";
    // Two requests fill the queue; the third fails at once.
    std::vector<std::thread> fill;
    std::atomic<int> fill_ok{0};
    for (int i = 0; i < 2; ++i) {
      fill.emplace_back([&] {
        auto stub = v1::InferenceService::NewStub(channel_);
        grpc::ClientContext c;
        PredictResponse out;
        PredictRequest r = one;
        r.set_disable_batching(true);
        if (stub->Predict(&c, r, &out).ok()) ++fill_ok;
      });
    }
    ASSERT_EQ(await_metric(queued, 2), 2) << "the two requests should be waiting";
    const absl::Time start = absl::Now();
    grpc::Status full = Predict(one, &resp);
    EXPECT_EQ(full.error_code(), grpc::RESOURCE_EXHAUSTED) << full.error_message();
    EXPECT_NE(full.error_message().find("queue of model \"resnet18\" is full"), std::string::npos);
    EXPECT_LT(absl::Now() - start, absl::Milliseconds(500));
    EXPECT_TRUE(busy.status().ok());
    for (auto& t : fill) t.join();
    EXPECT_EQ(fill_ok.load(), 2);
  }
  const std::string metrics = Metrics();
  EXPECT_EQ(MetricValue(metrics,
                        "kaizen_inference_dropped_total{model=\"resnet18\",reason=\"deadline\"}"),
            1)
      << metrics;
  EXPECT_EQ(MetricValue(metrics,
                        "kaizen_inference_dropped_total{model=\"resnet18\",reason=\"cancelled\"}"),
            1);
  EXPECT_EQ(MetricValue(metrics,
                        "kaizen_inference_dropped_total{model=\"resnet18\",reason=\"queue_full\"}"),
            1);
  ASSERT_TRUE(Predict(one, &resp).ok());
}

TEST_F(PredictE2E, HealthIsNotServingUntilModelsLoadAndWhileDraining) {
  absl::Notification release;
  api::KaizenServer::Options o = BaseOptions(data_.path());
  o.serving.before_preload = [&release] { release.WaitForNotification(); };
  o.drain_delay = absl::Seconds(1.5);
  StartServer(o, /*wait_ready=*/false);
  auto health = grpc::health::v1::Health::NewStub(channel_);
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
  for (int i = 0; i < 3000 && !server_->ready(); ++i) absl::SleepFor(absl::Milliseconds(10));
  ASSERT_TRUE(server_->ready());
  EXPECT_EQ(check(""), H::SERVING);
  EXPECT_EQ(check("kaizen.v1.InferenceService"), H::SERVING);

  std::thread stopper([&] { server_->Shutdown(absl::Seconds(5)); });
  for (int i = 0; i < 100 && check("") != H::NOT_SERVING; ++i)
    absl::SleepFor(absl::Milliseconds(10));
  EXPECT_EQ(check(""), H::NOT_SERVING);
  EXPECT_EQ(check("kaizen.v1.InferenceService"), H::NOT_SERVING);
  // Still answering while draining.
  PredictRequest r;
  r.set_model(kModel);
  AddTensor(&r, RandomInput(7));
  PredictResponse resp;
  EXPECT_TRUE(Predict(r, &resp).ok());
  stopper.join();
}

}  // namespace
}  // namespace kaizen
