// Poison that survives restarts: a model version that crashes the server
// while it loads is quarantined at the next start (not loaded again), and
// serving answers from the newest version that is not quarantined. Runs the
// real kaizen-server binary, since the first start is meant to die.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <torch/script.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "client/lib/kaizen_client.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "server/api/server.h"
#include "server/common/atomic_file.h"
#include "server/store/metadata_store.h"
#include "server/store/model_store.h"
#include "tests/test_util/image_fixtures.h"
#include "tests/test_util/postgres.h"
#include "tests/test_util/python.h"
#include "tests/test_util/server_process.h"
#include "tests/test_util/store_printers.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class QuarantineE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    const absl::StatusOr<std::string> written =
        test_util::RunPythonFixture("hostile_models.py", {models_.path(), "/nonexistent"});
    ASSERT_TRUE(written.ok()) << written.status();
    port_ = test_util::FreeLoopbackPort();
  }

  // True once the server reports SERVING (its preload is done).
  bool WaitReady() {
    auto channel =
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port_), grpc::InsecureChannelCredentials());
    client_ = std::make_unique<client::KaizenClient>(channel);
    auto health = grpc::health::v1::Health::NewStub(channel);
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (absl::Now() < deadline) {
      grpc::ClientContext ctx;
      grpc::health::v1::HealthCheckRequest request;
      grpc::health::v1::HealthCheckResponse response;
      if (health->Check(&ctx, request, &response).ok() &&
          response.status() == grpc::health::v1::HealthCheckResponse::SERVING) {
        return true;
      }
      absl::SleepFor(absl::Milliseconds(100));
    }
    return false;
  }

  absl::StatusOr<v1::PredictResponse> PredictZeros(const std::string& model) {
    v1::PredictRequest r;
    r.set_model(model);
    v1::FloatTensor* t = r.add_inputs()->mutable_tensor();
    for (int64_t d : {1, 8, 8}) t->add_shape(d);
    t->mutable_values()->Resize(64, 0.0f);
    return client_->Predict(r, absl::Seconds(60));
  }

  // An in-process server on this data directory (and `database`, with
  // `replica_id`, when given) with model "m" (version 1, good.pt) uploaded
  // through the API; the client talks to it.
  std::unique_ptr<api::KaizenServer> StartWithUploadedModel(const std::string& database = "",
                                                            const std::string& replica_id = "") {
    api::KaizenServer::Options o;
    o.data_dir = data_.path();
    o.database = database;
    o.replica_id = replica_id;
    o.grpc_address = "127.0.0.1:0";
    o.metrics_port = -1;
    o.threads = 1;
    auto server = api::KaizenServer::Start(o);
    EXPECT_TRUE(server.ok()) << server.status();
    if (!server.ok()) return nullptr;
    client_ = std::make_unique<client::KaizenClient>(grpc::CreateChannel(
        absl::StrCat("127.0.0.1:", (*server)->grpc_port()), grpc::InsecureChannelCredentials()));
    v1::UploadModelHeader h;
    h.set_name("m");
    for (int64_t d : {1, 8, 8}) h.add_input_shape(d);
    absl::StatusOr<v1::Model> uploaded = client_->UploadModel(h, models_.File("good.pt"));
    EXPECT_TRUE(uploaded.ok()) << uploaded.status();
    return uploaded.ok() ? *std::move(server) : nullptr;
  }

  // Writes `file` as the next version of "m", as a fine-tuning job would.
  absl::StatusOr<v1::Model> AddVersion(api::KaizenServer* server, const std::string& file) {
    absl::StatusOr<v1::Model> meta = client_->GetModel("m");
    if (!meta.ok()) return meta.status();
    return server->model_store()->AddVersion("m", torch::jit::load(models_.File(file)), *meta, "");
  }

  // Version 1 uploaded, version 2 written as a fine-tuned version would be;
  // then version 2's file becomes one that overflows the loader's stack (as
  // a corrupt disk or a loader bug would), so a server dies preloading it.
  void WriteAPoisonedVersion2(const std::string& database = "",
                              const std::string& replica_id = "") {
    {
      std::unique_ptr<api::KaizenServer> server = StartWithUploadedModel(database, replica_id);
      ASSERT_NE(server, nullptr);
      auto v2 = AddVersion(server.get(), "good.pt");
      ASSERT_TRUE(v2.ok()) << v2.status();
      ASSERT_EQ(v2->version(), 2);
    }
    std::string poison;
    ASSERT_TRUE(common::ReadFile(models_.File("deep_pickle.pt"), &poison).ok());
    for (const auto& f : std::filesystem::directory_iterator(data_.path() + "/models/m")) {
      if (f.path().filename().string().rfind("v2-", 0) == 0 && f.path().extension() == ".pt") {
        test_util::WriteBinaryFile(f.path().string(), poison);
      }
    }
  }

  // On `database`: version 2 of "m" poisoned (written through replica
  // r1), and a marker of replica r2 loading version 1 (a load in progress).
  std::unique_ptr<store::MetadataStore> PoisonedCatalogueWhileR2Loads(const std::string& database) {
    WriteAPoisonedVersion2(database, "r1");
    if (HasFatalFailure()) return nullptr;
    auto catalogue = store::MetadataStore::Open(database);
    EXPECT_TRUE(catalogue.ok()) << catalogue.status();
    if (!catalogue.ok()) return nullptr;
    EXPECT_TRUE((*catalogue)->MarkLoading("m", 1, "r2", /*lease_ms=*/600'000).ok());
    return *std::move(catalogue);
  }

  // A kaizen-server process with `flags` that dies preloading version 2.
  void StartAndCrash(const std::vector<std::string>& flags) {
    test_util::ServerProcess crashing(KAIZEN_BINARY_DIR, data_.path(), port_, flags);
    const int status = crashing.Wait();
    ASSERT_TRUE(WIFSIGNALED(status)) << "the first start was expected to crash";
  }

  test_util::TempDir data_;
  test_util::TempDir models_;
  int port_ = 0;
  std::unique_ptr<client::KaizenClient> client_;
};

TEST_F(QuarantineE2E, AVersionThatCrashedTheServerIsQuarantinedAtTheNextStart) {
  ASSERT_NO_FATAL_FAILURE(WriteAPoisonedVersion2());
  ASSERT_NO_FATAL_FAILURE(StartAndCrash({}));
  absl::StatusOr<v1::Model> v2, latest;
  absl::StatusOr<v1::PredictResponse> prediction;
  {
    test_util::ServerProcess server(KAIZEN_BINARY_DIR, data_.path(), port_);
    ASSERT_TRUE(WaitReady());
    v2 = client_->GetModel("m", 2);
    latest = client_->GetModel("m");
    prediction = PredictZeros("m");
  }
  ASSERT_TRUE(v2.ok()) << v2.status();
  EXPECT_THAT(v2->quarantine_reason(), HasSubstr("stopped while loading"));
  ASSERT_TRUE(latest.ok());
  EXPECT_THAT(latest->quarantined_versions(), ElementsAre(2));
  ASSERT_TRUE(prediction.ok()) << prediction.status();
  EXPECT_EQ(prediction->version(), 1);
  // Pinned to the quarantined version: refused, not loaded.
  test_util::ServerProcess server(KAIZEN_BINARY_DIR, data_.path(), port_);
  ASSERT_TRUE(WaitReady());
  v1::PredictRequest pinned;
  pinned.set_model("m");
  pinned.set_version(2);
  v1::FloatTensor* t = pinned.add_inputs()->mutable_tensor();
  for (int64_t d : {1, 8, 8}) t->add_shape(d);
  t->mutable_values()->Resize(64, 0.0f);
  auto refused = client_->Predict(pinned, absl::Seconds(60));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.status().message(), HasSubstr("quarantined"));
}

// With replicas on one PostgreSQL: the replica that crashed loading version 2
// quarantines it when it starts again under the same --replica_id (a pod's
// name survives its container's restarts), and leaves alone another
// replica's marker, which may be a load in progress.
TEST_F(QuarantineE2E, AReplicaQuarantinesTheVersionItCrashedLoadingButNotAnotherReplicasLoad) {
  absl::StatusOr<std::string> database = test_util::FreshPostgresDatabase();
  ASSERT_TRUE(database.ok()) << database.status();
  std::unique_ptr<store::MetadataStore> catalogue = PoisonedCatalogueWhileR2Loads(*database);
  ASSERT_NE(catalogue, nullptr);
  const std::vector<std::string> replica = {absl::StrCat("--database=", *database),
                                            "--replica_id=r1"};
  ASSERT_NO_FATAL_FAILURE(StartAndCrash(replica));
  absl::StatusOr<v1::Model> first, latest;
  absl::StatusOr<v1::PredictResponse> prediction;
  {
    test_util::ServerProcess server(KAIZEN_BINARY_DIR, data_.path(), port_, replica);
    ASSERT_TRUE(WaitReady());
    first = client_->GetModel("m", 1);
    latest = client_->GetModel("m");
    prediction = PredictZeros("m");
  }
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_THAT(latest->quarantined_versions(), ElementsAre(2));
  EXPECT_THAT(latest->quarantine_reason(),
              HasSubstr("replica r1 stopped while loading this version"));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->quarantine_reason(), "");
  ASSERT_TRUE(prediction.ok()) << prediction.status();
  EXPECT_EQ(prediction->version(), 1);
  using Markers = std::vector<store::MetadataStore::LoadingMarker>;
  EXPECT_EQ(*catalogue->TakeLoadingMarkers("r2", false, 0, nullptr), (Markers{{"m", 1, "r2"}}));
}

// A replica that died loading a version and never comes back under its id
// (the default id, <host>-<pid>, changes at each start) stops renewing its
// loading marker: once its lease has run out for a whole lease, a replica
// starting under another id quarantines the version instead of dying the
// same way, and a live replica does so at a renewal once its own renewals
// have gone on for a lease. A marker still leased (another replica's load
// in progress) is left alone.
TEST_F(QuarantineE2E, AVersionWhoseReplicaDiedLoadingItIsQuarantinedByAnotherReplica) {
  absl::StatusOr<std::string> database = test_util::FreshPostgresDatabase();
  ASSERT_TRUE(database.ok()) << database.status();
  std::unique_ptr<store::MetadataStore> catalogue = PoisonedCatalogueWhileR2Loads(*database);
  ASSERT_NE(catalogue, nullptr);
  const auto replica = [&](const std::string& id) {
    return std::vector<std::string>{absl::StrCat("--database=", *database),
                                    absl::StrCat("--replica_id=", id), "--job_lease_seconds=1"};
  };
  ASSERT_NO_FATAL_FAILURE(StartAndCrash(replica("r1")));
  absl::SleepFor(absl::Milliseconds(2200));  // r1's marker outlives two of its leases
  test_util::ServerProcess server(KAIZEN_BINARY_DIR, data_.path(), port_, replica("r3"));
  ASSERT_TRUE(WaitReady());
  absl::StatusOr<v1::Model> second = client_->GetModel("m", 2);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_THAT(second->quarantine_reason(),
              HasSubstr("replica r1 stopped while loading this version for serving (the lease "
                        "of its loading marker ran out unrenewed; found by replica r3)"));
  absl::StatusOr<v1::PredictResponse> prediction = PredictZeros("m");
  ASSERT_TRUE(prediction.ok()) << prediction.status();
  EXPECT_EQ(prediction->version(), 1);

  // r4 dies loading version 1 while r3 runs: r3 finds its marker expired.
  ASSERT_TRUE(catalogue->MarkLoading("m", 1, "r4", /*lease_ms=*/200).ok());
  absl::StatusOr<v1::Model> first;
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (absl::Now() < deadline) {
    first = client_->GetModel("m", 1);
    if (!first.ok() || !first->quarantine_reason().empty()) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_THAT(first->quarantine_reason(),
              HasSubstr("replica r4 stopped while loading this version for serving (the lease "
                        "of its loading marker ran out unrenewed; found by replica r3)"));
  using Markers = std::vector<store::MetadataStore::LoadingMarker>;
  EXPECT_EQ(*catalogue->TakeLoadingMarkers("r2", false, 0, nullptr), (Markers{{"m", 1, "r2"}}));
}

TEST_F(QuarantineE2E, AVersionThatFailsToLoadIsQuarantinedAndNotRetried) {
  std::unique_ptr<api::KaizenServer> server = StartWithUploadedModel();
  ASSERT_NE(server, nullptr);
  ASSERT_TRUE(PredictZeros("m").ok());
  // A version whose forward returns the wrong shape fails its warm-up.
  auto v2 = AddVersion(server.get(), "batch_mismatch.pt");
  ASSERT_TRUE(v2.ok()) << v2.status();
  // The background load fails and quarantines it; the old version serves on.
  absl::StatusOr<v1::Model> seen;
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (absl::Now() < deadline) {
    seen = client_->GetModel("m", 2);
    if (seen.ok() && !seen->quarantine_reason().empty()) break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_TRUE(seen.ok());
  EXPECT_FALSE(seen->quarantine_reason().empty());
  for (int i = 0; i < 3; ++i) {
    auto p = PredictZeros("m");
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_EQ(p->version(), 1);
  }
  // Deleting the version clears its quarantine.
  ASSERT_TRUE(client_->DeleteModel("m", 2).ok());
  auto after = client_->GetModel("m");
  ASSERT_TRUE(after.ok());
  EXPECT_TRUE(after->quarantined_versions().empty());
}

}  // namespace
}  // namespace kaizen
