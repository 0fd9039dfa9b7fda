// Uploads and downloads over the HTTP API (server/http/upload_call.h,
// stream_call.h) on a real server: an image-folder archive and a
// TorchScript model uploaded as the body's bytes become the same dataset and
// model as over gRPC; a model downloads as its file; refusals are precise
// HTTP errors; a client that is too large, too slow or leaves mid-upload
// leaves nothing behind and the server goes on.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/message_differencer.h"
#include "server/auth/token_file.h"
#include "server/common/sha256.h"
#include "tests/test_util/http_client.h"
#include "tests/test_util/http_get.h"
#include "tests/test_util/image_fixtures.h"
#include "tests/test_util/server/job_helpers.h"
#include "tests/test_util/wait.h"

namespace kaizen {
namespace {

using ::testing::HasSubstr;

constexpr char kUploadDataset[] = "/api/kaizen.v1.DatasetService/UploadDataset";
constexpr char kUploadModel[] = "/api/kaizen.v1.ModelService/UploadModel";
constexpr char kDownloadModel[] = "/api/kaizen.v1.ModelService/DownloadModel";

// Two classes of six distinct PNGs each, as a tar.gz image folder.
std::string ImageFolderArchive() {
  std::vector<test_util::ArchiveEntry> entries;
  for (const char* label : {"boots", "sandals"}) {
    for (uint32_t i = 0; i < 6; ++i) {
      const uint32_t seed = i + (label[0] == 'b' ? 0 : 100);
      entries.push_back(
          {absl::StrCat("shoes/", label, "/", i, ".png"), test_util::EncodePng(16, 16, 3, seed)});
    }
  }
  return test_util::MakeArchive(entries, test_util::ArchiveKind::kTarGz);
}

std::string DatasetHeader(const std::string& name, size_t bytes) {
  return absl::StrCat(R"({"name":")", name,
                      R"(","format":"DATASET_FORMAT_IMAGE_FOLDER","description":"caf\u00e9",)",
                      R"("parts":[{"fileName":"shoes.tar.gz","sizeBytes":")", bytes, R"("}]})");
}

test_util::HttpAnswer Upload(int port, const std::string& route, const std::string& header,
                             const std::string& body, const std::string& token = "") {
  std::vector<std::pair<std::string, std::string>> headers = {
      {"Content-Type", "application/octet-stream"}, {"Kaizen-Upload-Header", header}};
  if (!token.empty()) headers.emplace_back("Authorization", "Bearer " + token);
  return test_util::HttpRequest(port, "POST", route, body, headers);
}

template <typename Message>
Message ParseJson(const std::string& json) {
  Message m;
  const auto status = google::protobuf::util::JsonStringToMessage(json, &m);
  EXPECT_TRUE(status.ok()) << status.ToString() << ": " << json;
  return m;
}

class HttpUploadE2E : public test_util::JobServerTest {
 protected:
  void StartWithHttp(const std::function<void(api::KaizenServer::Options&)>& adjust = nullptr) {
    StartServer([&](api::KaizenServer::Options& o) {
      o.http.port = 0;
      o.http.body_piece_bytes = 4096;  // many pieces even for small files
      if (adjust) adjust(o);
    });
    port_ = s_.server->http_port();
    ASSERT_GT(port_, 0);
  }

  // The datasets the server lists, asked over HTTP.
  int DatasetCount(const std::string& token = "") {
    const test_util::HttpAnswer a =
        test_util::PostJson(port_, "/api/kaizen.v1.DatasetService/ListDatasets", "{}", token);
    EXPECT_EQ(a.status, 200) << a.body;
    return a.status == 200 ? ParseJson<v1::ListDatasetsResponse>(a.body).datasets_size() : -1;
  }

  int port_ = 0;
};

TEST_F(HttpUploadE2E, ArchiveAndModelUploadAsOverGrpcAndTheModelDownloadsAsItsFile) {
  StartWithHttp();
  const std::string archive = ImageFolderArchive();
  ASSERT_FALSE(archive.empty());
  test_util::HttpAnswer a =
      Upload(port_, kUploadDataset, DatasetHeader("shoes", archive.size()), archive);
  ASSERT_EQ(a.status, 200) << a.error << a.body;
  const v1::Dataset uploaded = ParseJson<v1::Dataset>(a.body);
  EXPECT_EQ(uploaded.num_examples(), 12);
  EXPECT_EQ(uploaded.description(), "caf\xc3\xa9");
  EXPECT_EQ(uploaded.sha256(), common::Sha256Hex(archive));
  ASSERT_EQ(uploaded.classes_size(), 2);
  EXPECT_EQ(uploaded.classes(1).class_name(), "sandals");
  auto stored = s_.client->GetDataset("shoes");
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(uploaded, *stored));

  // The name is taken now: the service's refusal, as an HTTP status.
  a = Upload(port_, kUploadDataset, DatasetHeader("shoes", archive.size()), archive);
  EXPECT_EQ(a.status, 409) << a.body;
  EXPECT_THAT(a.body, HasSubstr("ALREADY_EXISTS"));

  // A built-in model (freshly initialised at each download) downloads as a
  // TorchScript file...
  a = test_util::PostJson(port_, kDownloadModel, R"({"name":"resnet-small"})");
  ASSERT_EQ(a.status, 200) << a.error << a.body;
  EXPECT_EQ(a.headers["content-type"], "application/octet-stream");
  EXPECT_EQ(a.headers["content-disposition"], "attachment");
  const std::string file = a.body;
  ASSERT_GT(file.size(), 4096u);

  // That file uploads as a model of its own, inspected as over gRPC.
  a = Upload(port_, kUploadModel,
             absl::StrCat(R"({"name":"small-copy","parts":[{"fileName":"small.pt","sizeBytes":")",
                          file.size(), R"("}]})"),
             file);
  ASSERT_EQ(a.status, 200) << a.error << a.body;
  const v1::Model model = ParseJson<v1::Model>(a.body);
  EXPECT_EQ(model.source(), v1::MODEL_SOURCE_UPLOADED);
  EXPECT_EQ(model.head().module_path(), "fc");
  auto got = s_.client->GetModel("small-copy");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(model, *got));
  // ... and a stored one downloads as the same bytes as over gRPC.
  a = test_util::PostJson(port_, kDownloadModel, R"({"name":"small-copy","version":"1"})");
  ASSERT_EQ(a.status, 200) << a.body;
  EXPECT_EQ(common::Sha256Hex(a.body), common::Sha256Hex(file));
  const std::string grpc_file = files_.File("small-copy.pt");
  ASSERT_TRUE(s_.client->DownloadModel("small-copy", 1, grpc_file).ok());
  EXPECT_EQ(common::Sha256Hex(test_util::ReadBinaryFile(grpc_file)), common::Sha256Hex(file));

  a = test_util::PostJson(port_, kDownloadModel, R"({"name":"no-such-model"})");
  EXPECT_EQ(a.status, 404) << a.body;
  EXPECT_EQ(a.headers["content-type"], "application/json");

  // A stored file damaged on disk is not handed out as good: gRPC gets
  // DATA_LOSS, HTTP an answer cut short (no final chunk).
  std::string stored_file;
  for (const auto& e : std::filesystem::recursive_directory_iterator(data_.path() + "/models")) {
    if (e.path().string().find("small-copy") != std::string::npos &&
        e.path().extension() == ".pt") {
      stored_file = e.path().string();
    }
  }
  ASSERT_FALSE(stored_file.empty());
  std::string damaged = test_util::ReadBinaryFile(stored_file);
  damaged[damaged.size() / 2] ^= 0x5a;
  test_util::WriteBinaryFile(stored_file, damaged);
  EXPECT_EQ(s_.client->DownloadModel("small-copy", 1, files_.File("damaged.pt")).status().code(),
            absl::StatusCode::kDataLoss);
  a = test_util::PostJson(port_, kDownloadModel, R"({"name":"small-copy"})");
  EXPECT_EQ(a.status, 0) << "a damaged file came as a whole answer: " << a.body.size() << " bytes";
}

TEST_F(HttpUploadE2E, RefusalsArePreciseAndLeaveNothingBehind) {
  const std::string tokens = files_.File("tokens");
  {
    std::ofstream out(tokens);
    out << auth::TokenFileLine("dash", auth::Role::kReader, "reader-secret-9") << "\n"
        << auth::TokenFileLine("ci", auth::Role::kTrainer, "trainer-secret-9") << "\n";
  }
  StartWithHttp([&](api::KaizenServer::Options& o) {
    o.tokens_file = tokens;
    o.http.max_streamed_body_bytes = 64 << 10;
  });
  const std::string archive = ImageFolderArchive();
  const std::string header = DatasetHeader("shoes", archive.size());

  test_util::HttpAnswer a = Upload(port_, kUploadDataset, header, archive, "reader-secret-9");
  EXPECT_EQ(a.status, 403) << a.error << a.body;
  EXPECT_THAT(a.body, HasSubstr("PERMISSION_DENIED"));
  a = Upload(port_, kUploadDataset, header, archive);
  EXPECT_EQ(a.status, 401) << a.body;

  a = test_util::HttpRequest(
      port_, "POST", kUploadDataset, archive,
      {{"Content-Type", "application/octet-stream"}, {"Authorization", "Bearer trainer-secret-9"}});
  EXPECT_EQ(a.status, 400) << a.body;
  EXPECT_THAT(a.body, HasSubstr("Kaizen-Upload-Header"));
  a = test_util::HttpRequest(port_, "POST", kUploadDataset, archive,
                             {{"Content-Type", "application/json"},
                              {"Kaizen-Upload-Header", header},
                              {"Authorization", "Bearer trainer-secret-9"}});
  EXPECT_EQ(a.status, 415) << a.body;
  a = Upload(port_, kUploadDataset, R"({"name":"shoes","parts":"x"})", archive, "trainer-secret-9");
  EXPECT_EQ(a.status, 400) << a.body;
  EXPECT_THAT(a.body, HasSubstr("kaizen.v1.UploadDatasetHeader"));

  // The header says more bytes than the body has: the service finds the
  // stream short.
  a = Upload(port_, kUploadDataset, DatasetHeader("shoes", archive.size() + 10), archive,
             "trainer-secret-9");
  EXPECT_EQ(a.status, 400) << a.body;
  EXPECT_THAT(a.body, HasSubstr("INVALID_ARGUMENT"));

  // A body over the limit: 413 from its declared length.
  const std::string big(100 << 10, 'x');
  a = Upload(port_, kUploadDataset, DatasetHeader("big", big.size()), big, "trainer-secret-9");
  EXPECT_EQ(a.status, 413) << a.body;
  EXPECT_THAT(a.body, HasSubstr("65536 bytes"));
  EXPECT_EQ(DatasetCount("reader-secret-9"), 0);

  // A client that sends half the body and leaves: the upload is dropped.
  const int fd = test_util::ConnectLoopback(port_);
  ASSERT_GE(fd, 0);
  const std::string head = absl::StrCat(
      "POST ", kUploadDataset,
      " HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer trainer-secret-9\r\n"
      "Content-Type: application/octet-stream\r\nKaizen-Upload-Header: ",
      header, "\r\nContent-Length: ", archive.size(), "\r\n\r\n", archive.substr(0, 2000));
  ASSERT_EQ(write(fd, head.data(), head.size()), static_cast<ssize_t>(head.size()));
  absl::SleepFor(absl::Milliseconds(300));
  close(fd);

  // The whole archive afterwards: the name was never taken.
  EXPECT_TRUE(test_util::WaitUntil(
      [&] {
        return Upload(port_, kUploadDataset, header, archive, "trainer-secret-9").status == 200;
      },
      absl::Seconds(20)));
  EXPECT_EQ(DatasetCount("reader-secret-9"), 1);
}

// Writes `bytes` to `fd`, false when the connection is gone.
bool Send(int fd, const std::string& bytes) {
  return send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size());
}

// Everything the server sends until it closes, or `limit` passes; when
// its first bytes came in `*first`.
std::string ReadUntilClosed(int fd, absl::Duration limit, absl::Time* first = nullptr) {
  timeval tv{static_cast<time_t>(absl::ToInt64Seconds(limit)), 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  std::string all;
  char buf[4096];
  for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) {
    if (all.empty() && first != nullptr) *first = absl::Now();
    all.append(buf, static_cast<size_t>(n));
  }
  return all;
}

std::string UploadHead(const std::string& header, const std::string& length_or_chunked) {
  return absl::StrCat("POST ", kUploadDataset,
                      " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
                      "Kaizen-Upload-Header: ",
                      header, "\r\n", length_or_chunked, "\r\n\r\n");
}

TEST_F(HttpUploadE2E, RefusalsComeWhileTheClientIsStillSendingAndSlowClientsAreServed) {
  StartWithHttp([](api::KaizenServer::Options& o) { o.http.request_timeout = absl::Seconds(1); });
  const std::string archive = ImageFolderArchive();
  ASSERT_EQ(Upload(port_, kUploadDataset, DatasetHeader("shoes", archive.size()), archive).status,
            200);

  // The name is taken: the 409 comes after the first bytes, not after the
  // 10 MB the client announced.
  int fd = test_util::ConnectLoopback(port_);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(Send(fd, UploadHead(DatasetHeader("shoes", 10'000'000), "Content-Length: 10000000") +
                           std::string(1000, 'x')));
  absl::Time start = absl::Now();
  absl::Time first = absl::InfiniteFuture();
  std::string answer = ReadUntilClosed(fd, absl::Seconds(10), &first);
  close(fd);
  EXPECT_THAT(answer, ::testing::StartsWith("HTTP/1.1 409")) << answer;
  EXPECT_LT(first - start, absl::Milliseconds(900));

  // The same with Expect: 100-continue and no body sent: the 409 comes
  // (after a 100 Continue or without one), and the connection closes.
  fd = test_util::ConnectLoopback(port_);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(Send(fd, UploadHead(DatasetHeader("shoes", 10'000'000),
                                  "Content-Length: 10000000\r\nExpect: 100-continue")));
  answer = ReadUntilClosed(fd, absl::Seconds(10));
  close(fd);
  EXPECT_THAT(answer, HasSubstr("HTTP/1.1 409")) << answer;

  // Broken chunked framing mid-upload: 400, and nothing stored.
  fd = test_util::ConnectLoopback(port_);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(
      Send(fd, UploadHead(DatasetHeader("broken", archive.size()), "Transfer-Encoding: chunked") +
                   "10\r\n0123456789abcdef\r\nzz\r\n"));
  answer = ReadUntilClosed(fd, absl::Seconds(10));
  close(fd);
  EXPECT_THAT(answer, ::testing::StartsWith("HTTP/1.1 400")) << answer;

  // A slow client (about 5 KB/s, each piece within the 1 s timeout)
  // takes longer than the timeout in all and is served.
  fd = test_util::ConnectLoopback(port_);
  ASSERT_GE(fd, 0);
  start = absl::Now();
  ASSERT_TRUE(Send(fd, UploadHead(DatasetHeader("slow", archive.size()),
                                  absl::StrCat("Content-Length: ", archive.size()))));
  for (size_t at = 0; at < archive.size(); at += 1500) {
    absl::SleepFor(absl::Milliseconds(300));
    ASSERT_TRUE(Send(fd, archive.substr(at, 1500)));
  }
  answer = ReadUntilClosed(fd, absl::Seconds(10));
  close(fd);
  EXPECT_THAT(answer, ::testing::StartsWith("HTTP/1.1 200")) << answer;
  EXPECT_GT(absl::Now() - start, absl::Seconds(1));
  EXPECT_EQ(DatasetCount(), 2);  // shoes and slow
}

TEST_F(HttpUploadE2E, AStalledBodyTimesOutAndIsDropped) {
  StartWithHttp([](api::KaizenServer::Options& o) { o.http.request_timeout = absl::Seconds(1); });
  const std::string archive = ImageFolderArchive();
  const int fd = test_util::ConnectLoopback(port_);
  ASSERT_GE(fd, 0);
  const std::string head =
      absl::StrCat("POST ", kUploadDataset,
                   " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
                   "Kaizen-Upload-Header: ",
                   DatasetHeader("shoes", archive.size()), "\r\nContent-Length: ", archive.size(),
                   "\r\n\r\n", archive.substr(0, 100));
  ASSERT_EQ(write(fd, head.data(), head.size()), static_cast<ssize_t>(head.size()));
  // Nothing more: within about the timeout the server gives up, closing the
  // connection, and the service drops the upload.
  std::string answer;
  char buf[4096];
  const absl::Time start = absl::Now();
  for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) answer.append(buf, static_cast<size_t>(n));
  close(fd);
  EXPECT_LT(absl::Now() - start, absl::Seconds(20));
  EXPECT_EQ(DatasetCount(), 0);
  // The service frees the name once it has seen the cancellation, which
  // reaches it just after the connection closes: an upload under the same
  // name is refused (409, in progress) until then, and then stored.
  test_util::HttpAnswer a;
  EXPECT_TRUE(test_util::WaitUntil(
      [&] {
        a = Upload(port_, kUploadDataset, DatasetHeader("shoes", archive.size()), archive);
        return a.status != 409;
      },
      absl::Seconds(5)));
  EXPECT_EQ(a.status, 200) << a.error << a.body;
}

}  // namespace
}  // namespace kaizen
