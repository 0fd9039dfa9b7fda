// End-to-end tests of kaizen-server as a process, through the flags that only
// main() reads: the per-model --serving_config file, --max_model_mb, and the
// JSON line it logs for every request. Each test serves a copy of the serving
// fixture (models "shoes" and "oip-net", trained once per CTest run).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <torch/script.h>

#include <algorithm>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/lib/kaizen_client.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "server/common/atomic_file.h"
#include "server/store/model_store.h"
#include "tests/test_util/image_fixtures.h"
#include "tests/test_util/server/loopback_server.h"
#include "tests/test_util/server/serving_fixture.h"
#include "tests/test_util/server_process.h"
#include "tests/test_util/temp_dir.h"
#include "tests/test_util/wait.h"

namespace kaizen {
namespace {

using google::protobuf::Struct;

class ServerFlagsE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    const absl::Status copied = test_util::CopyServingFixture(data_.path());
    ASSERT_TRUE(copied.ok()) << copied;
  }

  // Starts kaizen-server on the data directory with `flags` and connects to
  // it once it answers.
  void StartProcess(const std::vector<std::string>& flags) {
    const int port = test_util::FreeLoopbackPort();
    process_ =
        std::make_unique<test_util::ServerProcess>(KAIZEN_BINARY_DIR, data_.path(), port, flags);
    client_ = std::make_unique<client::KaizenClient>(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
    ASSERT_TRUE(test_util::WaitUntil([&] { return client_->ListModels().ok(); })) << Log();
  }

  // What the process wrote to standard error (its JSON log lines).
  std::string Log() const {
    std::string log;
    (void)common::ReadFile(data_.File("server.log"), &log);
    return log;
  }

  absl::StatusOr<v1::PredictResponse> PredictOne(const std::string& model,
                                                 v1::VersionPolicy policy = {}) {
    v1::PredictRequest r;
    r.set_model(model);
    r.set_policy(policy);
    r.add_inputs()->set_encoded_image(test_util::EncodePng(28, 28, 1, 5));
    return client_->Predict(r, absl::Seconds(60));
  }

  test_util::TempDir data_;
  test_util::TempDir files_;
  std::unique_ptr<test_util::ServerProcess> process_;
  std::unique_ptr<client::KaizenClient> client_;
};

TEST_F(ServerFlagsE2E, ServingConfigFileChoosesEachModelsVersionPolicy) {
  // A third version of "shoes" that validates worse than the others, so
  // that its best version is not its latest.
  {
    auto s = test_util::StartLoopbackServer(test_util::LoopbackOptions(data_.path()));
    ASSERT_TRUE(s.ok()) << s.status();
    auto m = s->client->GetModel(test_util::kShoesModel);
    ASSERT_TRUE(m.ok()) << m.status();
    const std::string file = files_.File("shoes.pt");
    ASSERT_TRUE(s->client->DownloadModel(test_util::kShoesModel, m->latest_version(), file).ok());
    v1::Model meta = *m;
    meta.clear_versions();
    (*meta.mutable_metrics())["val_accuracy"] = 0;
    auto added = s->server->model_store()->AddVersion(test_util::kShoesModel,
                                                      torch::jit::load(file), meta, "");
    ASSERT_TRUE(added.ok()) << added.status();
  }
  const std::string config = files_.File("serving.json");
  test_util::WriteBinaryFile(
      config, R"({"models": {"shoes": {"policy": "VERSION_POLICY_BEST", "maxBatchSize": 4}}})");
  StartProcess({"--serving_config=" + config});

  auto shoes = client_->GetModel(test_util::kShoesModel);
  ASSERT_TRUE(shoes.ok()) << shoes.status();
  ASSERT_NE(shoes->best_version(), shoes->latest_version());
  auto answer = PredictOne(test_util::kShoesModel);
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->version(), shoes->best_version()) << "the file's policy applies";
  answer = PredictOne(test_util::kShoesModel, v1::VERSION_POLICY_LATEST);
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->version(), shoes->latest_version()) << "a request's own policy wins";

  // A model the file does not name keeps the server-wide default (latest).
  auto shapes = client_->GetModel(test_util::kShapesModel);
  ASSERT_TRUE(shapes.ok()) << shapes.status();
  answer = PredictOne(test_util::kShapesModel);
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->version(), shapes->latest_version());
}

TEST_F(ServerFlagsE2E, ABadServingConfigFileStopsTheServerSayingWhy) {
  const std::string config = files_.File("serving.json");
  test_util::WriteBinaryFile(config, R"({"models": {"shoes": {"policy": "NEWEST"}}})");
  test_util::ServerProcess process(KAIZEN_BINARY_DIR, data_.path(), test_util::FreeLoopbackPort(),
                                   {"--serving_config=" + config});
  const int status = process.Wait();
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 2) << Log();
  EXPECT_NE(Log().find("bad --serving_config"), std::string::npos) << Log();
  EXPECT_NE(Log().find(config), std::string::npos) << Log();
}

// A sandbox limit that would mean no limit, or overflow, stops the server;
// so does a negative scratch reserve.
TEST_F(ServerFlagsE2E, SandboxLimitsOutOfRangeStopTheServerSayingWhich) {
  for (const std::string& flag : {std::string("--tokenizer_train_memory_mb=0"),
                                  std::string("--tokenizer_train_timeout_seconds=-5"),
                                  std::string("--model_inspect_memory_mb=99999999999"),
                                  std::string("--scratch_reserve_mb=-1")}) {
    test_util::ServerProcess process(KAIZEN_BINARY_DIR, data_.path(), test_util::FreeLoopbackPort(),
                                     {flag});
    const int status = process.Wait();
    ASSERT_TRUE(WIFEXITED(status)) << flag << ": " << status;
    EXPECT_EQ(WEXITSTATUS(status), 2) << flag;
    const std::string name = flag.substr(0, flag.find('='));
    EXPECT_NE(Log().find(name + " is "), std::string::npos) << flag << ": " << Log();
  }
}

TEST_F(ServerFlagsE2E, MaxModelMbRefusesLargerUploadsAndKeepsNothing) {
  StartProcess({"--max_model_mb=1"});
  v1::UploadModelHeader big;
  big.set_name("r18");  // 45 MB
  auto refused = client_->UploadModel(big, absl::StrCat(KAIZEN_FIXTURE_DIR, "/resnet18.pt"));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
  EXPECT_NE(refused.status().message().find("exceeds the limit of 1048576 bytes"),
            absl::string_view::npos)
      << refused.status();
  EXPECT_EQ(client_->GetModel("r18").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(test_util::WaitUntil([&] { return test_util::CountFiles(data_.File("tmp")) == 0; }));

  // A model under the limit (cnn-small's "shoes", well under 1 MiB) is taken.
  const std::string small = files_.File("small.pt");
  ASSERT_TRUE(client_->DownloadModel(test_util::kShoesModel, 0, small).ok());
  v1::UploadModelHeader ok;
  ok.set_name("small");
  auto taken = client_->UploadModel(ok, small);
  EXPECT_TRUE(taken.ok()) << taken.status();
}

// --max_dataset_examples bounds image-folder uploads; a folder that decodes
// to more than --max_dataset_memory_mb is still stored (uploads stream to
// disk), and a job whose images exceed --max_job_image_memory_mb streams
// them from the record file: upload -> FINE_TUNE -> Predict never holds the
// dataset in memory.
TEST_F(ServerFlagsE2E, UploadsAreBoundedAndJobsStreamWhatTheyMayNotHold) {
  StartProcess({"--max_dataset_memory_mb=1", "--max_dataset_examples=4",
                "--max_job_image_memory_mb=0", "--loader_threads=2", "--prefetch_batches=2"});
  auto upload = [&](const std::string& name, const std::vector<test_util::ArchiveEntry>& entries) {
    const std::string path = files_.File(name + ".tar");
    test_util::WriteBinaryFile(path, test_util::MakeArchive(entries, test_util::ArchiveKind::kTar));
    v1::UploadDatasetHeader h;
    h.set_name(name);
    h.set_format(v1::DATASET_FORMAT_IMAGE_FOLDER);
    return client_->UploadDataset(h, {path});
  };
  auto many = upload("many", {{"a/1.jpg", test_util::EncodeJpeg(8, 8, 3, 1)},
                              {"a/2.jpg", test_util::EncodeJpeg(8, 8, 3, 2)},
                              {"a/3.jpg", test_util::EncodeJpeg(8, 8, 3, 3)},
                              {"b/1.jpg", test_util::EncodeJpeg(8, 8, 3, 4)},
                              {"b/2.jpg", "not an image"}});
  ASSERT_EQ(many.status().code(), absl::StatusCode::kInvalidArgument) << many.status();
  EXPECT_NE(many.status().message().find("more than 4 image files"), std::string::npos)
      << many.status();
  // 4 x 384 x 384 x 3 = 1.7 MiB decoded, over --max_dataset_memory_mb.
  auto big = upload("big", {{"a/1.jpg", test_util::EncodeJpeg(384, 384, 3, 1)},
                            {"a/2.jpg", test_util::EncodeJpeg(384, 384, 3, 2)},
                            {"b/1.jpg", test_util::EncodeJpeg(384, 384, 3, 3)},
                            {"b/2.jpg", test_util::EncodeJpeg(384, 384, 3, 4)}});
  ASSERT_TRUE(big.ok()) << big.status();
  auto listed = client_->ListAllDatasets();
  ASSERT_TRUE(listed.ok()) << listed.status();
  std::vector<std::string> names;
  for (const auto& d : listed->datasets()) names.push_back(d.name());
  EXPECT_EQ(std::count(names.begin(), names.end(), "many"), 0);
  EXPECT_EQ(std::count(names.begin(), names.end(), "big"), 1);

  v1::StartFineTuneRequest req;
  req.set_base_model(test_util::kShoesModel);
  req.set_dataset("big");
  req.set_output_model("big-tuned");
  req.set_strategy(v1::STRATEGY_FINE_TUNE);
  req.mutable_hyperparameters()->set_epochs(2);
  req.mutable_hyperparameters()->set_batch_size(2);
  auto job = client_->StartFineTune(req);
  ASSERT_TRUE(job.ok()) << job.status();
  std::vector<std::string> messages;
  const absl::Status watched = client_->WatchJob(job->id(), 0, [&](const v1::JobEvent& e) {
    if (e.event_case() == v1::JobEvent::kMessage) messages.push_back(e.message());
  });
  ASSERT_TRUE(watched.ok()) << watched;
  auto done = client_->GetJob(job->id());
  ASSERT_TRUE(done.ok()) << done.status();
  ASSERT_EQ(done->state(), v1::JOB_STATE_SUCCEEDED) << done->error() << Log();
  EXPECT_EQ(std::count_if(messages.begin(), messages.end(),
                          [](const std::string& m) {
                            return m.find("stream from the dataset's record file") !=
                                   std::string::npos;
                          }),
            1)
      << absl::StrJoin(messages, "\n");
  v1::PredictRequest predict;
  predict.set_model("big-tuned");
  predict.add_inputs()->set_encoded_image(test_util::EncodeJpeg(384, 384, 3, 2));
  auto answer = client_->Predict(predict, absl::Seconds(60));
  ASSERT_TRUE(answer.ok()) << answer.status();
  ASSERT_EQ(answer->predictions_size(), 1);
  ASSERT_GT(answer->predictions(0).classes_size(), 0);
  EXPECT_TRUE(answer->predictions(0).classes(0).label() == "a" ||
              answer->predictions(0).classes(0).label() == "b");
}

// The request log: one JSON object per line for each call, with the fields
// the README lists.
TEST_F(ServerFlagsE2E, EveryRequestIsLoggedAsOneJsonLine) {
  StartProcess({});
  ASSERT_TRUE(client_->GetModel(test_util::kShoesModel).ok());
  ASSERT_EQ(client_->GetModel("nope").status().code(), absl::StatusCode::kNotFound);
  process_.reset();  // SIGTERM; everything it logged is in the file

  std::vector<Struct> requests;
  for (absl::string_view line : absl::StrSplit(Log(), '\n', absl::SkipEmpty())) {
    Struct entry;
    ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(std::string(line), &entry).ok())
        << "not a JSON object: " << line;
    ASSERT_TRUE(entry.fields().contains("ts") && entry.fields().contains("level") &&
                entry.fields().contains("msg"))
        << line;
    if (entry.fields().at("msg").string_value() == "request" &&
        entry.fields().at("method").string_value() == "GetModel") {
      requests.push_back(entry);
    }
  }
  ASSERT_EQ(requests.size(), 2u) << Log();
  for (const Struct& r : requests) {
    for (const char* field : {"method", "code", "ms", "peer", "resource", "caller", "error"}) {
      EXPECT_TRUE(r.fields().contains(field)) << field;
    }
    EXPECT_GE(r.fields().at("ms").number_value(), 0);
    EXPECT_NE(r.fields().at("peer").string_value().find("127.0.0.1"), std::string::npos);
  }
  const auto& ok = requests[0].fields();
  EXPECT_EQ(ok.at("code").string_value(), "OK");
  EXPECT_EQ(ok.at("level").string_value(), "info");
  EXPECT_EQ(ok.at("resource").string_value(), test_util::kShoesModel);
  const auto& missing = requests[1].fields();
  EXPECT_EQ(missing.at("code").string_value(), "NOT_FOUND");
  EXPECT_EQ(missing.at("level").string_value(), "warning");
  EXPECT_EQ(missing.at("resource").string_value(), "nope");
  EXPECT_NE(missing.at("error").string_value().find("nope"), std::string::npos);
}

}  // namespace
}  // namespace kaizen
