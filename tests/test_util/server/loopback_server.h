// A real KaizenServer in the test's process on a loopback port, with a
// channel and a client to it: the start-up every end-to-end test shares.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/lib/kaizen_client.h"
#include "kaizen/v1/finetune_service.pb.h"
#include "server/api/server.h"

namespace kaizen::test_util {

// Options for a server on 127.0.0.1 with ports the kernel picks: gRPC and
// metrics on port 0, two gRPC threads, one worker.
api::KaizenServer::Options LoopbackOptions(const std::string& data_dir);

struct LoopbackServer {
  // Declared first so that it is destroyed last, after its clients.
  std::unique_ptr<api::KaizenServer> server;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<client::KaizenClient> client;

  // The Prometheus text of GET /metrics ("" when metrics are off).
  std::string Metrics() const;
};

// Starts the server and connects to it. With `wait_ready`, also waits (up to
// a minute) until it reports ready, i.e. its models are loaded.
absl::StatusOr<LoopbackServer> StartLoopbackServer(api::KaizenServer::Options options,
                                                   bool wait_ready = true);

// The value of one sample of a Prometheus text exposition (`name{labels}`
// exactly as printed, at the start of a line), or -1 when it is absent.
double MetricValue(const std::string& body, const std::string& sample);

// Polls GetJob until job `id` is in one of `states`. Errors: the job ended in
// a state not asked for (FailedPrecondition, with the job's error),
// `timeout` passed (DeadlineExceeded, with the state it was stuck in), or
// GetJob failed.
absl::StatusOr<v1::Job> WaitForJob(client::KaizenClient& client, const std::string& id,
                                   const std::vector<v1::JobState>& states,
                                   absl::Duration timeout = absl::Minutes(4));

// Writes a Fashion-MNIST subset (see WriteFashionSubset) into `dir` and
// uploads it as IDX dataset `name` with `class_names` (one per class).
absl::StatusOr<v1::Dataset> UploadFashionSubset(client::KaizenClient& client,
                                                const std::string& dir, const std::string& name,
                                                const std::vector<int>& classes, int per_class,
                                                const std::vector<std::string>& class_names,
                                                int skip = 0, const std::string& which = "train");

}  // namespace kaizen::test_util
