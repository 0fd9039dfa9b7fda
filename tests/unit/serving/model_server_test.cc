// ModelServer over a real catalogue in a temporary directory and a fake
// loader: version resolution, hot swaps, deletions (also during a load) and
// failed loads, which only the end-to-end tests covered before.
#include "server/serving/model_server.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/store/data_dir.h"
#include "server/store/metadata_store.h"
#include "server/store/model_store.h"
#include "tests/test_util/fake_clock.h"
#include "tests/test_util/temp_dir.h"
#include "tests/unit/serving/serving_test_util.h"

namespace kaizen::serving {
namespace {

using fixtures::TinyMetadata;
using fixtures::TinyModule;

// Stands in for LoadedModel::Load: loads the stored file without freezing or
// warm-up, fails the versions it is told to, and runs a hook once a load is
// done (a test deletes the version being loaded there). Records every load,
// so that a test can wait for one.
class FakeLoader {
 public:
  ModelLoader AsLoader() {
    return [this](const std::string& path, const kaizen::v1::Model& metadata,
                  const std::vector<int64_t>&) { return Load(path, metadata); };
  }
  void Fail(int64_t version) {
    absl::MutexLock lock(&mu_);
    failing_.insert(version);
  }
  void set_after_load(std::function<void(const kaizen::v1::Model&)> hook) {
    absl::MutexLock lock(&mu_);
    after_load_ = std::move(hook);
  }
  int loads() {
    absl::MutexLock lock(&mu_);
    return static_cast<int>(loads_.size());
  }
  // Blocks until `name` version `version` has been asked for.
  void AwaitLoad(const std::string& name, int64_t version) {
    absl::MutexLock lock(&mu_);
    auto asked = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return std::find(loads_.begin(), loads_.end(), std::make_pair(name, version)) != loads_.end();
    };
    mu_.Await(absl::Condition(&asked));
  }

 private:
  absl::StatusOr<std::shared_ptr<const LoadedModel>> Load(const std::string& path,
                                                          const kaizen::v1::Model& metadata) {
    bool fail;
    std::function<void(const kaizen::v1::Model&)> hook;
    {
      absl::MutexLock lock(&mu_);
      loads_.emplace_back(metadata.name(), metadata.version());
      fail = failing_.count(metadata.version()) > 0;
      hook = after_load_;
    }
    if (fail) {
      return absl::InternalError(absl::StrCat("cannot load model \"", metadata.name(),
                                              "\" version ", metadata.version(), ": fake"));
    }
    auto loaded = LoadedModel::Load(path, metadata, torch::kCPU, {}, /*optimize=*/false);
    if (hook) hook(metadata);
    return loaded;
  }

  absl::Mutex mu_;
  std::vector<std::pair<std::string, int64_t>> loads_ ABSL_GUARDED_BY(mu_);
  std::set<int64_t> failing_ ABSL_GUARDED_BY(mu_);
  std::function<void(const kaizen::v1::Model&)> after_load_ ABSL_GUARDED_BY(mu_);
};

class ModelServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(store::PrepareDataDir(dir_.path()).ok());
    auto metadata = store::MetadataStore::Open(dir_.File("kaizen.db"));
    ASSERT_TRUE(metadata.ok()) << metadata.status();
    metadata_ = *std::move(metadata);
    store::ModelStore::Options o;
    o.data_dir = dir_.path();
    models_ = std::make_unique<store::ModelStore>(o, metadata_.get());
    // As server.cc wires it: the store tells the server about versions.
    models_->set_listener({[this](const kaizen::v1::Model& m) {
                             if (server_) server_->OnVersionAdded(m);
                           },
                           [this](const std::string& name, int64_t version) {
                             if (server_) server_->OnVersionDeleted(name, version);
                           }});
  }
  void TearDown() override { server_.reset(); }

  // Creates and starts the server under test.
  // `reload_idle_after` zero: every version loads as it is written.
  void StartServer(bool preload, absl::Duration reload_idle_after = absl::ZeroDuration(),
                   common::Clock* clock = common::Clock::Real()) {
    ModelServer::Options o;
    o.preload = preload;
    o.reload_idle_after = reload_idle_after;
    o.clock = clock;
    o.device = "cpu";
    o.loader = loader_.AsLoader();
    auto server = ModelServer::Create(std::move(o), models_.get(), nullptr);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    ASSERT_TRUE(server_->Start().ok());
  }

  int64_t AddVersion(const std::string& name) {
    auto added = models_->AddVersion(name, TinyModule(), TinyMetadata(), "");
    EXPECT_TRUE(added.ok()) << added.status();
    return added.ok() ? added->version() : 0;
  }

  // Returns once the background loader has finished with every version
  // written before: it works through them in order, so the version written
  // here is asked for only after them.
  void DrainLoader() {
    const int64_t v = AddVersion("sentinel");
    server_->Warm("sentinel");  // loaded even when idle
    loader_.AwaitLoad("sentinel", v);
  }

  int64_t ServedVersion(const std::string& name, int64_t version = 0) {
    auto m = server_->Acquire(name, version, kaizen::v1::VERSION_POLICY_UNSPECIFIED);
    EXPECT_TRUE(m.ok()) << m.status();
    return m.ok() ? (*m)->version() : -1;
  }

  test_util::TempDir dir_;
  std::unique_ptr<store::MetadataStore> metadata_;
  std::unique_ptr<store::ModelStore> models_;
  FakeLoader loader_;
  std::unique_ptr<ModelServer> server_;
};

TEST_F(ModelServerTest, CreateRejectsAnUnknownDevice) {
  ModelServer::Options o;
  o.device = "abacus:7";
  o.loader = loader_.AsLoader();
  auto server = ModelServer::Create(std::move(o), models_.get(), nullptr);
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(server.status().message(),
            "serving device \"abacus:7\" is not a device (cpu, cuda, cuda:1, ...)");
}

TEST(ResolveServingDevice, AutoPicksTheFirstGpuElseTheCpuAndNamesAreParsed) {
  // The server sizes executor instances from this and ModelServer::Create
  // serves on it: both must agree, so both call it.
  absl::StatusOr<torch::Device> automatic = ResolveServingDevice("");
  ASSERT_TRUE(automatic.ok()) << automatic.status();
  EXPECT_EQ(*automatic, torch::cuda::is_available() ? torch::Device(torch::kCUDA, 0)
                                                    : torch::Device(torch::kCPU));
  absl::StatusOr<torch::Device> cpu = ResolveServingDevice("cpu");
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_TRUE(cpu->is_cpu());
  absl::StatusOr<torch::Device> second_gpu = ResolveServingDevice("cuda:1");
  ASSERT_TRUE(second_gpu.ok()) << second_gpu.status();
  EXPECT_TRUE(second_gpu->is_cuda());
  EXPECT_EQ(second_gpu->index(), 1);
  EXPECT_EQ(ResolveServingDevice("abacus:7").status(),
            absl::InvalidArgumentError(
                "serving device \"abacus:7\" is not a device (cpu, cuda, cuda:1, ...)"));
}

TEST_F(ModelServerTest, AVersionIsLoadedOnceOnFirstUseAndThenServedFromMemory) {
  AddVersion("shoes");
  AddVersion("shoes");
  StartServer(/*preload=*/false);
  EXPECT_FALSE(server_->IsReady("shoes", 0));
  EXPECT_EQ(ServedVersion("shoes"), 2);
  EXPECT_EQ(ServedVersion("shoes"), 2);
  EXPECT_EQ(loader_.loads(), 1);
  EXPECT_TRUE(server_->IsReady("shoes", 0));
  EXPECT_FALSE(server_->IsReady("shoes", 1));
  EXPECT_EQ(ServedVersion("shoes", 1), 1);  // pinned
  EXPECT_EQ(loader_.loads(), 2);
  EXPECT_EQ(server_->LoadedVersions().at("shoes"), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(server_->Acquire("hats", 0, kaizen::v1::VERSION_POLICY_UNSPECIFIED).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(ModelServerTest, PreloadLoadsEveryStoredModelBeforeStartReturns) {
  AddVersion("shoes");
  AddVersion("bags");
  StartServer(/*preload=*/true);
  EXPECT_TRUE(server_->started());
  EXPECT_TRUE(server_->IsReady("shoes", 0));
  EXPECT_TRUE(server_->IsReady("bags", 0));
  EXPECT_EQ(loader_.loads(), 2);
}

TEST_F(ModelServerTest, ANewVersionIsSwappedInWhileRequestsHoldingTheOldOneFinishOnIt) {
  AddVersion("shoes");
  StartServer(/*preload=*/true);
  auto old = server_->Acquire("shoes", 0, kaizen::v1::VERSION_POLICY_UNSPECIFIED);
  ASSERT_TRUE(old.ok()) << old.status();
  AddVersion("shoes");
  DrainLoader();
  EXPECT_EQ(ServedVersion("shoes"), 2);
  EXPECT_EQ(loader_.loads(), 3);  // shoes v1, v2 and the sentinel: no load on request
  // The request that held version 1 still runs on it.
  EXPECT_EQ((*old)->version(), 1);
  EXPECT_TRUE((*old)->Predict(torch::rand({1, 1, 2, 2})).ok());
}

// While nobody asks for a model, the versions a job writes are not loaded:
// the next request loads the newest (and waits for it), as does Warm() once
// the writer is done; a model in use is swapped as before.
TEST_F(ModelServerTest, AnIdleModelLoadsOnItsNextRequestOrWhenWarmedNotAtEachVersion) {
  test_util::FakeClock clock;
  AddVersion("shoes");
  StartServer(/*preload=*/true, absl::Minutes(5), &clock);
  EXPECT_EQ(loader_.loads(), 1);  // preloading is not a request
  AddVersion("shoes");
  AddVersion("shoes");
  DrainLoader();
  EXPECT_EQ(loader_.loads(), 2);         // the sentinel only
  EXPECT_EQ(ServedVersion("shoes"), 3);  // loaded by the request itself
  EXPECT_EQ(loader_.loads(), 3);
  EXPECT_EQ(ServedVersion("shoes", 1), 1);  // still loaded

  // In use: swapped in by the background loader, as before.
  AddVersion("shoes");
  DrainLoader();
  int loads = loader_.loads();
  EXPECT_EQ(ServedVersion("shoes"), 4);
  EXPECT_EQ(loader_.loads(), loads);

  // Idle again; the writer's end warms it.
  clock.Advance(absl::Minutes(5));
  AddVersion("shoes");
  DrainLoader();
  loads = loader_.loads();
  server_->Warm("shoes");
  DrainLoader();
  EXPECT_EQ(loader_.loads(), loads + 2);  // shoes 5 and the sentinel
  EXPECT_EQ(ServedVersion("shoes"), 5);
  EXPECT_EQ(loader_.loads(), loads + 2);

  // A newest version that fails to load when a request asks for it: the one
  // loaded still answers, and the broken one is quarantined.
  clock.Advance(absl::Minutes(5));
  loader_.Fail(6);
  AddVersion("shoes");
  DrainLoader();
  EXPECT_EQ(ServedVersion("shoes"), 5);
  EXPECT_FALSE(models_->Get("shoes", 6)->quarantine_reason().empty());
  EXPECT_EQ(ServedVersion("shoes"), 5);

  // A name the catalogue does not have is not warmed into an entry.
  server_->Warm("never-stored");
  DrainLoader();
  EXPECT_EQ(server_->LoadedVersions().count("never-stored"), 0);
  EXPECT_EQ(
      server_->Acquire("never-stored", 0, kaizen::v1::VERSION_POLICY_UNSPECIFIED).status().code(),
      absl::StatusCode::kNotFound);
}

TEST_F(ModelServerTest, AVersionThatFailsToLoadNeverReplacesAGoodOneAndIsQuarantined) {
  AddVersion("shoes");
  StartServer(/*preload=*/true);
  loader_.Fail(2);
  AddVersion("shoes");
  DrainLoader();
  EXPECT_EQ(ServedVersion("shoes"), 1);
  auto v2 = models_->Get("shoes", 2);
  ASSERT_TRUE(v2.ok()) << v2.status();
  EXPECT_NE(v2->quarantine_reason(), "");
  // Not tried again on request.
  const int loads = loader_.loads();
  EXPECT_EQ(server_->Acquire("shoes", 2, kaizen::v1::VERSION_POLICY_UNSPECIFIED).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(loader_.loads(), loads);
}

TEST_F(ModelServerTest, AFirstRequestForAVersionThatFailsToLoadGetsTheError) {
  AddVersion("shoes");
  loader_.Fail(1);
  StartServer(/*preload=*/false);
  auto m = server_->Acquire("shoes", 0, kaizen::v1::VERSION_POLICY_UNSPECIFIED);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInternal);
  EXPECT_FALSE(server_->IsReady("shoes", 0));
  EXPECT_EQ(server_->Acquire("shoes", 0, kaizen::v1::VERSION_POLICY_UNSPECIFIED).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(ModelServerTest, ADeletedVersionLeavesServingAndTheNextRequestGetsWhatIsLeft) {
  AddVersion("shoes");
  AddVersion("shoes");
  StartServer(/*preload=*/false);
  auto held = server_->Acquire("shoes", 0, kaizen::v1::VERSION_POLICY_UNSPECIFIED);
  ASSERT_TRUE(held.ok()) << held.status();
  ASSERT_EQ((*held)->version(), 2);
  ASSERT_TRUE(models_->Delete("shoes", 2).ok());
  EXPECT_FALSE(server_->IsReady("shoes", 2));
  EXPECT_EQ(server_->LoadedVersions().count("shoes"), 0u);
  // A request holding it finishes on it.
  EXPECT_TRUE((*held)->Predict(torch::rand({1, 1, 2, 2})).ok());
  EXPECT_EQ(ServedVersion("shoes"), 1);
}

TEST_F(ModelServerTest, AVersionDeletedWhileItLoadsIsNotInstalled) {
  AddVersion("shoes");
  AddVersion("shoes");
  StartServer(/*preload=*/false);
  loader_.set_after_load([this](const kaizen::v1::Model& m) {
    if (m.version() == 2) ASSERT_TRUE(models_->Delete("shoes", 2).ok());
  });
  // The request that started the load still gets the weights it asked for.
  EXPECT_EQ(ServedVersion("shoes"), 2);
  EXPECT_FALSE(server_->IsReady("shoes", 2));
  EXPECT_EQ(server_->LoadedVersions().count("shoes"), 0u);
  loader_.set_after_load(nullptr);
  EXPECT_EQ(ServedVersion("shoes"), 1);
}

TEST_F(ModelServerTest, AVersionDeletedWhileTheLoaderSwapsItInIsNotInstalled) {
  AddVersion("shoes");
  StartServer(/*preload=*/true);
  loader_.set_after_load([this](const kaizen::v1::Model& m) {
    if (m.name() == "shoes" && m.version() == 2) ASSERT_TRUE(models_->Delete("shoes", 2).ok());
  });
  AddVersion("shoes");
  DrainLoader();
  EXPECT_EQ(server_->LoadedVersions().at("shoes"), (std::vector<int64_t>{1}));
  EXPECT_EQ(ServedVersion("shoes"), 1);
}

TEST_F(ModelServerTest, InferRunsThroughTheModelsBatcherAndRefusesAnEmptyBatch) {
  AddVersion("shoes");
  StartServer(/*preload=*/false);
  auto model = server_->Acquire("shoes", 0, kaizen::v1::VERSION_POLICY_UNSPECIFIED);
  ASSERT_TRUE(model.ok()) << model.status();
  torch::Tensor x = torch::zeros({2, 1, 2, 2});
  x[0].view({-1})[1] = 5.0f;
  x[1].view({-1})[2] = 5.0f;
  auto probs = server_->Infer(*model, x, {});
  ASSERT_TRUE(probs.ok()) << probs.status();
  EXPECT_EQ(probs->argmax(1)[0].item<int64_t>(), 1);
  EXPECT_EQ(probs->argmax(1)[1].item<int64_t>(), 2);
  EXPECT_EQ(server_->Infer(*model, torch::zeros({0, 1, 2, 2}), {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  // The request-size limit is the Predictor's (predictor_test.cc).
}

TEST_F(ModelServerTest, AfterStopRequestsFailWithUnavailable) {
  AddVersion("shoes");
  StartServer(/*preload=*/true);
  auto model = server_->Acquire("shoes", 0, kaizen::v1::VERSION_POLICY_UNSPECIFIED);
  ASSERT_TRUE(model.ok()) << model.status();
  server_->Stop();
  EXPECT_FALSE(server_->started());
  EXPECT_EQ(server_->Acquire("shoes", 0, kaizen::v1::VERSION_POLICY_UNSPECIFIED).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(server_->Infer(*model, torch::zeros({1, 1, 2, 2}), {}).status().code(),
            absl::StatusCode::kUnavailable);
  server_->Stop();  // again: nothing to do
}

}  // namespace
}  // namespace kaizen::serving
