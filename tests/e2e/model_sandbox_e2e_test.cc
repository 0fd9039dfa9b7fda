// Hostile TorchScript uploads against a real server on a loopback port: each
// is refused with INVALID_ARGUMENT naming the file and the reason, while the
// server keeps answering other calls and what it stored stays intact.
#include <gtest/gtest.h>

#include <cstdlib>
#include <thread>

#include "absl/strings/str_cat.h"
#include "client/lib/kaizen_client.h"
#include "gmock/gmock.h"
#include "server/api/server.h"
#include "server/common/atomic_file.h"
#include "server/common/sha256.h"
#include "tests/test_util/image_fixtures.h"
#include "tests/test_util/python.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen {
namespace {

using ::testing::HasSubstr;

class ModelSandboxE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    canary_ = data_.File("canary");
    test_util::WriteBinaryFile(canary_, "stored bytes");
    const absl::StatusOr<std::string> written =
        test_util::RunPythonFixture("hostile_models.py", {models_.path(), canary_});
    ASSERT_TRUE(written.ok()) << written.status();
    api::KaizenServer::Options o;
    o.data_dir = data_.path();
    o.grpc_address = "127.0.0.1:0";
    o.metrics_host = "127.0.0.1";
    o.metrics_port = -1;
    o.threads = 1;
    o.serving.max_batch_size = 4;
    o.model_sandbox.cpu_seconds = 5;
    o.model_sandbox.timeout = absl::Seconds(20);
    auto server = api::KaizenServer::Start(o);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    client_ = std::make_unique<client::KaizenClient>(grpc::CreateChannel(
        absl::StrCat("127.0.0.1:", server_->grpc_port()), grpc::InsecureChannelCredentials()));
  }

  absl::StatusOr<v1::Model> Upload(const std::string& name, const std::string& file) {
    v1::UploadModelHeader h;
    h.set_name(name);
    h.add_input_shape(1);
    h.add_input_shape(8);
    h.add_input_shape(8);
    return client_->UploadModel(h, models_.File(file));
  }

  std::string Read(const std::string& path) {
    std::string bytes;
    EXPECT_TRUE(common::ReadFile(path, &bytes).ok());
    return bytes;
  }

  test_util::TempDir data_;
  test_util::TempDir models_;
  std::string canary_;
  std::unique_ptr<api::KaizenServer> server_;
  std::unique_ptr<client::KaizenClient> client_;
};

TEST_F(ModelSandboxE2E, HostileModelsAreRefusedAndNothingStoredChanges) {
  ASSERT_TRUE(Upload("good", "good.pt").ok());
  const std::string good_sha = client_->GetModel("good")->sha256();

  struct Case {
    const char* file;
    const char* reason;
  };
  for (const Case& c :
       {Case{"from_file.pt", "operator aten::from_file"},
        Case{"deep_pickle.pt", "nest deeper than 200"}, Case{"zip_bomb.pt", "ratio limit"},
        Case{"memory_bomb.pt", "allocate"}, Case{"batch_mismatch.pt", "at batch size 4"},
        Case{"bad_metadata.pt", "kaizen.json class_names[1]"}}) {
    absl::StatusOr<v1::Model> m = Upload("hostile", c.file);
    ASSERT_FALSE(m.ok()) << c.file;
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << c.file;
    EXPECT_THAT(m.status().message(), HasSubstr(c.reason)) << c.file;
    EXPECT_THAT(m.status().message(), HasSubstr(c.file)) << c.file;
  }
  EXPECT_EQ(Read(canary_), "stored bytes");
  auto list = client_->ListModels();
  ASSERT_TRUE(list.ok()) << list.status();
  auto good = client_->GetModel("good");
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_EQ(good->sha256(), good_sha);
  EXPECT_FALSE(client_->GetModel("hostile").ok());
  // The name of a refused upload is free again.
  EXPECT_TRUE(Upload("hostile", "good.pt").ok());
}

TEST_F(ModelSandboxE2E, AnEndlessModelDoesNotHoldTheServer) {
  absl::StatusOr<v1::Model> endless;
  std::thread upload([&] { endless = Upload("endless", "endless.pt"); });
  // While the inspector spins, other calls are answered.
  absl::Time start = absl::Now();
  for (int i = 0; i < 5; ++i) {
    EXPECT_TRUE(client_->ListModels().ok());
    absl::SleepFor(absl::Milliseconds(200));
  }
  EXPECT_TRUE(Upload("good", "good.pt").ok());
  upload.join();
  ASSERT_FALSE(endless.ok());
  EXPECT_EQ(endless.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(endless.status().message(), HasSubstr("CPU seconds"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(60));
}

}  // namespace
}  // namespace kaizen
