// PredictBench: a closed-loop load generator for InferenceService/Predict,
// behind `kaizenctl bench predict`. `concurrency` calls stay in flight on the
// client's one channel; each is a slot whose completion starts its next call,
// on gRPC's callback API, so the client holds no thread per call and costs
// little CPU next to a server on the same cores. Latency is measured per call
// with a steady clock; only calls that end inside the measured window count
// towards throughput and latency, while errors and answering versions are
// counted over the whole run, warm-up included.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "client/lib/kaizen_client.h"
#include "kaizen/v1/inference_service.pb.h"

namespace kaizen::cli {

class PredictBench {
 public:
  struct Options {
    // Calls in flight at every moment.
    int concurrency = 1;
    // Calls before this much time has passed are not measured.
    absl::Duration warmup = absl::Seconds(2);
    // The measured window that follows the warm-up.
    absl::Duration duration = absl::Seconds(10);
    // Deadline of each call.
    absl::Duration timeout = absl::Seconds(60);
  };

  struct Result {
    int concurrency = 0;
    int inputs_per_request = 0;
    double warmup_seconds = 0;
    double duration_seconds = 0;
    // Successful calls that ended in the measured window, and their inputs.
    int64_t requests = 0;
    int64_t inputs = 0;
    double requests_per_second = 0;
    double inputs_per_second = 0;
    // Latency of those calls, milliseconds.
    double p50_ms = 0;
    double p95_ms = 0;
    double p99_ms = 0;
    double max_ms = 0;
    double mean_ms = 0;
    // Failed calls over the whole run by status code name
    // ("RESOURCE_EXHAUSTED"), their total, and the code and message of one
    // of them (the first seen by the lowest-numbered slot that failed).
    std::map<std::string, int64_t> errors;
    int64_t failed_requests = 0;
    absl::StatusCode first_error_code = absl::StatusCode::kOk;
    std::string first_error;
    // Versions that answered successful calls over the whole run, with their
    // counts, and whether every slot saw the version only stay or grow.
    std::map<int64_t, int64_t> versions;
    bool versions_monotonic = true;
    // CPU time of this process (user + system) during the run, and the run's
    // wall time, drain included.
    double client_cpu_seconds = 0;
    double wall_seconds = 0;
  };

  // `client` must outlive this object.
  PredictBench(client::KaizenClient* client, Options options);

  // Sends `request` (each slot its own copy) until warm-up and duration have
  // passed, then waits for the calls in flight to end. Never fails: failed
  // calls are counted in the result.
  Result Run(const kaizen::v1::PredictRequest& request);

 private:
  client::KaizenClient* client_;
  Options options_;
};

// The result as one JSON object (snake_case keys; see the usage text).
std::string PredictBenchJson(const PredictBench::Result& result, const std::string& model,
                             bool batching, const std::string& input);
// The result for people: a few aligned lines.
std::string PredictBenchText(const PredictBench::Result& result, const std::string& model,
                             bool batching, const std::string& input);

}  // namespace kaizen::cli
