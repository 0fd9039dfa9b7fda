// kaizen-server: flags, signal handling and the server's lifetime. Wiring
// lives in server/api/server.cc.
#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "server/api/server.h"
#include "server/auth/listen_policy.h"
#include "server/common/atomic_file.h"
#include "server/common/logging.h"
#include "server/common/status_macros.h"
#include "server/sandbox/child_limits.h"
#include "server/sandbox/subprocess.h"
#include "server/store/database.h"
#include "server/store/postgres_db.h"

ABSL_FLAG(std::string, data_dir, "./kaizen-data", "Directory for the catalogue and all blobs.");
ABSL_FLAG(std::string, database, "",
          "The catalogue: empty = the SQLite file <data_dir>/kaizen.db (one server), or a libpq "
          "URL postgresql://USER@HOST:PORT/DB for several replicas sharing one PostgreSQL "
          "database and one --data_dir on shared storage. Default from $KAIZEN_DATABASE_URL; "
          "keep the password out of the URL (libpq reads $PGPASSWORD or ~/.pgpass).");
ABSL_FLAG(std::string, replica_id, "",
          "This replica's name in job leases (empty: <host name>-<pid>).");
ABSL_FLAG(int, job_lease_seconds, 30,
          "With --database=postgresql://...: a job whose replica has not renewed its lease for "
          "this long (it died) is taken over by another replica and resumed from its last "
          "checkpoint, and a version it was loading for serving is quarantined. Leases are "
          "renewed every third of this.");
ABSL_FLAG(std::string, host, "",
          "Address to listen on (gRPC, health and metrics). Empty: 127.0.0.1 when neither TLS "
          "nor tokens are configured, else 0.0.0.0.");
ABSL_FLAG(bool, insecure, false,
          "Allow a non-loopback --host with neither TLS nor tokens (anyone who reaches the port "
          "may call every RPC).");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain of the gRPC port; enables TLS.");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert.");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA bundle for client certificates: mutual TLS, a client certificate signed by it "
          "is required.");
ABSL_FLAG(int, tls_reload_seconds, 60,
          "How often the TLS files are re-read, so rotated certificates apply without a restart.");
ABSL_FLAG(std::string, tokens_file, "",
          "Bearer tokens, one `NAME ROLE sha256:HEX` per line (kaizenctl tokens add writes "
          "them); every call but health then needs one. Re-read on SIGHUP.");
ABSL_FLAG(bool, reflection, false, "Serve gRPC server reflection on the gRPC port.");
ABSL_FLAG(int, health_port, -1,
          "A plaintext listener serving only grpc.health.v1.Health, for probes that cannot "
          "speak TLS (kubelet's gRPC probes); -1 disables it.");
ABSL_FLAG(int, grpc_port, 50051, "gRPC port; 0 picks a free one.");
ABSL_FLAG(int, metrics_port, 9464, "Prometheus /metrics port; -1 disables it.");
ABSL_FLAG(int, workers, 1, "Fine-tuning worker threads.");
ABSL_FLAG(int, max_job_attempts, 3,
          "A job found running at start-up (the server died while it ran) after this many "
          "attempts ends FAILED instead of being requeued.");
ABSL_FLAG(int, max_exports, 64,
          "Most job exports (ExportJob folders) the data directory may hold; ExportJob is refused "
          "with RESOURCE_EXHAUSTED at this many until DeleteExport removes one.");
ABSL_FLAG(int64_t, max_export_list_entries, 10'000,
          "Most entries of one export folder ListExports walks for its size (what the pods "
          "wrote under out/ may be huge); beyond, the size is marked incomplete.");
ABSL_FLAG(bool, preempt, false,
          "When every worker is busy, a job queued or resumed with a strictly higher priority "
          "than the lowest-priority running job pauses that job (it checkpoints and goes back "
          "to the queue at its place, to continue once a worker is free).");
ABSL_FLAG(int, threads, 0, "LibTorch intra-op threads; 0 means one per core.");
ABSL_FLAG(int64_t, max_upload_mb, 4096, "Largest dataset upload, in MiB.");
ABSL_FLAG(int64_t, max_model_mb, 2048, "Largest model upload, in MiB.");
ABSL_FLAG(int64_t, max_image_pixels, 25'000'000, "Largest image accepted (width * height).");
ABSL_FLAG(int64_t, max_dataset_examples, 5'000'000,
          "Most images in one uploaded dataset; for an image folder, most image files, "
          "decodable or not (each costs a few hundred bytes until the upload ends); for a text "
          "table, most usable rows.");
ABSL_FLAG(int64_t, max_text_row_bytes, 1 << 20,
          "Text dataset uploads: most bytes in one row (a CSV/TSV record, a JSON line); longer "
          "rows are kept out and listed in the report with their line numbers. At most 64 MiB.");
ABSL_FLAG(int64_t, max_dataset_memory_mb, 16384,
          "Most decoded pixels, in MiB, an INCREMENTAL or tuning job or an evaluation holds a "
          "stored dataset in memory as; a larger one fails them with RESOURCE_EXHAUSTED (other "
          "jobs stream what exceeds --max_job_image_memory_mb).");
ABSL_FLAG(int64_t, max_job_image_memory_mb, 2048,
          "Most MiB of images, converted to the model's input size, a fine-tuning job holds in "
          "memory (training and validation images together); a larger dataset streams from its "
          "record file every epoch, so a job's memory does not grow with its dataset. "
          "STRATEGY_INCREMENTAL and tuning trials hold their data in memory.");
ABSL_FLAG(int, loader_threads, 2,
          "Threads that decode a streamed dataset's images for each job, apart from the "
          "training threads.");
ABSL_FLAG(bool, channels_last_training, false,
          "Train in the channels_last memory format: faster convolutions (1.09x-1.38x measured), "
          "but a resumed job no longer repeats an uninterrupted one to the bit.");
ABSL_FLAG(int64_t, max_prefix_cache_mb, 1024,
          "FINE_TUNE without augmentation computes the frozen layers below the first trainable "
          "block once per image and runs only the layers above at each step; their outputs for "
          "a job's images may take this many MiB (more: every step runs the whole model). 0 "
          "turns the cache off.");
ABSL_FLAG(int, prefetch_batches, 4,
          "Batches a streamed dataset is decoded ahead of training, at most.");
ABSL_FLAG(std::string, model_inspector, "",
          "The kaizen-model-inspector binary that checks uploaded models in a sandbox; "
          "empty = beside kaizen-server.");
ABSL_FLAG(int64_t, model_inspect_memory_mb, 4096,
          "Address-space limit of the sandboxed model inspector, in MiB.");
ABSL_FLAG(int64_t, model_inspect_cpu_seconds, 120,
          "CPU-time limit of the sandboxed model inspector.");
ABSL_FLAG(int64_t, model_inspect_timeout_seconds, 180,
          "Wall-clock limit of one model inspection; the inspector is killed after it.");
ABSL_FLAG(std::string, tokenizer_trainer, "",
          "The kaizen-tokenizer-trainer binary in which text jobs train their SentencePiece "
          "tokenizers, in a sandbox; empty = beside kaizen-server.");
ABSL_FLAG(int64_t, tokenizer_train_memory_mb, 4096,
          "Address-space limit of a text job's sandboxed tokenizer training, in MiB.");
ABSL_FLAG(int64_t, tokenizer_train_cpu_seconds, 600,
          "CPU-time limit of a text job's sandboxed tokenizer training.");
ABSL_FLAG(int64_t, tokenizer_train_timeout_seconds, 900,
          "Wall-clock limit of a text job's tokenizer training; the trainer is killed after it "
          "and the job fails.");
ABSL_FLAG(std::string, worker_binary, "",
          "The kaizen-worker binary that runs ranks 1..W-1 of data-parallel jobs; empty = "
          "beside kaizen-server.");
ABSL_FLAG(int, default_world_size, 1,
          "Processes per job for jobs that ask for none (world_size 0) and can run data "
          "parallel (FEATURE_EXTRACTION, FINE_TUNE, FULL, SCRATCH, DISTILL and INCREMENTAL, "
          "on images or text, without tuning, on the CPU).");
ABSL_FLAG(int, max_world_size, 8, "The most processes one data-parallel job may ask for.");
ABSL_FLAG(int64_t, scratch_reserve_mb, 512,
          "A data-parallel job writes its workers' files into the data directory's tmp/ (the "
          "models; an INCREMENTAL job's images, a text job's token ids); it fails "
          "(RESOURCE_EXHAUSTED) rather than leave less free there than this, or trains in one "
          "process where only --default_world_size made it a group.");
ABSL_FLAG(int64_t, distributed_timeout_seconds, 300,
          "A data-parallel job's ranks wait this long for the group to form, for any "
          "collective, and for the workers to exit; a rank that fails ends the job within it.");
ABSL_FLAG(bool, dumpable, false,
          "Leave the server dumpable (core dumps, a debugger of the same user). Off: the "
          "sandboxed helpers, which run as the same user, cannot read its memory or "
          "environment through /proc.");
ABSL_FLAG(bool, require_landlock, false,
          "Refuse to start on a kernel without Landlock (Linux 5.13+, enabled at boot). Without "
          "it, the sandboxed helpers (model inspection, tokenizer training) can read every file "
          "the server's user can; with it, only the system's libraries and their own input.");
ABSL_FLAG(std::vector<std::string>, model_extra_operators, {},
          "TorchScript operators accepted in uploaded models beyond the built-in allow-list "
          "(comma-separated, e.g. aten::erfinv).");
ABSL_FLAG(int64_t, model_max_members, 100'000, "Most ZIP members in an uploaded model.");
ABSL_FLAG(int64_t, model_max_unpacked_mb, 8192,
          "Largest declared unpacked size of an uploaded model's members, in MiB.");
ABSL_FLAG(int64_t, model_max_pickle_mb, 64,
          "Largest pickle (data.pkl, constants.pkl, debug_pkl) in an uploaded model, in MiB.");
ABSL_FLAG(int32_t, model_max_pickle_depth, 200,
          "Deepest container nesting in an uploaded model's pickles.");
ABSL_FLAG(int, max_jpeg_scans, 100,
          "Most scans in one progressive JPEG (uploads and Predict); each scan is another pass "
          "over the image.");
ABSL_FLAG(int32_t, max_stored_shorter_side, 0,
          "Store image-folder images whose shorter side is longer than this downscaled to it "
          "(area averaging; JPEGs re-encoded as JPEG, PNGs as PNG), to save disk and decoding "
          "when the originals are much larger than any model's input; an upload's header may set "
          "its own. 0 stores every image as uploaded.");
ABSL_FLAG(int, stored_jpeg_quality, 90,
          "Quality (1-100) of the JPEGs --max_stored_shorter_side re-encodes.");
ABSL_FLAG(int64_t, max_decoded_mb, 65536,
          "Most bytes one dataset upload may decode (decompressed layers and pixels), in MiB. "
          "Image folders stream into the store, so this bounds decoding time, not memory; an "
          "IDX upload, held in memory while it is ingested, is also held to "
          "--max_dataset_memory_mb.");
ABSL_FLAG(int64_t, max_predict_decoded_mb, 1024,
          "Most bytes the images of one Predict / ModelInfer request may decode, in MiB.");
ABSL_FLAG(double, max_decode_ratio, 200,
          "Most decoded bytes per byte received, for uploads and Predict requests, beyond "
          "--decode_ratio_allowance_mb.");
ABSL_FLAG(int64_t, decode_ratio_allowance_mb, 64,
          "Decoded MiB always allowed to an upload or request, whatever --max_decode_ratio says.");
ABSL_FLAG(int, max_report_files, 100,
          "Failed, ignored and duplicate files listed in a dataset report (all are counted).");
ABSL_FLAG(int, max_concurrent_evaluations, 1,
          "EvaluateModel calls running at once; more get RESOURCE_EXHAUSTED (jobs' test-set "
          "evaluations wait for their turn).");
ABSL_FLAG(int64_t, max_evaluation_examples, 200'000,
          "Largest dataset (examples) that EvaluateModel or a job's test_dataset evaluates.");
ABSL_FLAG(int, max_concurrent_uploads, 8,
          "Dataset and model uploads in progress at once; more get RESOURCE_EXHAUSTED.");
ABSL_FLAG(double, upload_idle_timeout_seconds, 60,
          "An upload stream with no message for this long ends with DEADLINE_EXCEEDED and "
          "leaves nothing behind.");
ABSL_FLAG(double, upload_deadline_seconds, 3600,
          "An upload stream still sending after this long ends with DEADLINE_EXCEEDED.");
ABSL_FLAG(int, grpc_max_threads, 128,
          "Most threads gRPC's synchronous server runs (grpc::ResourceQuota); at least 8.");
ABSL_FLAG(double, metrics_request_timeout_seconds, 5,
          "A /metrics connection must send its request and take the answer within this long.");
ABSL_FLAG(int, metrics_max_connections, 16,
          "/metrics connections served at once; more wait in the listen backlog.");
ABSL_FLAG(int, shutdown_grace_seconds, 30, "How long SIGTERM waits for calls in flight.");
ABSL_FLAG(int, http_port, -1,
          "Port of the JSON API over HTTP (POST /api/<package.Service>/<Method>), on the gRPC "
          "host; -1 = off, 0 = a free port.");
ABSL_FLAG(int, http_threads, 1, "Threads serving the HTTP connections.");
ABSL_FLAG(int, http_max_connections, 256, "HTTP connections open at once; more get 503.");
ABSL_FLAG(
    double, http_request_timeout_seconds, 30,
    "An HTTP request (headers and body) must arrive within this long, or the connection closes; "
    "an upload's body, which may be large, must only never fall silent for this long.");
ABSL_FLAG(int64_t, http_max_body_mb, 16, "Largest HTTP request body, in MiB (413 beyond).");
ABSL_FLAG(std::string, console_dir, KAIZEN_CONSOLE_DIR,
          "The built web console (console/dist), served at / on --http_port; without one, / "
          "says how to build it.");
ABSL_FLAG(double, drain_seconds, 5,
          "On SIGTERM, how long health reports NOT_SERVING while calls are still answered, "
          "before the server stops accepting them.");
ABSL_FLAG(int, max_batch_size, 32,
          "Most inputs the batcher merges into one forward pass; 1 = off.");
ABSL_FLAG(double, max_queue_delay_ms, 2, "Longest a Predict request waits for a batch to fill.");
ABSL_FLAG(int, max_queue_size, 1024,
          "Requests waiting per model; more fail at once with RESOURCE_EXHAUSTED.");
ABSL_FLAG(int, max_request_inputs, 256, "Most inputs in one Predict request.");
ABSL_FLAG(
    int, inference_instances, 0,
    "Executor instances per served model, each running one batch at a time; 0 = one per "
    "--threads core on the CPU (one on a GPU), or --threads / --inference_threads; at most 64.");
ABSL_FLAG(int, inference_threads, 0,
          "Intra-op threads of each executor instance; 0 = 1 on the CPU (--threads on a GPU), "
          "or --threads / --inference_instances.");
ABSL_FLAG(bool, preload_models, true,
          "Load every stored model before reporting SERVING (otherwise on first use).");
ABSL_FLAG(double, reload_idle_after_s, 300,
          "A model without a Predict for this long is not reloaded at every version a job "
          "writes: its next request loads the newest (or the job's end does); 0 = always.");
ABSL_FLAG(std::string, serving_config, "",
          "JSON file with per-model serving settings (policy, batching); see README.");
ABSL_FLAG(bool, optimize_for_inference, true,
          "Freeze served models and apply torch::jit::optimize_for_inference (CPU).");
ABSL_FLAG(std::string, serving_device, "", "Device for serving: cpu, cuda, cuda:N; empty = auto.");

namespace {
// A positive duration from a flag in seconds; nonsense becomes 1 ms rather
// than "never" or "at once".
absl::Duration Seconds(const absl::Flag<double>& flag) {
  return std::max(absl::Milliseconds(1), absl::Seconds(absl::GetFlag(flag)));
}
// --host, TLS and tokens: where to listen and how (an error when the
// host is off loopback and unprotected without --insecure). Returns the host.
absl::StatusOr<std::string> SecurityFromFlags(kaizen::api::KaizenServer::Options* options) {
  options->tokens_file = absl::GetFlag(FLAGS_tokens_file);
  options->tls = {absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key),
                  absl::GetFlag(FLAGS_tls_client_ca)};
  options->tls_reload_seconds = absl::GetFlag(FLAGS_tls_reload_seconds);
  options->reflection = absl::GetFlag(FLAGS_reflection);
  options->insecure = absl::GetFlag(FLAGS_insecure);
  options->health_port = absl::GetFlag(FLAGS_health_port);
  kaizen::auth::ListenSecurity security;
  security.tls = !options->tls.cert.empty();
  security.tokens = !options->tokens_file.empty();
  security.client_certificates = security.tls && !options->tls.client_ca.empty();
  security.insecure = options->insecure;
  absl::StatusOr<std::string> chosen_host =
      kaizen::auth::ChooseListenHost(absl::GetFlag(FLAGS_host), security);
  if (!chosen_host.ok()) return chosen_host.status();
  // The metrics endpoint takes IPv4 addresses only.
  const std::string host = *chosen_host == "localhost" ? "127.0.0.1" : *chosen_host;
  if (!kaizen::auth::IsProtected(security)) {
    kaizen::common::LogWarning(
        kaizen::auth::IsLoopbackHost(host)
            ? "listening on loopback only"
            : "listening off loopback on an unprotected port (--insecure)",
        {{"host", host}, {"why", kaizen::auth::WhatIsUnprotected(security)}});
  }
  return host;
}

// The budgets of model uploads: the sandboxed inspector and the archive checks.
void SandboxFromFlags(kaizen::models::SandboxOptions* sandbox) {
  sandbox->inspector_path = absl::GetFlag(FLAGS_model_inspector);
  sandbox->memory_bytes = absl::GetFlag(FLAGS_model_inspect_memory_mb) << 20;
  sandbox->cpu_seconds = absl::GetFlag(FLAGS_model_inspect_cpu_seconds);
  sandbox->timeout = absl::Seconds(absl::GetFlag(FLAGS_model_inspect_timeout_seconds));
  sandbox->extra_operators = absl::GetFlag(FLAGS_model_extra_operators);
  sandbox->max_members = absl::GetFlag(FLAGS_model_max_members);
  sandbox->max_unpacked_bytes = absl::GetFlag(FLAGS_model_max_unpacked_mb) << 20;
  sandbox->max_pickle_bytes = absl::GetFlag(FLAGS_model_max_pickle_mb) << 20;
  sandbox->max_pickle_depth = absl::GetFlag(FLAGS_model_max_pickle_depth);
}

// Text jobs' sandboxed tokenizer training.
void TokenizerSandboxFromFlags(kaizen::jobs::TokenizerSandbox* sandbox) {
  sandbox->trainer_path = absl::GetFlag(FLAGS_tokenizer_trainer);
  sandbox->memory_bytes = absl::GetFlag(FLAGS_tokenizer_train_memory_mb) << 20;
  sandbox->cpu_seconds = absl::GetFlag(FLAGS_tokenizer_train_cpu_seconds);
  sandbox->timeout = absl::Seconds(absl::GetFlag(FLAGS_tokenizer_train_timeout_seconds));
}

// Upload, decode, connection and metrics-endpoint budgets.
void LimitsFromFlags(kaizen::api::KaizenServer::Options* options) {
  options->max_upload_bytes = absl::GetFlag(FLAGS_max_upload_mb) << 20;
  options->max_model_bytes = absl::GetFlag(FLAGS_max_model_mb) << 20;
  options->max_image_pixels = absl::GetFlag(FLAGS_max_image_pixels);
  options->max_dataset_examples = std::max<int64_t>(1, absl::GetFlag(FLAGS_max_dataset_examples));
  // At most 64 MiB: a row is held whole, and a JSON line's parse costs a
  // few times its size.
  options->max_text_row_bytes =
      std::clamp<int64_t>(absl::GetFlag(FLAGS_max_text_row_bytes), 1, int64_t{64} << 20);
  // At least 1 MiB, at most 8 TiB (so that the shift cannot overflow).
  options->max_loaded_dataset_bytes =
      std::clamp<int64_t>(absl::GetFlag(FLAGS_max_dataset_memory_mb), 1, int64_t{1} << 23) << 20;
  options->max_jpeg_scans = std::max(1, absl::GetFlag(FLAGS_max_jpeg_scans));
  options->max_stored_shorter_side = std::max(0, absl::GetFlag(FLAGS_max_stored_shorter_side));
  options->stored_jpeg_quality = std::clamp(absl::GetFlag(FLAGS_stored_jpeg_quality), 1, 100);
  options->job_data.max_image_memory_bytes =
      std::clamp<int64_t>(absl::GetFlag(FLAGS_max_job_image_memory_mb), 0, int64_t{1} << 23) << 20;
  options->job_data.loader_threads = std::clamp(absl::GetFlag(FLAGS_loader_threads), 1, 64);
  options->job_data.prefetch_batches = std::clamp(absl::GetFlag(FLAGS_prefetch_batches), 1, 64);
  options->job_data.max_prefix_cache_bytes =
      std::max<int64_t>(0, absl::GetFlag(FLAGS_max_prefix_cache_mb)) << 20;
  options->job_data.channels_last = absl::GetFlag(FLAGS_channels_last_training);
  options->max_report_files = std::max(0, absl::GetFlag(FLAGS_max_report_files));
  kaizen::datasets::DecodeBudget::Options& upload_budget = options->upload_decode_budget;
  upload_budget.max_bytes = absl::GetFlag(FLAGS_max_decoded_mb) << 20;
  upload_budget.max_ratio = absl::GetFlag(FLAGS_max_decode_ratio);
  upload_budget.ratio_allowance_bytes = absl::GetFlag(FLAGS_decode_ratio_allowance_mb) << 20;
  options->serving.decode_budget = upload_budget;
  options->serving.decode_budget.max_bytes = absl::GetFlag(FLAGS_max_predict_decoded_mb) << 20;
  options->uploads.max_concurrent = std::max(1, absl::GetFlag(FLAGS_max_concurrent_uploads));
  options->evaluation.max_concurrent = std::max(1, absl::GetFlag(FLAGS_max_concurrent_evaluations));
  options->evaluation.max_examples =
      std::max<int64_t>(1, absl::GetFlag(FLAGS_max_evaluation_examples));
  options->uploads.idle_timeout = Seconds(FLAGS_upload_idle_timeout_seconds);
  options->uploads.deadline = Seconds(FLAGS_upload_deadline_seconds);
  options->grpc_max_threads = absl::GetFlag(FLAGS_grpc_max_threads);
  options->metrics_http.request_timeout = Seconds(FLAGS_metrics_request_timeout_seconds);
  options->metrics_http.max_connections = std::max(1, absl::GetFlag(FLAGS_metrics_max_connections));
}

// Batching, devices and the per-model --serving_config.
absl::Status ServingFromFlags(kaizen::serving::ModelServer::Options* serving) {
  serving->max_batch_size = std::max(1, absl::GetFlag(FLAGS_max_batch_size));
  serving->max_queue_delay = absl::Microseconds(
      static_cast<int64_t>(std::max(0.0, absl::GetFlag(FLAGS_max_queue_delay_ms)) * 1000));
  serving->max_queue_size = std::max(1, absl::GetFlag(FLAGS_max_queue_size));
  serving->max_request_inputs = std::max(1, absl::GetFlag(FLAGS_max_request_inputs));
  serving->instances = std::max(0, absl::GetFlag(FLAGS_inference_instances));
  serving->threads_per_instance = std::max(0, absl::GetFlag(FLAGS_inference_threads));
  serving->preload = absl::GetFlag(FLAGS_preload_models);
  serving->reload_idle_after = absl::Milliseconds(
      static_cast<int64_t>(std::max(0.0, absl::GetFlag(FLAGS_reload_idle_after_s)) * 1000));
  serving->device = absl::GetFlag(FLAGS_serving_device);
  serving->optimize = absl::GetFlag(FLAGS_optimize_for_inference);
  const std::string path = absl::GetFlag(FLAGS_serving_config);
  if (path.empty()) return absl::OkStatus();
  std::string json;
  RETURN_IF_ERROR(kaizen::common::ReadFile(path, &json));
  ASSIGN_OR_RETURN(serving->models, kaizen::serving::ParseServingConfig(json, path));
  return absl::OkStatus();
}

// Every flag into the server's options; errors are usage errors (exit 2).
absl::StatusOr<kaizen::api::KaizenServer::Options> OptionsFromFlags() {
  kaizen::api::KaizenServer::Options options;
  ASSIGN_OR_RETURN(const std::string host, SecurityFromFlags(&options));
  options.data_dir = absl::GetFlag(FLAGS_data_dir);
  options.database = absl::GetFlag(FLAGS_database);
  if (const char* env = std::getenv("KAIZEN_DATABASE_URL"); options.database.empty() && env) {
    options.database = env;
  }
  if (!options.database.empty() && !kaizen::store::Database::IsPostgresUrl(options.database)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--database must be a postgresql:// or postgres:// URL (the SQLite catalogue is "
        "<data_dir>/kaizen.db and needs no flag); got \"",
        kaizen::store::RedactDatabaseUrl(options.database), "\""));
  }
  options.replica_id = absl::GetFlag(FLAGS_replica_id);
  if (absl::GetFlag(FLAGS_job_lease_seconds) < 1) {
    return absl::InvalidArgumentError("--job_lease_seconds must be at least 1");
  }
  options.job_lease = absl::Seconds(absl::GetFlag(FLAGS_job_lease_seconds));
  options.grpc_address = absl::StrCat(host, ":", absl::GetFlag(FLAGS_grpc_port));
  options.metrics_host = host;
  options.metrics_port = absl::GetFlag(FLAGS_metrics_port);
  options.http.host = host;
  options.http.port = absl::GetFlag(FLAGS_http_port);
  options.http.threads = absl::GetFlag(FLAGS_http_threads);
  options.http.max_connections = absl::GetFlag(FLAGS_http_max_connections);
  options.http.request_timeout = absl::Seconds(absl::GetFlag(FLAGS_http_request_timeout_seconds));
  options.http.max_body_bytes =
      static_cast<size_t>(std::max<int64_t>(1, absl::GetFlag(FLAGS_http_max_body_mb))) << 20;
  // An upload's body over HTTP is the file: the service's own limits bound it.
  options.http.max_streamed_body_bytes =
      static_cast<uint64_t>(std::max<int64_t>(
          {1, absl::GetFlag(FLAGS_max_upload_mb), absl::GetFlag(FLAGS_max_model_mb)}))
      << 20;
  options.console_dir = absl::GetFlag(FLAGS_console_dir);
  options.workers = absl::GetFlag(FLAGS_workers);
  options.threads = absl::GetFlag(FLAGS_threads);
  options.max_job_attempts = std::max(1, absl::GetFlag(FLAGS_max_job_attempts));
  if (absl::GetFlag(FLAGS_max_exports) < 1) {
    return absl::InvalidArgumentError("--max_exports must be at least 1");
  }
  options.max_exports = absl::GetFlag(FLAGS_max_exports);
  if (absl::GetFlag(FLAGS_max_export_list_entries) < 1) {
    return absl::InvalidArgumentError("--max_export_list_entries must be at least 1");
  }
  options.max_export_list_entries = absl::GetFlag(FLAGS_max_export_list_entries);
  options.preempt = absl::GetFlag(FLAGS_preempt);
  options.drain_delay = absl::Seconds(absl::GetFlag(FLAGS_drain_seconds));
  // The sandboxes' limits become rlimits and a deadline, the data-parallel
  // settings process counts and a deadline: a value that is not positive
  // would mean no limit, a huge one an overflow.
  struct Bound {
    const char* flag;
    int64_t value;
    int64_t most;
  };
  for (const Bound& b :
       {Bound{"model_inspect_memory_mb", absl::GetFlag(FLAGS_model_inspect_memory_mb), 1 << 20},
        Bound{"model_inspect_cpu_seconds", absl::GetFlag(FLAGS_model_inspect_cpu_seconds), 86400},
        Bound{"model_inspect_timeout_seconds", absl::GetFlag(FLAGS_model_inspect_timeout_seconds),
              86400},
        Bound{"tokenizer_train_memory_mb", absl::GetFlag(FLAGS_tokenizer_train_memory_mb), 1 << 20},
        Bound{"tokenizer_train_cpu_seconds", absl::GetFlag(FLAGS_tokenizer_train_cpu_seconds),
              86400},
        Bound{"tokenizer_train_timeout_seconds",
              absl::GetFlag(FLAGS_tokenizer_train_timeout_seconds), 86400},
        Bound{"max_world_size", absl::GetFlag(FLAGS_max_world_size), 1024},
        Bound{"default_world_size", absl::GetFlag(FLAGS_default_world_size),
              absl::GetFlag(FLAGS_max_world_size)},
        Bound{"distributed_timeout_seconds", absl::GetFlag(FLAGS_distributed_timeout_seconds),
              86400}}) {
    if (b.value < 1 || b.value > b.most) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", b.flag, " is ", b.value, "; it must be in [1, ", b.most, "]"));
    }
  }
  // 2^40 MiB is beyond any disk, and shifted into bytes it cannot overflow.
  if (const int64_t mb = absl::GetFlag(FLAGS_scratch_reserve_mb);
      mb < 0 || mb > (int64_t{1} << 40)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--scratch_reserve_mb is ", mb, "; it must be in [0, 2^40]"));
  }
  SandboxFromFlags(&options.model_sandbox);
  TokenizerSandboxFromFlags(&options.tokenizer_sandbox);
  options.data_parallel.worker_path = absl::GetFlag(FLAGS_worker_binary);
  options.data_parallel.default_world_size = absl::GetFlag(FLAGS_default_world_size);
  options.data_parallel.max_world_size = absl::GetFlag(FLAGS_max_world_size);
  options.data_parallel.timeout = absl::Seconds(absl::GetFlag(FLAGS_distributed_timeout_seconds));
  options.data_parallel.scratch_reserve_bytes = absl::GetFlag(FLAGS_scratch_reserve_mb) << 20;
  LimitsFromFlags(&options);
  if (absl::Status serving = ServingFromFlags(&options.serving); !serving.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("bad --serving_config: ", serving.message()));
  }
  return options;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Kaizen fine-tuning and inference server.");
  absl::ParseCommandLine(argc, argv);
  if (!absl::GetFlag(FLAGS_dumpable)) {
    if (absl::Status st = kaizen::sandbox::MakeUndumpable(); !st.ok()) {
      kaizen::common::LogError("cannot start", {{"error", st.ToString()}});
      return 1;
    }
  }
  if (const int abi = kaizen::sandbox::LandlockAbi(); abi > 0) {
    kaizen::common::LogInfo("sandboxed helpers read only the system's files and their input",
                            {{"landlock_abi", static_cast<int64_t>(abi)}});
  } else if (absl::GetFlag(FLAGS_require_landlock)) {
    kaizen::common::LogError(
        "cannot start", {{"error", "this kernel has no Landlock and --require_landlock is set"}});
    return 1;
  } else {
    kaizen::common::LogWarning(
        "this kernel has no Landlock: sandboxed helpers can read every file the server's user can "
        "(set --require_landlock to refuse to start)",
        {});
  }

  // Block SIGINT/SIGTERM/SIGHUP in every thread; one thread waits for them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  absl::StatusOr<kaizen::api::KaizenServer::Options> options = OptionsFromFlags();
  if (!options.ok()) {
    kaizen::common::LogError("cannot start", {{"error", options.status().ToString()}});
    return 2;
  }
  auto server = kaizen::api::KaizenServer::Start(*std::move(options));
  if (!server.ok()) {
    kaizen::common::LogError("cannot start", {{"error", server.status().ToString()}});
    return 1;
  }
  std::thread signal_waiter([&] {
    int sig = 0;
    // SIGHUP re-reads the tokens file and keeps serving; the others stop.
    while (sigwait(&signals, &sig) == 0 && sig == SIGHUP) {
      kaizen::common::LogInfo("signal received", {{"signal", sig}});
      (*server)->ReloadTokens().IgnoreError();  // logged by ReloadTokens
    }
    kaizen::common::LogInfo("signal received", {{"signal", sig}});
    (*server)->Shutdown(absl::Seconds(absl::GetFlag(FLAGS_shutdown_grace_seconds)));
  });
  (*server)->Wait();
  // Wake the waiter if the server stopped for another reason.
  pthread_kill(signal_waiter.native_handle(), SIGTERM);
  signal_waiter.join();
  kaizen::common::LogInfo("stopped");
  return 0;
}
