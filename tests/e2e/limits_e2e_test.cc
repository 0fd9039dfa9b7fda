// End-to-end tests of the server's limits on streams and connections: upload
// idle timeouts and deadlines, the cap on concurrent uploads, gRPC's bounded
// thread pool, and the /metrics endpoint's whole-request deadline. The real
// KaizenServer on a loopback port, with short limits set through its Options.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/lib/kaizen_client.h"
#include "kaizen/v1/dataset_service.grpc.pb.h"
#include "server/api/server.h"
#include "tests/test_util/bytes.h"
#include "tests/test_util/http_get.h"
#include "tests/test_util/image_fixtures.h"
#include "tests/test_util/server/loopback_server.h"
#include "tests/test_util/temp_dir.h"
#include "tests/test_util/wait.h"

namespace kaizen {
namespace {

namespace fs = std::filesystem;
using v1::UploadDatasetRequest;

// An upload stream that the test drives by hand: the header and one chunk
// are sent, then the client says nothing until the test says otherwise.
struct OpenUpload {
  grpc::ClientContext context;
  v1::Dataset response;
  std::unique_ptr<grpc::ClientWriter<UploadDatasetRequest>> writer;
};

class LimitsE2E : public ::testing::Test {
 protected:
  void StartServer(const std::function<void(api::KaizenServer::Options*)>& adjust) {
    api::KaizenServer::Options o = test_util::LoopbackOptions(data_.path());
    o.threads = 1;
    adjust(&o);
    auto s = test_util::StartLoopbackServer(o);
    ASSERT_TRUE(s.ok()) << s.status();
    s_ = *std::move(s);
    stub_ = v1::DatasetService::NewStub(s_.channel);
  }

  // Sends the header (one part of `declared` bytes) and one 100-byte chunk.
  std::unique_ptr<OpenUpload> Open(const std::string& name, int64_t declared = 1 << 20) {
    auto up = std::make_unique<OpenUpload>();
    // A bound for the test itself; the server's limits are far shorter.
    up->context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    up->writer = stub_->UploadDataset(&up->context, &up->response);
    UploadDatasetRequest msg;
    msg.mutable_header()->set_name(name);
    msg.mutable_header()->set_format(v1::DATASET_FORMAT_IMAGE_FOLDER);
    msg.mutable_header()->add_parts()->set_size_bytes(declared);
    EXPECT_TRUE(up->writer->Write(msg));
    msg.set_chunk(std::string(100, 'x'));
    EXPECT_TRUE(up->writer->Write(msg));
    return up;
  }

  // Sends the header of an IDX upload whose two parts declare these sizes.
  std::unique_ptr<OpenUpload> OpenIdx(const std::string& name, size_t images_bytes,
                                      size_t labels_bytes) {
    auto up = std::make_unique<OpenUpload>();
    up->context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
    up->writer = stub_->UploadDataset(&up->context, &up->response);
    UploadDatasetRequest msg;
    v1::UploadDatasetHeader* h = msg.mutable_header();
    h->set_name(name);
    h->set_format(v1::DATASET_FORMAT_IDX);
    h->add_parts()->set_size_bytes(static_cast<int64_t>(images_bytes));
    h->add_parts()->set_size_bytes(static_cast<int64_t>(labels_bytes));
    EXPECT_TRUE(up->writer->Write(msg));
    return up;
  }

  std::string TmpDir() const { return data_.path() + "/tmp"; }
  double UploadsInProgress() const {
    return test_util::MetricValue(s_.Metrics(), "kaizen_uploads_in_progress");
  }

  absl::StatusOr<v1::Dataset> UploadGoodFolder(const std::string& name) {
    const std::string path = files_.File(name + ".tar.gz");
    test_util::WriteBinaryFile(
        path, test_util::MakeArchive({{"cats/a.png", test_util::EncodePng(16, 16, 3, 1)},
                                      {"dogs/b.png", test_util::EncodePng(16, 16, 3, 2)}},
                                     test_util::ArchiveKind::kTarGz));
    v1::UploadDatasetHeader h;
    h.set_name(name);
    h.set_format(v1::DATASET_FORMAT_IMAGE_FOLDER);
    return s_.client->UploadDataset(h, {path});
  }

  test_util::TempDir data_;
  test_util::TempDir files_;
  test_util::LoopbackServer s_;
  std::unique_ptr<v1::DatasetService::Stub> stub_;
};

TEST_F(LimitsE2E, SilentUploadEndsAfterIdleTimeoutAndFreesNameFileAndSlot) {
  StartServer([](api::KaizenServer::Options* o) {
    o->uploads.idle_timeout = absl::Milliseconds(500);
    o->uploads.max_concurrent = 1;
  });
  std::unique_ptr<OpenUpload> up = Open("pets");
  // The server has taken the header and the chunk once the part file exists.
  ASSERT_TRUE(test_util::WaitUntil([&] { return test_util::CountFiles(TmpDir()) == 1; }));
  EXPECT_EQ(UploadsInProgress(), 1);

  const absl::Time start = absl::Now();
  const grpc::Status st = up->writer->Finish();  // the client stays silent
  EXPECT_EQ(st.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << st.error_message();
  EXPECT_NE(st.error_message().find("--upload_idle_timeout_seconds"), std::string::npos)
      << st.error_message();
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));

  // Everything the stream held is free by the time the client hears of it:
  // the temporary file, the slot, and the name.
  EXPECT_EQ(test_util::CountFiles(TmpDir()), 0u);
  EXPECT_EQ(UploadsInProgress(), 0);
  absl::StatusOr<v1::Dataset> again = UploadGoodFolder("pets");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->num_examples(), 2);
}

// An IDX upload decodes while it arrives, on a thread of its own: one that
// goes silent halfway through its images ends at the idle timeout like any
// other, its decoding thread stopped (it was waiting for the next bytes),
// and nothing of it stays; the same name then uploads.
TEST_F(LimitsE2E, AnIdxUploadSilentHalfwayThroughItsImagesEndsWithItsDecoding) {
  StartServer([](api::KaizenServer::Options* o) {
    o->uploads.idle_timeout = absl::Seconds(2);
    o->uploads.max_concurrent = 1;
  });
  const std::string images = test_util::IdxImages(1'000, 28, 28);
  const std::string labels = test_util::IdxLabels(std::vector<uint8_t>(1'000, 1));
  std::unique_ptr<OpenUpload> up = OpenIdx("fashion", images.size(), labels.size());
  UploadDatasetRequest msg;
  msg.set_chunk(images.substr(0, images.size() / 2));
  ASSERT_TRUE(up->writer->Write(msg));
  ASSERT_TRUE(test_util::WaitUntil([&] { return test_util::CountFiles(TmpDir()) == 2; }));

  const grpc::Status st = up->writer->Finish();  // silent from here
  EXPECT_EQ(st.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << st.error_message();
  EXPECT_NE(st.error_message().find("no upload message arrived"), std::string::npos)
      << st.error_message();
  EXPECT_EQ(test_util::CountFiles(TmpDir()), 0u);
  EXPECT_EQ(UploadsInProgress(), 0);

  test_util::WriteBinaryFile(files_.File("images"), images);
  test_util::WriteBinaryFile(files_.File("labels"), labels);
  v1::UploadDatasetHeader again;
  again.set_name("fashion");
  again.set_format(v1::DATASET_FORMAT_IDX);
  again.add_class_names("zero");
  again.add_class_names("one");
  // Every label is 1: one class occurs, which the decoder refuses, naming it.
  absl::StatusOr<v1::Dataset> one_class =
      s_.client->UploadDataset(again, {files_.File("images"), files_.File("labels")});
  EXPECT_EQ(one_class.status().code(), absl::StatusCode::kInvalidArgument) << one_class.status();
  EXPECT_NE(one_class.status().message().find("only one label"), std::string::npos)
      << one_class.status();
  std::vector<uint8_t> two(1'000, 1);
  two[0] = 0;
  test_util::WriteBinaryFile(files_.File("labels"), test_util::IdxLabels(two));
  absl::StatusOr<v1::Dataset> stored =
      s_.client->UploadDataset(again, {files_.File("images"), files_.File("labels")});
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->num_examples(), 1'000);
}

// A file the decoder refuses while the upload is still arriving ends the
// stream then, with the file's error, not after the client sent the rest.
TEST_F(LimitsE2E, AnIdxUploadWhoseImagesAreRefusedEndsBeforeItsLastChunk) {
  StartServer([](api::KaizenServer::Options* o) {});
  std::string images = test_util::IdxImages(10, 28, 28);
  images[3] = 0x01;  // a labels file's magic number
  const std::string labels(int64_t{64} << 20, '\0');
  std::unique_ptr<OpenUpload> up = OpenIdx("swapped", images.size(), labels.size());
  grpc::ClientWriter<UploadDatasetRequest>* writer = up->writer.get();
  UploadDatasetRequest msg;
  msg.set_chunk(images);
  ASSERT_TRUE(writer->Write(msg));
  size_t sent = 0;
  constexpr size_t kChunk = 64 << 10;
  for (; sent < labels.size(); sent += kChunk) {
    msg.set_chunk(labels.substr(sent, kChunk));
    if (!writer->Write(msg)) break;  // the server ended the stream
    absl::SleepFor(absl::Milliseconds(5));
  }
  const grpc::Status st = writer->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
  EXPECT_NE(st.error_message().find("not an IDX images file"), std::string::npos)
      << st.error_message();
  EXPECT_LT(sent, labels.size());
  EXPECT_EQ(test_util::CountFiles(TmpDir()), 0u);
}

TEST_F(LimitsE2E, UploadsBeyondTheCapAreRefusedUntilASlotFrees) {
  StartServer([](api::KaizenServer::Options* o) { o->uploads.max_concurrent = 1; });
  std::unique_ptr<OpenUpload> first = Open("first");
  ASSERT_TRUE(test_util::WaitUntil([&] { return test_util::CountFiles(TmpDir()) == 1; }));

  absl::StatusOr<v1::Dataset> second = UploadGoodFolder("second");
  EXPECT_EQ(second.status().code(), absl::StatusCode::kResourceExhausted) << second.status();
  EXPECT_NE(second.status().message().find("--max_concurrent_uploads"), std::string::npos)
      << second.status();
  EXPECT_NE(second.status().message().find("limit is 1"), std::string::npos) << second.status();

  first->context.TryCancel();
  EXPECT_EQ(first->writer->Finish().error_code(), grpc::StatusCode::CANCELLED);
  ASSERT_TRUE(test_util::WaitUntil([&] { return UploadsInProgress() == 0; }));
  EXPECT_EQ(test_util::CountFiles(TmpDir()), 0u);
  second = UploadGoodFolder("second");
  EXPECT_TRUE(second.ok()) << second.status();
}

TEST_F(LimitsE2E, UploadStillSendingAtItsDeadlineEnds) {
  StartServer([](api::KaizenServer::Options* o) {
    o->uploads.idle_timeout = absl::Seconds(20);
    o->uploads.deadline = absl::Seconds(1);
  });
  std::unique_ptr<OpenUpload> up = Open("trickle");
  // A client that is never idle for long but never finishes either.
  UploadDatasetRequest msg;
  msg.set_chunk(std::string(10, 'x'));
  const absl::Time start = absl::Now();
  while (absl::Now() - start < absl::Seconds(15) && up->writer->Write(msg)) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  const grpc::Status st = up->writer->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << st.error_message();
  EXPECT_NE(st.error_message().find("--upload_deadline_seconds"), std::string::npos)
      << st.error_message();
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  EXPECT_EQ(test_util::CountFiles(TmpDir()), 0u);
  EXPECT_EQ(UploadsInProgress(), 0);
}

TEST_F(LimitsE2E, SilentUploadsHoldNoServerThread) {
  // Twelve silent uploads against a server allowed 8 threads: on the sync API
  // each would hold one, and nothing else could be answered.
  StartServer([](api::KaizenServer::Options* o) {
    o->grpc_max_threads = 8;
    o->uploads.max_concurrent = 16;
  });
  std::vector<std::unique_ptr<OpenUpload>> silent;
  for (int i = 0; i < 12; ++i) silent.push_back(Open(absl::StrCat("silent-", i)));
  ASSERT_TRUE(test_util::WaitUntil([&] { return test_util::CountFiles(TmpDir()) == 12; }));

  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  v1::ListDatasetsRequest req;
  v1::ListDatasetsResponse resp;
  const grpc::Status st = stub_->ListDatasets(&ctx, req, &resp);
  EXPECT_TRUE(st.ok()) << st.error_code() << ": " << st.error_message();
  absl::StatusOr<v1::Dataset> good = UploadGoodFolder("good");
  EXPECT_TRUE(good.ok()) << good.status();

  for (auto& up : silent) up->context.TryCancel();
  for (auto& up : silent) up->writer->Finish();
  EXPECT_TRUE(test_util::WaitUntil([&] { return test_util::CountFiles(TmpDir()) == 0; }));
}

TEST_F(LimitsE2E, SlowMetricsClientsDelayNoScrape) {
  StartServer([](api::KaizenServer::Options*) {});
  // Three clients that send half a request line and then sit.
  std::vector<int> slow;
  for (int i = 0; i < 3; ++i) {
    const int fd = test_util::ConnectLoopback(s_.server->metrics_port());
    ASSERT_GE(fd, 0);
    ASSERT_EQ(send(fd, "GET /metr", 9, MSG_NOSIGNAL), 9);
    slow.push_back(fd);
  }
  const absl::Time start = absl::Now();
  const std::string body = s_.Metrics();
  const absl::Duration took = absl::Now() - start;
  EXPECT_NE(body.find("kaizen_uploads_in_progress"), std::string::npos) << body;
  EXPECT_LT(took, absl::Seconds(1));
  for (int fd : slow) close(fd);
}

TEST_F(LimitsE2E, MetricsConnectionIsClosedAtItsDeadlineHoweverItTrickles) {
  StartServer(
      [](api::KaizenServer::Options* o) { o->metrics_http.request_timeout = absl::Seconds(1); });
  const int fd = test_util::ConnectLoopback(s_.server->metrics_port());
  ASSERT_GE(fd, 0);
  // One byte every 100 ms of a request that never ends: no single read
  // times out, only the whole-request deadline can end it.
  const std::string line = "GET /metrics HTTP/1.0\r\nX-Slow: " + std::string(200, 'a');
  const absl::Time start = absl::Now();
  bool closed = false;
  for (size_t i = 0; i < line.size() && !closed && absl::Now() - start < absl::Seconds(10); ++i) {
    if (send(fd, &line[i], 1, MSG_NOSIGNAL) != 1) break;
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 100) > 0) {
      char buf[256];
      closed = recv(fd, buf, sizeof(buf), 0) <= 0;
    }
  }
  const absl::Duration took = absl::Now() - start;
  close(fd);
  EXPECT_GE(took, absl::Milliseconds(900));
  EXPECT_LT(took, absl::Seconds(5));
  // And the endpoint still answers.
  EXPECT_NE(s_.Metrics().find("kaizen_uploads_in_progress"), std::string::npos);
}

}  // namespace
}  // namespace kaizen
