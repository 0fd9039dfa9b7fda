#include "server/http/json_gateway.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>

#include "kaizen/v1/dataset_service.pb.h"
#include "kaizen/v1/finetune_service.pb.h"
#include "kaizen/v1/model_service.pb.h"

namespace kaizen::http {
namespace {

using ::testing::HasSubstr;

TEST(JsonGatewayTest, RoutesEveryMethodByItsKind) {
  const JsonGateway gateway(JsonGateway::V1Services());
  const std::vector<std::string> routes = gateway.Routes();
  EXPECT_THAT(routes, ::testing::Contains("/api/kaizen.v1.FineTuneService/StartFineTune"));
  EXPECT_THAT(routes, ::testing::Contains("/api/kaizen.v1.InferenceService/Predict"));
  EXPECT_THAT(routes, ::testing::Contains("/api/kaizen.v1.FineTuneService/WatchJob"));
  using Kind = JsonGateway::Method::Kind;
  EXPECT_EQ(gateway.Find("/api/kaizen.v1.FineTuneService/WatchJob")->kind, Kind::kEvents);
  EXPECT_EQ(gateway.Find("/api/kaizen.v1.FineTuneService/GetJob")->kind, Kind::kUnary);
  EXPECT_EQ(gateway.Find("/api/kaizen.v1.ModelService/DownloadModel")->kind, Kind::kDownload);
  EXPECT_EQ(gateway.Find("/api/kaizen.v1.DatasetService/UploadDataset")->kind, Kind::kUpload);
  EXPECT_EQ(gateway.Find("/api/kaizen.v1.ModelService/UploadModel")->kind, Kind::kUpload);
  EXPECT_THAT(routes, ::testing::Contains("/api/kaizen.v1.DatasetService/UploadDataset"));
  const JsonGateway::Method* get = gateway.Find("/api/kaizen.v1.FineTuneService/GetJob?x=1");
  ASSERT_NE(get, nullptr);
  EXPECT_EQ(get->full_name, "/kaizen.v1.FineTuneService/GetJob");
  EXPECT_EQ(get->request->full_name(), "kaizen.v1.GetJobRequest");
  EXPECT_EQ(gateway.Find("/api/kaizen.v1.FineTuneService/Nope"), nullptr);
  EXPECT_EQ(gateway.Find("/kaizen.v1.FineTuneService/GetJob"), nullptr);
  EXPECT_TRUE(JsonGateway({"no.such.Service"}).Routes().empty());
}

TEST(JsonGatewayTest, UploadMessagesCarryTheHeaderTheChunksAndTheTrailer) {
  const JsonGateway gateway(JsonGateway::V1Services());
  const JsonGateway::Method* upload = gateway.Find("/api/kaizen.v1.DatasetService/UploadDataset");
  ASSERT_NE(upload, nullptr);
  absl::StatusOr<std::string> header = JsonGateway::UploadHeaderBytes(
      *upload, R"({"name":"shoes","format":"DATASET_FORMAT_IMAGE_FOLDER",)"
               R"("parts":[{"fileName":"shoes.tar","sizeBytes":"3"}]})");
  ASSERT_TRUE(header.ok()) << header.status();
  v1::UploadDatasetRequest parsed;
  ASSERT_TRUE(parsed.ParseFromString(*header));
  ASSERT_TRUE(parsed.has_header());
  EXPECT_EQ(parsed.header().name(), "shoes");
  EXPECT_EQ(parsed.header().parts(0).size_bytes(), 3);

  ASSERT_TRUE(
      parsed.ParseFromString(JsonGateway::UploadChunkBytes(*upload, std::string("a\0b", 3))));
  EXPECT_EQ(parsed.chunk(), std::string("a\0b", 3));
  ASSERT_TRUE(parsed.ParseFromString(JsonGateway::UploadTrailerBytes(*upload, "abc123")));
  EXPECT_EQ(parsed.sha256(), "abc123");

  for (const char* bad : {R"({"nmae":"x"})", "{", R"({"format":"NOPE"})", "[]"}) {
    absl::StatusOr<std::string> refused = JsonGateway::UploadHeaderBytes(*upload, bad);
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(refused.status().message(), HasSubstr("Kaizen-Upload-Header")) << bad;
    EXPECT_THAT(refused.status().message(), HasSubstr("kaizen.v1.UploadDatasetHeader")) << bad;
  }
}

TEST(JsonGatewayTest, DownloadPiecesAreTheChunksAndTheTrailer) {
  const JsonGateway gateway(JsonGateway::V1Services());
  const JsonGateway::Method* download = gateway.Find("/api/kaizen.v1.ModelService/DownloadModel");
  ASSERT_NE(download, nullptr);
  v1::DownloadModelResponse message;
  message.mutable_model()->set_name("m");
  absl::StatusOr<JsonGateway::DownloadPiece> piece =
      JsonGateway::ParseDownloadPiece(*download, message.SerializeAsString());
  ASSERT_TRUE(piece.ok()) << piece.status();
  EXPECT_TRUE(piece->chunk.empty() && piece->sha256.empty());
  message.set_chunk(std::string("x\0y", 3));
  piece = JsonGateway::ParseDownloadPiece(*download, message.SerializeAsString());
  EXPECT_EQ(piece->chunk, std::string("x\0y", 3));
  message.set_sha256("ff");
  piece = JsonGateway::ParseDownloadPiece(*download, message.SerializeAsString());
  EXPECT_TRUE(piece->chunk.empty());
  EXPECT_EQ(piece->sha256, "ff");
  EXPECT_EQ(JsonGateway::ParseDownloadPiece(*download, "\xff\xff").status().code(),
            absl::StatusCode::kInternal);
}

TEST(JsonGatewayTest, RequestJsonBecomesTheWireBytesOfTheRequest) {
  const JsonGateway gateway(JsonGateway::V1Services());
  const JsonGateway::Method* get = gateway.Find("/api/kaizen.v1.DatasetService/GetDataset");
  ASSERT_NE(get, nullptr);
  absl::StatusOr<std::string> bytes = JsonGateway::RequestBytes(*get, R"({"name": "shoes"})");
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  v1::GetDatasetRequest parsed;
  ASSERT_TRUE(parsed.ParseFromString(*bytes));
  EXPECT_EQ(parsed.name(), "shoes");

  // An empty body is the empty request.
  bytes = JsonGateway::RequestBytes(*get, " \n");
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_TRUE(bytes->empty());

  for (const char* bad : {R"({"nmae": "x"})", R"({"name": 3})", "{", "[1]", R"("x")"}) {
    absl::StatusOr<std::string> refused = JsonGateway::RequestBytes(*get, bad);
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(refused.status().message(), HasSubstr("kaizen.v1.GetDatasetRequest")) << bad;
  }
  absl::StatusOr<std::string> unknown = JsonGateway::RequestBytes(*get, R"({"nmae": "x"})");
  EXPECT_THAT(unknown.status().message(), HasSubstr("nmae"));
}

TEST(JsonGatewayTest, AnswersPrintAsProto3Json) {
  const JsonGateway gateway(JsonGateway::V1Services());
  const JsonGateway::Method* get = gateway.Find("/api/kaizen.v1.FineTuneService/GetJob");
  ASSERT_NE(get, nullptr);
  v1::Job job;
  job.set_id("job-1");
  job.set_state(v1::JOB_STATE_RUNNING);
  absl::StatusOr<std::string> json = JsonGateway::ResponseJson(*get, job.SerializeAsString());
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_THAT(*json, HasSubstr(R"("id":"job-1")"));
  EXPECT_THAT(*json, HasSubstr(R"("state":"JOB_STATE_RUNNING")"));
  // Unset scalars are printed too, so that a page need not know defaults.
  EXPECT_THAT(*json, HasSubstr(R"("latestVersion":"0")"));

  absl::StatusOr<std::string> garbage = JsonGateway::ResponseJson(*get, "\xff\xff\xff");
  EXPECT_EQ(garbage.status().code(), absl::StatusCode::kInternal);
}

TEST(JsonGatewayTest, LastEventIdSetsAfterSequenceOfAResumableStreamOnly) {
  const JsonGateway gateway(JsonGateway::V1Services());
  const JsonGateway::Method* watch = gateway.Find("/api/kaizen.v1.FineTuneService/WatchJob");
  ASSERT_NE(watch, nullptr);
  absl::StatusOr<std::string> bytes =
      JsonGateway::RequestBytes(*watch, R"({"id":"job-1","afterSequence":"3"})", "17");
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  v1::WatchJobRequest parsed;
  ASSERT_TRUE(parsed.ParseFromString(*bytes));
  EXPECT_EQ(parsed.id(), "job-1");
  EXPECT_EQ(parsed.after_sequence(), 17);  // the header wins: it is where the client got to

  for (const char* bad : {"-1", "1e3", " 5", "99999999999999999999", "12x"}) {
    absl::StatusOr<std::string> refused = JsonGateway::RequestBytes(*watch, "{}", bad);
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(refused.status().message(), HasSubstr("not a sequence number")) << bad;
  }
  const JsonGateway::Method* get = gateway.Find("/api/kaizen.v1.FineTuneService/GetJob");
  EXPECT_THAT(JsonGateway::RequestBytes(*get, "{}", "3").status().message(),
              HasSubstr("has no after_sequence"));
}

TEST(JsonGatewayTest, AStreamMessageIsOneServerSentEventNamedByItsOneof) {
  const JsonGateway gateway(JsonGateway::V1Services());
  const JsonGateway::Method* watch = gateway.Find("/api/kaizen.v1.FineTuneService/WatchJob");
  ASSERT_NE(watch, nullptr);
  v1::JobEvent event;
  event.set_job_id("job-1");
  event.set_sequence(42);
  event.mutable_epoch_summary()->set_epoch(3);
  absl::StatusOr<std::string> frame = JsonGateway::EventFrame(*watch, event.SerializeAsString());
  ASSERT_TRUE(frame.ok()) << frame.status();
  EXPECT_THAT(*frame, ::testing::StartsWith("id: 42\nevent: epoch_summary\ndata: {"));
  EXPECT_THAT(*frame, ::testing::EndsWith("}\n\n"));
  EXPECT_THAT(*frame, HasSubstr(R"("epochSummary":{)"));

  // A message with a line break in a string stays on one data line.
  event.set_message("line one\nline two");
  frame = JsonGateway::EventFrame(*watch, event.SerializeAsString());
  ASSERT_TRUE(frame.ok()) << frame.status();
  EXPECT_THAT(*frame, HasSubstr("event: message\n"));
  EXPECT_EQ(std::count(frame->begin(), frame->end(), '\n'), 4);

  EXPECT_EQ(JsonGateway::EventFrame(*watch, "\xff\xff").status().code(),
            absl::StatusCode::kInternal);
}

}  // namespace
}  // namespace kaizen::http
