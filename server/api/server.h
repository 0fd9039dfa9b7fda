// KaizenServer wires the stores, the gRPC services, health, reflection and
// metrics together. main() only parses flags and calls Start(); tests start
// the same server on a loopback port with a temporary data directory.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/api/upload_runner.h"
#include "server/auth/authenticator.h"
#include "server/auth/tls_files.h"
#include "server/common/clock.h"
#include "server/http/http_server.h"
#include "server/jobs/job_manager.h"
#include "server/jobs/model_evaluator.h"
#include "server/metrics/metrics_http_server.h"
#include "server/models/sandboxed_inspection.h"
#include "server/serving/model_server.h"

namespace kaizen::store {
class ModelStore;
}

namespace kaizen::api {

class KaizenServer {
 public:
  static http::HttpServer::Options DefaultHttp() {
    http::HttpServer::Options o;
    o.port = -1;
    return o;
  }
  struct Options {
    // Where the catalogue and every blob live.
    std::string data_dir = "./kaizen-data";
    // The catalogue: empty means the SQLite file <data_dir>/kaizen.db; a
    // postgresql:// URL puts it in PostgreSQL, which several replicas (each
    // with the same data_dir on shared storage) may use at once.
    std::string database;
    // Several replicas: this one's name in job leases (default: the host
    // name, a pod's name in Kubernetes) and how long a lease lasts
    // unrenewed (JobManager::Options).
    std::string replica_id;
    absl::Duration job_lease = absl::Seconds(30);
    // gRPC listen address; port 0 picks a free port (see grpc_port()).
    // Off loopback, a port without TLS and tokens or client certificates
    // needs `insecure` (auth::ChooseListenHost).
    std::string grpc_address = "127.0.0.1:50051";
    // Prometheus /metrics endpoint; port 0 picks a free one, -1 disables it.
    std::string metrics_host = "127.0.0.1";
    bool insecure = false;
    int metrics_port = 9464;
    // Fine-tuning worker threads (the training engine's pool).
    int workers = 1;
    // LibTorch intra-op threads; 0 means one per core.
    int threads = 0;
    // See JobManager::Options::max_job_attempts.
    int max_job_attempts = 3;
    // See JobManager::Options::max_exports.
    int max_exports = 64;
    // See JobManager::Options::max_export_list_entries.
    int64_t max_export_list_entries = 10'000;
    // Events a WatchJob stream may fall behind before it ends with
    // RESOURCE_EXHAUSTED (FineTuneServiceImpl::Options); not a flag, tests
    // lower it.
    size_t max_watcher_backlog = 10000;
    // A queued or resumed job of higher priority pauses the lowest-priority
    // running job when every worker is busy (JobManager::Options::preempt).
    bool preempt = false;
    // Largest dataset upload, all parts together.
    int64_t max_upload_bytes = int64_t{4} << 30;
    // Largest TorchScript upload.
    int64_t max_model_bytes = int64_t{2} << 30;
    // EvaluateModel and jobs' test datasets: evaluations at once and the
    // largest dataset one reads (its device is the first GPU, else the CPU).
    jobs::ModelEvaluator::Options evaluation;
    // Most images in one uploaded dataset.
    int64_t max_dataset_examples = 5'000'000;
    // Text dataset uploads: most bytes in one row.
    int64_t max_text_row_bytes = int64_t{1} << 20;
    // Most decoded pixel bytes a job or an evaluation holds a dataset in
    // memory as (a stored JPEG folder decodes to about 10x its size).
    int64_t max_loaded_dataset_bytes = int64_t{16} << 30;
    // How a job reads its record-file datasets (--max_job_image_memory_mb,
    // --loader_threads, --prefetch_batches).
    jobs::JobDataOptions job_data;
    // Largest image accepted, width * height.
    int64_t max_image_pixels = 25'000'000;
    // Most scans in one progressive JPEG (uploads and Predict).
    int max_jpeg_scans = 100;
    // Failed / ignored / duplicate files listed in a dataset report.
    int max_report_files = 100;
    // The stored-resolution cap of image-folder uploads (0: none) and the
    // JPEG quality it re-encodes at (DatasetStore::Options).
    int32_t max_stored_shorter_side = 0;
    int stored_jpeg_quality = 90;
    // Decoded bytes one dataset upload may produce (decompression layers and
    // pixels); the Predict budget is serving.decode_budget.
    datasets::DecodeBudget::Options upload_decode_budget;
    // gRPC per-message receive limit (upload chunks, Predict batches).
    int max_message_bytes = 16 << 20;
    // How uploaded models are inspected (sandbox limits, operator
    // allow-list); its max_image_pixels and serving_batch_size follow the
    // settings here.
    models::SandboxOptions model_sandbox;
    // Text jobs' tokenizer training (kaizen-tokenizer-trainer).
    jobs::TokenizerSandbox tokenizer_sandbox;
    // Data-parallel jobs' worker processes (kaizen-worker); an empty
    // scratch_dir means <data_dir>/tmp.
    jobs::DataParallelOptions data_parallel;
    // Upload streams: how many at once, idle timeout, deadline.
    UploadRunner::Options uploads;
    // Most threads gRPC's synchronous server may run (a grpc::ResourceQuota),
    // so that a flood of calls cannot make it start threads without bound;
    // calls beyond them wait or get RESOURCE_EXHAUSTED. Raised to 8 at least.
    int grpc_max_threads = 128;
    // /metrics: whole-request deadline and connections served at once.
    metrics::MetricsHttpServer::Options metrics_http;
    // Serving: batching, preloading, per-model configs. Its
    // max_image_pixels and max_jpeg_scans follow the ones above.
    serving::ModelServer::Options serving;
    // Bearer tokens (auth::Authenticator); empty: every call allowed.
    std::string tokens_file;
    // TLS for the gRPC port: certificate and key, and the CA of client
    // certificates for mutual TLS (then a client certificate is required).
    // Empty cert: plaintext.
    auth::TlsFiles tls;
    // How often gRPC re-reads the TLS files, so that rotated certificates
    // are picked up without a restart.
    int tls_reload_seconds = 60;
    // gRPC server reflection on the gRPC port.
    bool reflection = false;
    // A second, plaintext listener on the gRPC host serving only
    // grpc.health.v1.Health, for probes that cannot speak TLS (kubelet's);
    // 0 picks a free port, -1 disables it.
    int health_port = -1;
    // On Shutdown, how long health reports NOT_SERVING while calls are still
    // served, so that load balancers and probes stop sending traffic first.
    absl::Duration drain_delay = absl::ZeroDuration();
    // The JSON API over HTTP (server/http/api_handler.h): `http.port` -1 (the
    // default) turns it off, 0 picks a free port (see http_port()). Its host
    // is checked like the gRPC host (loopback unless tokens, or insecure).
    http::HttpServer::Options http = DefaultHttp();
    // Deadline of each API call made over HTTP.
    absl::Duration http_call_timeout = absl::Minutes(10);
    // The built web console (console/dist), served at "/" on the HTTP port
    // (server/http/console_assets.h); without one "/" says how to build it.
    std::string console_dir;
    // Times the drain delay; tests give a FakeClock and end the drain when
    // they have looked at the draining server.
    common::Clock* drain_clock = common::Clock::Real();
  };

  // Opens storage and starts listening. Health reports NOT_SERVING until the
  // stored models are loaded (in the background), then SERVING.
  static absl::StatusOr<std::unique_ptr<KaizenServer>> Start(Options options);
  ~KaizenServer();

  int grpc_port() const { return grpc_port_; }
  // The JSON API's HTTP port, or 0 without one.
  int http_port() const;
  // The health-only port, or 0 without one.
  int health_port() const { return health_port_; }
  int metrics_port() const;
  const Options& options() const { return options_; }

  // True once the stored models are loaded and health reports SERVING.
  bool ready() const;
  // The model catalogue, for tests and embedders (e.g. to add a version).
  store::ModelStore* model_store();

  // Reports NOT_SERVING, keeps serving for drain_delay, then stops accepting
  // calls and waits up to `grace` for calls in flight before cancelling them.
  void Shutdown(absl::Duration grace);
  // Blocks until Shutdown() completes.
  void Wait();

  // Re-reads the tokens file (SIGHUP); on an error the tokens in force stay
  // and the error is returned. Connections and calls are not touched.
  absl::Status ReloadTokens();

 private:
  struct State;
  explicit KaizenServer(Options options);

  Options options_;
  std::unique_ptr<State> state_;
  void SetHealth(bool serving);

  // The steps of Start(), in order. `threads` is the intra-op thread count.
  // Checks where and how to listen, and sets up TLS and tokens.
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> SetUpSecurity();
  // The data directory, catalogue, metrics and stores; returns how many
  // orphan files the sweep removed.
  absl::StatusOr<int> OpenStores();
  // Whether other replicas may share the catalogue (a PostgreSQL database).
  bool shared_database() const;
  // Options::replica_id, or <host name>-<pid>.
  std::string ReplicaId() const;
  absl::Status StartServing(int threads);
  void StartJobs(int threads);
  void CreateServices();
  absl::Status Listen(std::shared_ptr<grpc::ServerCredentials> credentials);
  absl::Status ListenForHealth();
  absl::Status ListenHttp();
  // Job metrics, the job workers, TLS rotation and the ready thread.
  absl::Status StartBackground();

  // Orders health changes between the ready thread and Shutdown().
  absl::Mutex health_mu_;
  // Waited on (with nothing to wait for) through the drain delay.
  absl::Mutex drain_mu_;
  int grpc_port_ = 0;
  int health_port_ = 0;
};

}  // namespace kaizen::api
