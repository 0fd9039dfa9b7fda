// End-to-end tests of the catalogue's text and size limits: class names,
// descriptions and repeated request fields are checked before anything is
// stored, so that no record can break or bloat Get and List for everyone.
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "client/lib/kaizen_client.h"
#include "kaizen/v1/finetune_service.grpc.pb.h"
#include "server/api/server.h"
#include "tests/test_util/image_fixtures.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen {
namespace {

using test_util::ArchiveEntry;

class CatalogueLimitsE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    api::KaizenServer::Options o;
    o.data_dir = data_.path();
    o.grpc_address = "127.0.0.1:0";
    o.metrics_host = "127.0.0.1";
    o.metrics_port = -1;
    o.threads = 1;
    auto server = api::KaizenServer::Start(o);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->grpc_port()),
                                   grpc::InsecureChannelCredentials());
    client_ = std::make_unique<client::KaizenClient>(channel_);
  }

  absl::StatusOr<v1::Dataset> UploadFolder(const std::string& name,
                                           const std::vector<ArchiveEntry>& entries,
                                           const std::string& description = "") {
    const std::string path = files_.File(name + ".tar.gz");
    test_util::WriteBinaryFile(path,
                               test_util::MakeArchive(entries, test_util::ArchiveKind::kTarGz));
    v1::UploadDatasetHeader h;
    h.set_name(name);
    h.set_format(v1::DATASET_FORMAT_IMAGE_FOLDER);
    h.set_description(description);
    return client_->UploadDataset(h, {path});
  }

  static std::vector<ArchiveEntry> Folder(const std::string& first_class) {
    return {{first_class + "/a.png", test_util::EncodePng(16, 16, 3, 1)},
            {first_class + "/b.png", test_util::EncodePng(16, 16, 3, 2)},
            {"dogs/c.png", test_util::EncodePng(16, 16, 3, 3)}};
  }

  // Get, List and Delete still work for the dataset `name`.
  void ExpectCatalogueHealthy(const std::string& name) {
    absl::StatusOr<v1::ListDatasetsResponse> list = client_->ListAllDatasets();
    ASSERT_TRUE(list.ok()) << list.status();
    ASSERT_EQ(list->datasets_size(), 1);
    EXPECT_EQ(list->datasets(0).name(), name);
    EXPECT_TRUE(client_->GetDataset(name).ok());
    EXPECT_TRUE(client_->DeleteDataset(name).ok());
  }

  test_util::TempDir data_;
  test_util::TempDir files_;
  std::unique_ptr<api::KaizenServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<client::KaizenClient> client_;
};

TEST_F(CatalogueLimitsE2E, ClassFolderNameThatIsNotUtf8IsRefusedAndBreaksNothing) {
  ASSERT_TRUE(UploadFolder("good", Folder("cats")).ok());
  // "café" in Latin-1, as an old zip or tar from another system has it.
  absl::StatusOr<v1::Dataset> bad = UploadFolder("bad", Folder("caf\xE9"));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << bad.status();
  EXPECT_NE(bad.status().message().find("UTF-8"), std::string::npos) << bad.status();
  EXPECT_NE(bad.status().message().find("class folder"), std::string::npos) << bad.status();
  ExpectCatalogueHealthy("good");
}

TEST_F(CatalogueLimitsE2E, ClassFolderNamesWithControlCharactersOrTooLongAreRefused) {
  for (const std::string& cls : {std::string("ca\x1b[2Jt"), std::string(200, 'c')}) {
    absl::StatusOr<v1::Dataset> bad = UploadFolder("bad", Folder(cls));
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << bad.status();
    EXPECT_NE(bad.status().message().find("class folder 1"), std::string::npos) << bad.status();
  }
  ASSERT_TRUE(UploadFolder("good", Folder("cats")).ok());
  ExpectCatalogueHealthy("good");
}

TEST_F(CatalogueLimitsE2E, DescriptionsAreBounded) {
  absl::StatusOr<v1::Dataset> d = UploadFolder("long", Folder("cats"), std::string(5000, 'd'));
  EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument) << d.status();
  EXPECT_NE(d.status().message().find("header.description"), std::string::npos) << d.status();

  v1::UploadModelHeader h;
  h.set_name("m");
  h.set_description(std::string(5000, 'd'));
  const std::string file = files_.File("m.pt");
  test_util::WriteBinaryFile(file, "not even a model");
  absl::StatusOr<v1::Model> m = client_->UploadModel(h, file);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << m.status();
  EXPECT_NE(m.status().message().find("header.description"), std::string::npos) << m.status();
}

TEST_F(CatalogueLimitsE2E, ModelHeaderClassNamesAreChecked) {
  const std::string file = files_.File("m.pt");
  test_util::WriteBinaryFile(file, "not even a model");
  v1::UploadModelHeader h;
  h.set_name("m");
  h.add_class_names("cat");
  h.add_class_names("dog\x07");
  absl::StatusOr<v1::Model> m = client_->UploadModel(h, file);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << m.status();
  EXPECT_NE(m.status().message().find("header.class_names[1]"), std::string::npos) << m.status();

  h.clear_class_names();
  for (int i = 0; i < 5001; ++i) h.add_class_names(absl::StrCat("c", i));
  m = client_->UploadModel(h, file);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << m.status();
  EXPECT_NE(m.status().message().find("at most 5000"), std::string::npos) << m.status();
}

TEST_F(CatalogueLimitsE2E, ListJobsStatesAreBoundedAndKnown) {
  v1::ListJobsRequest req;
  for (int i = 0; i < 100000; ++i) req.add_states(v1::JOB_STATE_QUEUED);
  auto stub = v1::FineTuneService::NewStub(channel_);
  {
    grpc::ClientContext ctx;
    v1::ListJobsResponse resp;
    grpc::Status st = stub->ListJobs(&ctx, req, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
    EXPECT_NE(st.error_message().find("states"), std::string::npos) << st.error_message();
  }
  req.clear_states();
  req.add_states(static_cast<v1::JobState>(42));
  {
    grpc::ClientContext ctx;
    v1::ListJobsResponse resp;
    grpc::Status st = stub->ListJobs(&ctx, req, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
    EXPECT_NE(st.error_message().find("states[0] is 42"), std::string::npos) << st.error_message();
  }
}

TEST_F(CatalogueLimitsE2E, StartFineTuneRequestIdIsBounded) {
  ASSERT_TRUE(UploadFolder("pets", Folder("cats")).ok());
  v1::StartFineTuneRequest req;
  req.set_base_model("cnn-small");
  req.set_dataset("pets");
  req.set_output_model("out");
  req.set_strategy(v1::STRATEGY_SCRATCH);
  req.set_request_id(std::string(100000, 'r'));
  absl::StatusOr<v1::Job> job = client_->StartFineTune(req);
  EXPECT_EQ(job.status().code(), absl::StatusCode::kInvalidArgument) << job.status();
  EXPECT_NE(job.status().message().find("request_id"), std::string::npos) << job.status();
  absl::StatusOr<v1::ListJobsResponse> jobs = client_->ListAllJobs();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  EXPECT_EQ(jobs->jobs_size(), 0);
}

}  // namespace
}  // namespace kaizen
