// WatchJob over HTTP as Server-Sent Events (server/http/stream_call.h) on a
// real server: the same events as the gRPC stream, resumption with
// Last-Event-ID, refusals as HTTP errors, a stalled browser that slows
// neither the job nor another stream, and 200 streams on one job without a
// thread each.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/message_differencer.h"
#include "server/auth/token_file.h"
#include "tests/test_util/http_client.h"
#include "tests/test_util/server/job_helpers.h"
#include "tests/test_util/server_process.h"

namespace kaizen {
namespace {

using test_util::SseEvent;
using test_util::SseStream;
using ::testing::HasSubstr;
using v1::JobEvent;

constexpr char kWatch[] = "/api/kaizen.v1.FineTuneService/WatchJob";

std::string WatchBody(const std::string& id) { return absl::StrCat(R"({"id":")", id, R"("})"); }

// The events of a stream until its end; the final `stream_end` or
// `stream_error` frame in
// `*last`.
std::vector<SseEvent> ReadAll(SseStream& sse, SseEvent* last) {
  std::vector<SseEvent> events;
  while (std::optional<SseEvent> e = sse.Next(std::chrono::seconds(240))) {
    if (e->event == "stream_end" || e->event == "stream_error") {
      *last = *e;
      continue;
    }
    events.push_back(*e);
  }
  return events;
}

JobEvent Parse(const SseEvent& e) {
  JobEvent event;
  const auto status = google::protobuf::util::JsonStringToMessage(e.data, &event);
  EXPECT_TRUE(status.ok()) << status.ToString() << ": " << e.data;
  return event;
}

// Each SSE event is the gRPC event with the same sequence: id, event name
// (the oneof's field) and data.
void ExpectSameEvents(const std::vector<SseEvent>& sse, const std::vector<JobEvent>& grpc) {
  ASSERT_EQ(sse.size(), grpc.size());
  for (size_t i = 0; i < sse.size(); ++i) {
    const JobEvent& want = grpc[i];
    EXPECT_EQ(sse[i].id, absl::StrCat(want.sequence())) << i;
    EXPECT_EQ(sse[i].event, want.GetDescriptor()->FindFieldByNumber(want.event_case())->name())
        << i;
    EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(Parse(sse[i]), want))
        << sse[i].data;
  }
}

class HttpSseE2E : public test_util::JobServerTest {
 protected:
  void StartWithHttp(const std::function<void(api::KaizenServer::Options&)>& adjust = nullptr) {
    StartServer([&](api::KaizenServer::Options& o) {
      o.http.port = 0;
      if (adjust) adjust(o);
    });
    port_ = s_.server->http_port();
    ASSERT_GT(port_, 0);
  }
  int port_ = 0;
};

TEST_F(HttpSseE2E, WatchJobOverSseIsTheGrpcStreamAndResumesAfterLastEventId) {
  StartWithHttp();
  UploadSubset("shoes", {5, 7}, 10);
  const v1::Job job = Start(Request("cnn-small", "shoes", "out", v1::STRATEGY_SCRATCH, 3));

  // Live: opened as the job starts, read as it runs.
  SseStream live(port_, kWatch, WatchBody(job.id()));
  ASSERT_EQ(live.status(), 200) << live.error() << live.body();
  EXPECT_EQ(live.headers().at("content-type"), "text/event-stream");
  EXPECT_EQ(live.headers().at("cache-control"), "no-store");
  SseEvent last;
  const std::vector<SseEvent> got = ReadAll(live, &last);
  EXPECT_EQ(live.error(), "");
  EXPECT_EQ(last.event, "stream_end");
  EXPECT_THAT(last.data, HasSubstr(R"("code":0)"));

  const std::vector<JobEvent> want = Watch(job.id());
  ASSERT_GE(want.size(), 6u);  // states, progress, 3 epoch summaries and checkpoints
  ExpectSameEvents(got, want);
  EXPECT_EQ(want.back().state(), v1::JOB_STATE_SUCCEEDED);

  // A browser reconnecting with the last id it saw gets exactly the rest.
  const int64_t k = want[want.size() / 2].sequence();
  SseStream resumed(port_, kWatch, WatchBody(job.id()), "", absl::StrCat(k));
  ASSERT_EQ(resumed.status(), 200) << resumed.body();
  const std::vector<SseEvent> rest = ReadAll(resumed, &last);
  ExpectSameEvents(rest, Watch(job.id(), k));
  ASSERT_FALSE(rest.empty());
  EXPECT_EQ(rest.front().id, absl::StrCat(k + 1));
  EXPECT_EQ(last.event, "stream_end");
}

TEST_F(HttpSseE2E, RefusalsBeforeTheStreamAreHttpErrors) {
  const std::string tokens = files_.File("tokens");
  {
    std::ofstream out(tokens);
    out << auth::TokenFileLine("dash", auth::Role::kReader, "reader-secret-9") << "\n";
  }
  StartWithHttp([&](api::KaizenServer::Options& o) { o.tokens_file = tokens; });

  SseStream anonymous(port_, kWatch, WatchBody("job-1"));
  EXPECT_EQ(anonymous.status(), 401) << anonymous.error() << anonymous.body();
  EXPECT_EQ(anonymous.headers().at("www-authenticate"), "Bearer");

  SseStream unknown(port_, kWatch, WatchBody("job-404"), "reader-secret-9");
  EXPECT_EQ(unknown.status(), 404) << unknown.body();
  EXPECT_THAT(unknown.body(), HasSubstr(R"("status":"NOT_FOUND")"));
  EXPECT_THAT(unknown.body(), HasSubstr("job-404"));

  SseStream negative(port_, kWatch, R"({"id":"job-1","afterSequence":"-4"})", "reader-secret-9");
  EXPECT_EQ(negative.status(), 400) << negative.body();
  EXPECT_THAT(negative.body(), HasSubstr("after_sequence is -4"));

  SseStream bad_id(port_, kWatch, WatchBody("job-1"), "reader-secret-9", "abc");
  EXPECT_EQ(bad_id.status(), 400) << bad_id.body();
  EXPECT_THAT(bad_id.body(), HasSubstr("Last-Event-ID"));
}

// A client socket that asks for the stream and then reads nothing, with a
// receive buffer as small as the kernel allows.
int StalledStream(int port, const std::string& id) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  const int small = 2048;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  const std::string body = WatchBody(id);
  const std::string request = absl::StrCat(
      "POST ", kWatch, " HTTP/1.1\r\nHost: 127.0.0.1\r\n",
      "Content-Type: application/json\r\nContent-Length: ", body.size(), "\r\n\r\n", body);
  if (write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size())) {
    close(fd);
    return -1;
  }
  return fd;
}

// Everything the socket holds and gets until it closes or is quiet for 5 s.
std::string Drain(int fd) {
  std::string all;
  char buf[65536];
  pollfd p{fd, POLLIN, 0};
  while (poll(&p, 1, 5000) > 0) {
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) break;
    all.append(buf, static_cast<size_t>(n));
  }
  return all;
}

TEST_F(HttpSseE2E, AStalledBrowserSlowsNeitherTheJobNorAnotherStream) {
  constexpr size_t kBacklog = 50;
  StartWithHttp([](api::KaizenServer::Options& o) {
    o.max_watcher_backlog = kBacklog;
    o.http.request_timeout = absl::Seconds(30);
    // Little for the kernel to hold, so that the stall reaches the service.
    o.http.stream_send_buffer_bytes = 4096;
  });
  UploadSubset("ten", {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, 10, 0, "train",
               test_util::LongClassNames(10));
  auto r = Request("cnn-small", "ten", "out", v1::STRATEGY_SCRATCH, 40);
  r.mutable_hyperparameters()->set_batch_size(40);
  const v1::Job job = Start(r);

  const int stalled = StalledStream(port_, job.id());
  ASSERT_GE(stalled, 0);
  SseStream healthy(port_, kWatch, WatchBody(job.id()));
  ASSERT_EQ(healthy.status(), 200) << healthy.body();
  SseEvent last;
  const std::vector<SseEvent> got = ReadAll(healthy, &last);
  const v1::Job end = WaitForSuccess(job.id());
  // The healthy stream has every event of the job and its end.
  ExpectSameEvents(got, Watch(job.id()));
  EXPECT_EQ(last.event, "stream_end");
  EXPECT_EQ(got.back().id, absl::StrCat(end.last_sequence()));

  // The stalled one fell behind by more than the service's bound on a
  // watcher's backlog: once read, it has a prefix of the events and then an
  // `stream_error` event naming the sequence to resume after.
  const std::string raw = Drain(stalled);
  close(stalled);
  size_t ids = 0;
  for (size_t at = raw.find("id: "); at != std::string::npos; at = raw.find("id: ", at + 1)) ++ids;
  std::cout << "the job made " << end.last_sequence() << " events; the stalled stream got " << ids
            << " of them, then its end\n";
  EXPECT_LT(ids, static_cast<size_t>(end.last_sequence()));
  EXPECT_EQ(raw.find("event: stream_end"), std::string::npos);
  EXPECT_THAT(raw, HasSubstr("event: stream_error"));
  EXPECT_THAT(raw, HasSubstr("RESOURCE_EXHAUSTED"));
  EXPECT_THAT(raw, HasSubstr(absl::StrCat("fell more than ", kBacklog, " events behind")));
}

// The value of `field` ("Threads:", "VmRSS:") in /proc/<pid>/status.
int64_t ProcStatus(pid_t pid, const std::string& field) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field, 0) == 0) {
      int64_t v = 0;
      std::istringstream(line.substr(field.size())) >> v;
      return v;
    }
  }
  return -1;
}

TEST_F(HttpSseE2E, TwoHundredStreamsOnOneJobHoldNoThreadEachAndAllGetTheSameEvents) {
  constexpr int kStreams = 200;
  const int grpc_port = test_util::FreeLoopbackPort();
  const int http_port = test_util::FreeLoopbackPort();
  test_util::ServerProcess server(KAIZEN_BINARY_DIR, data_.path(), grpc_port,
                                  {absl::StrCat("--http_port=", http_port),
                                   absl::StrCat("--http_max_connections=", kStreams + 16)});
  ASSERT_TRUE(Connect(grpc_port));
  UploadSubset("shoes", {5, 7}, 20);
  auto r = Request("cnn-small", "shoes", "out", v1::STRATEGY_SCRATCH, 200);
  const v1::Job job = Start(r);
  WaitForState(job.id(), {v1::JOB_STATE_RUNNING});

  // One stream first: what a server with a watcher has.
  std::vector<std::unique_ptr<SseStream>> streams;
  streams.push_back(std::make_unique<SseStream>(http_port, kWatch, WatchBody(job.id())));
  ASSERT_EQ(streams[0]->status(), 200) << streams[0]->body();
  absl::SleepFor(absl::Seconds(1));
  const int64_t threads_one = ProcStatus(server.pid(), "Threads:");
  const int64_t rss_one = ProcStatus(server.pid(), "VmRSS:");
  for (int i = 1; i < kStreams; ++i) {
    streams.push_back(std::make_unique<SseStream>(http_port, kWatch, WatchBody(job.id())));
    ASSERT_EQ(streams.back()->status(), 200) << i << ": " << streams.back()->error();
  }
  absl::SleepFor(absl::Seconds(2));
  const int64_t threads_all = ProcStatus(server.pid(), "Threads:");
  const int64_t rss_all = ProcStatus(server.pid(), "VmRSS:");
  std::cout << "server threads: " << threads_one << " with 1 stream, " << threads_all << " with "
            << kStreams << "; resident memory " << rss_one << " KiB, then " << rss_all << " KiB (+"
            << (rss_all - rss_one) / static_cast<double>(kStreams - 1) << " KiB a stream)\n";
  // No thread per stream: the streams are callbacks on the HTTP thread and
  // gRPC's pool.
  EXPECT_LE(threads_all - threads_one, 8);
  EXPECT_LT(rss_all - rss_one, int64_t{64} << 10);  // under 64 MiB for 199 streams

  ASSERT_TRUE(s_.client->CancelJob(job.id()).ok());
  WaitForState(job.id(), {v1::JOB_STATE_CANCELLED});
  const std::vector<JobEvent> want = Watch(job.id());
  for (int i = 0; i < kStreams; ++i) {
    SseEvent last;
    const std::vector<SseEvent> got = ReadAll(*streams[i], &last);
    ASSERT_EQ(last.event, "stream_end") << i << ": " << streams[i]->error();
    ExpectSameEvents(got, want);
    if (::testing::Test::HasFailure()) {
      ADD_FAILURE() << "stream " << i;
      break;
    }
  }
}

}  // namespace
}  // namespace kaizen
