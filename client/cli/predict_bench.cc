#include "client/cli/predict_bench.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "server/common/logging.h"

namespace kaizen::cli {
namespace {

using Clock = std::chrono::steady_clock;

double Milliseconds(Clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

double ProcessCpuSeconds() {
  struct rusage usage;
  if (::getrusage(RUSAGE_SELF, &usage) != 0) return 0;
  auto seconds = [](const struct timeval& tv) {
    return static_cast<double>(tv.tv_sec) + tv.tv_usec / 1e6;
  };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

// Nearest-rank percentile of ascending `sorted`; 0 when empty.
double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const auto rank = static_cast<size_t>(std::ceil(p / 100.0 * sorted.size()));
  return sorted[std::min(sorted.size(), std::max<size_t>(rank, 1)) - 1];
}

class LoadRun;

// One call in flight at a time. Only its own callbacks touch it, one after
// the other (gRPC orders a call's start before its callback), so it needs no
// lock; the run reads it after every slot has finished.
struct Slot {
  LoadRun* run = nullptr;
  kaizen::v1::PredictRequest request;
  kaizen::v1::PredictResponse response;
  std::unique_ptr<grpc::ClientContext> context;
  Clock::time_point sent;
  std::vector<double> latencies_ms;
  std::map<std::string, int64_t> errors;
  absl::StatusCode first_error_code = absl::StatusCode::kOk;
  std::string first_error;
  std::map<int64_t, int64_t> versions;
  int64_t last_version = 0;
  bool monotonic = true;
};

// The state of one PredictBench::Run.
class LoadRun {
 public:
  LoadRun(client::KaizenClient* client, const kaizen::v1::PredictRequest& request,
          const PredictBench::Options& options)
      : client_(client), options_(options), slots_(options.concurrency) {
    for (Slot& slot : slots_) {
      slot.run = this;
      slot.request = request;
    }
  }

  PredictBench::Result Run() {
    const double cpu_start = ProcessCpuSeconds();
    const Clock::time_point start = Clock::now();
    measure_start_ = start + absl::ToChronoNanoseconds(options_.warmup);
    measure_end_ = measure_start_ + absl::ToChronoNanoseconds(options_.duration);
    {
      absl::MutexLock lock(&mu_);
      active_ = static_cast<int>(slots_.size());
    }
    for (Slot& slot : slots_) Send(&slot);
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](int* active) { return *active == 0; }, &active_));
    }
    PredictBench::Result result = Summarize();
    result.wall_seconds = Seconds(Clock::now() - start);
    result.client_cpu_seconds = ProcessCpuSeconds() - cpu_start;
    return result;
  }

 private:
  void Send(Slot* slot) {
    // The previous call's context may be destroyed here, inside that call's
    // callback (see KaizenClient::PredictAsync).
    slot->context = std::make_unique<grpc::ClientContext>();
    slot->response.Clear();
    slot->sent = Clock::now();
    client_->PredictAsync(
        slot->context.get(), &slot->request, &slot->response,
        [this, slot](absl::Status status) { OnDone(slot, status); }, options_.timeout);
  }

  void OnDone(Slot* slot, const absl::Status& status) {
    const Clock::time_point now = Clock::now();
    if (status.ok()) {
      if (now >= measure_start_ && now < measure_end_) {
        slot->latencies_ms.push_back(Milliseconds(now - slot->sent));
      }
      const int64_t version = slot->response.version();
      ++slot->versions[version];
      if (version < slot->last_version) slot->monotonic = false;
      slot->last_version = std::max(slot->last_version, version);
    } else {
      ++slot->errors[absl::StatusCodeToString(status.code())];
      if (slot->first_error.empty()) {
        slot->first_error_code = status.code();
        slot->first_error =
            absl::StrCat(absl::StatusCodeToString(status.code()), ": ", status.message());
      }
    }
    if (now < measure_end_) {
      Send(slot);
      return;
    }
    absl::MutexLock lock(&mu_);
    --active_;
  }

  PredictBench::Result Summarize() const {
    PredictBench::Result r;
    r.concurrency = options_.concurrency;
    r.inputs_per_request = slots_.empty() ? 0 : slots_[0].request.inputs_size();
    r.warmup_seconds = absl::ToDoubleSeconds(options_.warmup);
    r.duration_seconds = absl::ToDoubleSeconds(options_.duration);
    std::vector<double> latencies;
    for (const Slot& slot : slots_) {
      latencies.insert(latencies.end(), slot.latencies_ms.begin(), slot.latencies_ms.end());
      for (const auto& [code, count] : slot.errors) {
        r.errors[code] += count;
        r.failed_requests += count;
      }
      if (r.first_error.empty()) {
        r.first_error = slot.first_error;
        r.first_error_code = slot.first_error_code;
      }
      for (const auto& [version, count] : slot.versions) {
        r.versions[version] += count;
      }
      r.versions_monotonic = r.versions_monotonic && slot.monotonic;
    }
    std::sort(latencies.begin(), latencies.end());
    r.requests = static_cast<int64_t>(latencies.size());
    r.inputs = r.requests * r.inputs_per_request;
    if (r.duration_seconds > 0) {
      r.requests_per_second = r.requests / r.duration_seconds;
      r.inputs_per_second = r.inputs / r.duration_seconds;
    }
    r.p50_ms = Percentile(latencies, 50);
    r.p95_ms = Percentile(latencies, 95);
    r.p99_ms = Percentile(latencies, 99);
    r.max_ms = latencies.empty() ? 0 : latencies.back();
    double sum = 0;
    for (double ms : latencies) sum += ms;
    r.mean_ms = latencies.empty() ? 0 : sum / latencies.size();
    return r;
  }

  client::KaizenClient* const client_;
  const PredictBench::Options options_;
  std::vector<Slot> slots_;
  // Set before the first call starts, read-only afterwards.
  Clock::time_point measure_start_;
  Clock::time_point measure_end_;
  absl::Mutex mu_;
  int active_ ABSL_GUARDED_BY(mu_) = 0;
};

// JSON has no NaN or infinities: they are null (e.g. latencies of a run
// that completed no request).
std::string JsonNumber(double value) {
  return std::isfinite(value) ? absl::StrFormat("%.3f", value) : "null";
}

std::string VersionRange(const PredictBench::Result& r) {
  if (r.versions.empty()) return "none";
  const int64_t lo = r.versions.begin()->first;
  const int64_t hi = r.versions.rbegin()->first;
  return lo == hi ? absl::StrCat(lo) : absl::StrCat(lo, "..", hi);
}

}  // namespace

PredictBench::PredictBench(client::KaizenClient* client, Options options)
    : client_(client), options_(options) {}

PredictBench::Result PredictBench::Run(const kaizen::v1::PredictRequest& request) {
  LoadRun run(client_, request, options_);
  return run.Run();
}

std::string PredictBenchJson(const PredictBench::Result& r, const std::string& model, bool batching,
                             const std::string& input) {
  std::string errors = absl::StrJoin(r.errors, ", ", [](std::string* out, const auto& entry) {
    absl::StrAppend(out, common::JsonQuote(entry.first), ": ", entry.second);
  });
  std::string counts = absl::StrJoin(r.versions, ", ", [](std::string* out, const auto& entry) {
    absl::StrAppend(out, "\"", entry.first, "\": ", entry.second);
  });
  std::string out = "{\n";
  absl::StrAppend(&out, "  \"model\": ", common::JsonQuote(model), ",\n");
  absl::StrAppend(&out, "  \"batching\": ", batching ? "true" : "false", ",\n");
  absl::StrAppend(&out, "  \"input\": ", common::JsonQuote(input), ",\n");
  absl::StrAppend(&out, "  \"concurrency\": ", r.concurrency, ",\n");
  absl::StrAppend(&out, "  \"inputs_per_request\": ", r.inputs_per_request, ",\n");
  absl::StrAppend(&out, "  \"warmup_seconds\": ", JsonNumber(r.warmup_seconds), ",\n");
  absl::StrAppend(&out, "  \"duration_seconds\": ", JsonNumber(r.duration_seconds), ",\n");
  absl::StrAppend(&out, "  \"requests\": ", r.requests, ",\n");
  absl::StrAppend(&out, "  \"inputs\": ", r.inputs, ",\n");
  absl::StrAppend(&out, "  \"requests_per_second\": ", JsonNumber(r.requests_per_second), ",\n");
  absl::StrAppend(&out, "  \"inputs_per_second\": ", JsonNumber(r.inputs_per_second), ",\n");
  absl::StrAppend(&out, "  \"latency_ms\": {\"p50\": ", JsonNumber(r.p50_ms),
                  ", \"p95\": ", JsonNumber(r.p95_ms), ", \"p99\": ", JsonNumber(r.p99_ms),
                  ", \"max\": ", JsonNumber(r.max_ms), ", \"mean\": ", JsonNumber(r.mean_ms),
                  "},\n");
  absl::StrAppend(&out, "  \"failed_requests\": ", r.failed_requests, ",\n");
  absl::StrAppend(&out, "  \"errors\": {", errors, "},\n");
  absl::StrAppend(&out, "  \"first_error\": ", common::JsonQuote(r.first_error), ",\n");
  absl::StrAppend(&out,
                  "  \"versions\": {\"min\": ", r.versions.empty() ? 0 : r.versions.begin()->first,
                  ", \"max\": ", r.versions.empty() ? 0 : r.versions.rbegin()->first,
                  ", \"monotonic\": ", r.versions_monotonic ? "true" : "false", ", \"counts\": {",
                  counts, "}},\n");
  absl::StrAppend(&out, "  \"client_cpu_seconds\": ", JsonNumber(r.client_cpu_seconds), ",\n");
  absl::StrAppend(&out, "  \"wall_seconds\": ", JsonNumber(r.wall_seconds), "\n}\n");
  return out;
}

std::string PredictBenchText(const PredictBench::Result& r, const std::string& model, bool batching,
                             const std::string& input) {
  std::string out;
  absl::StrAppendFormat(&out,
                        "predict %s: %s, batching %s, concurrency %d, %d input%s per request\n"
                        "  measured %.1f s after a %.1f s warm-up\n",
                        model, input, batching ? "on" : "off", r.concurrency, r.inputs_per_request,
                        r.inputs_per_request == 1 ? "" : "s", r.duration_seconds, r.warmup_seconds);
  absl::StrAppendFormat(&out, "  %-12s %.1f (%d in the window)\n", "requests/s",
                        r.requests_per_second, r.requests);
  absl::StrAppendFormat(&out, "  %-12s %.1f\n", "inputs/s", r.inputs_per_second);
  absl::StrAppendFormat(&out, "  %-12s p50 %.2f  p95 %.2f  p99 %.2f  max %.2f  mean %.2f\n",
                        "latency ms", r.p50_ms, r.p95_ms, r.p99_ms, r.max_ms, r.mean_ms);
  std::string errors = "none";
  if (!r.errors.empty()) {
    errors = absl::StrJoin(r.errors, ", ", [](std::string* o, const auto& entry) {
      absl::StrAppend(o, entry.first, " ", entry.second);
    });
  }
  absl::StrAppendFormat(&out, "  %-12s %s\n", "errors", errors);
  if (!r.first_error.empty()) {
    absl::StrAppendFormat(&out, "  %-12s %s\n", "first error", r.first_error);
  }
  absl::StrAppendFormat(&out, "  %-12s %s, %s\n", "versions", VersionRange(r),
                        r.versions_monotonic ? "only forward for every client"
                                             : "some client saw a version go BACKWARDS");
  const double cores = r.wall_seconds > 0 ? r.client_cpu_seconds / r.wall_seconds : 0;
  absl::StrAppendFormat(&out, "  %-12s %.2f s over %.1f s (%.2f cores)\n", "client CPU",
                        r.client_cpu_seconds, r.wall_seconds, cores);
  return out;
}

}  // namespace kaizen::cli
