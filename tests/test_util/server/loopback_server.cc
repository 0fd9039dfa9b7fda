#include "tests/test_util/server/loopback_server.h"

#include <grpcpp/create_channel.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/common/job_state.h"
#include "tests/test_util/fashion_mnist.h"
#include "tests/test_util/http_get.h"
#include "tests/test_util/wait.h"

namespace kaizen::test_util {

api::KaizenServer::Options LoopbackOptions(const std::string& data_dir) {
  api::KaizenServer::Options o;
  o.data_dir = data_dir;
  o.grpc_address = "127.0.0.1:0";
  o.metrics_host = "127.0.0.1";
  o.metrics_port = 0;
  o.threads = 2;
  o.workers = 1;
  return o;
}

std::string LoopbackServer::Metrics() const {
  const int port = server->metrics_port();
  return port > 0 ? HttpGet(port, "/metrics") : "";
}

absl::StatusOr<LoopbackServer> StartLoopbackServer(api::KaizenServer::Options options,
                                                   bool wait_ready) {
  LoopbackServer s;
  auto server = api::KaizenServer::Start(std::move(options));
  if (!server.ok()) return server.status();
  s.server = *std::move(server);
  s.channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", s.server->grpc_port()),
                                  grpc::InsecureChannelCredentials());
  s.client = std::make_unique<client::KaizenClient>(s.channel);
  if (wait_ready && !WaitUntil([&] { return s.server->ready(); }, absl::Minutes(1))) {
    return absl::DeadlineExceededError("the server did not become ready in a minute");
  }
  return s;
}

double MetricValue(const std::string& body, const std::string& sample) {
  // At the start of a line, so that "# HELP name ..." and longer names with
  // the same prefix do not match.
  const std::string text = "\n" + body, line_start = "\n" + sample + " ";
  const size_t at = text.find(line_start);
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + line_start.size()));
}

absl::StatusOr<v1::Job> WaitForJob(client::KaizenClient& client, const std::string& id,
                                   const std::vector<v1::JobState>& states,
                                   absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    absl::StatusOr<v1::Job> job = client.GetJob(id);
    if (!job.ok()) return job.status();
    if (std::find(states.begin(), states.end(), job->state()) != states.end()) return job;
    if (common::IsTerminal(job->state())) {
      return absl::FailedPreconditionError(absl::StrCat(
          "job ", id, " ended ", v1::JobState_Name(job->state()), ": ", job->error()));
    }
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat("job ", id, " still ",
                                                      v1::JobState_Name(job->state()), " after ",
                                                      absl::FormatDuration(timeout)));
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
}

absl::StatusOr<v1::Dataset> UploadFashionSubset(client::KaizenClient& client,
                                                const std::string& dir, const std::string& name,
                                                const std::vector<int>& classes, int per_class,
                                                const std::vector<std::string>& class_names,
                                                int skip, const std::string& which) {
  const std::string images = absl::StrCat(dir, "/", name, "-images"),
                    labels = absl::StrCat(dir, "/", name, "-labels");
  WriteFashionSubset(which, classes, per_class, skip, images, labels);
  v1::UploadDatasetHeader h;
  h.set_name(name);
  h.set_format(v1::DATASET_FORMAT_IDX);
  for (const std::string& c : class_names) h.add_class_names(c);
  return client.UploadDataset(h, {images, labels});
}

}  // namespace kaizen::test_util
