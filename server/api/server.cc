#include "server/api/server.h"

#include <ATen/Parallel.h>
#include <grpcpp/ext/health_check_service_server_builder_option.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/impl/server_builder_option.h>
#include <grpcpp/resource_quota.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <stdlib.h>
#include <torch/cuda.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "google/protobuf/util/time_util.h"
#include "kaizen/v1/finetune_service.grpc.pb.h"
#include "kaizen/v1/inference_service.grpc.pb.h"
#include "server/api/dataset_service_impl.h"
#include "server/api/finetune_service_impl.h"
#include "server/api/health_only_service.h"
#include "server/api/inference_service_impl.h"
#include "server/api/model_service_impl.h"
#include "server/api/oip_service_impl.h"
#include "server/auth/listen_policy.h"
#include "server/auth/tls_mirror.h"
#include "server/common/logging.h"
#include "server/common/status_macros.h"
#include "server/http/api_handler.h"
#include "server/http/console_assets.h"
#include "server/jobs/job_event_hub.h"
#include "server/jobs/job_manager.h"
#include "server/metrics/metrics.h"
#include "server/serving/predictor.h"
#include "server/store/data_dir.h"
#include "server/store/dataset_store.h"
#include "server/store/job_store.h"
#include "server/store/metadata_store.h"
#include "server/store/model_store.h"
#include "server/training/text_model.h"

namespace kaizen::api {

// Owns everything in dependency order: members are destroyed bottom-up, so
// the gRPC server goes first and the catalogue last.
struct KaizenServer::State {
  std::unique_ptr<metrics::Metrics> metrics;
  std::unique_ptr<auth::Authenticator> auth;
  // TLS: the private copies gRPC reads, and the thread that refreshes them
  // from the operator's files.
  std::string tls_dir;
  std::unique_ptr<auth::TlsMirror> tls_mirror;
  std::thread tls_thread;
  absl::Notification tls_stop;
  std::unique_ptr<store::MetadataStore> metadata;
  std::unique_ptr<store::DatasetStore> datasets;
  std::unique_ptr<store::ModelStore> models;
  std::unique_ptr<store::JobStore> job_store;
  // After the stores it reads and before the jobs that write versions.
  std::unique_ptr<serving::ModelServer> model_server;
  // Over model_server; before the inference services that call it.
  std::unique_ptr<serving::Predictor> predictor;
  std::unique_ptr<jobs::JobEventHub> events;
  // Before the jobs and the model service that run evaluations.
  std::unique_ptr<jobs::ModelEvaluator> evaluator;
  std::unique_ptr<jobs::JobManager> jobs;
  // After the stores its threads write to; before the services and the
  // server whose upload streams use it.
  std::unique_ptr<UploadRunner> uploads;
  std::unique_ptr<DatasetServiceImpl> dataset_service;
  std::unique_ptr<ModelServiceImpl> model_service;
  std::unique_ptr<FineTuneServiceImpl> finetune_service;
  std::unique_ptr<InferenceServiceImpl> inference_service;
  std::unique_ptr<OipServiceImpl> oip_service;
  std::unique_ptr<grpc::Server> server;
  // Plaintext, health only (Options::health_port).
  std::unique_ptr<HealthOnlyService> health_only;
  std::unique_ptr<grpc::Server> health_server;
  // The JSON API: a client of `server` (its in-process channel), stopped
  // before it.
  std::unique_ptr<http::ApiHandler> http_api;
  std::optional<http::ConsoleAssets> console;
  std::string console_missing;  // why there is no console, when there is none
  std::unique_ptr<http::HttpServer> http_server;
  // Preloads models, then flips health to SERVING.
  std::thread ready_thread;
  std::atomic<bool> ready{false};
  bool shut_down = false;  // guarded by KaizenServer::health_mu_
  absl::Notification shutdown_done;
};

KaizenServer::KaizenServer(Options options)
    : options_(std::move(options)), state_(std::make_unique<State>()) {}

KaizenServer::~KaizenServer() {
  // Scrapes stop reading the catalogue before it goes.
  if (state_->metrics) state_->metrics->SetCollectHook(nullptr);
  bool started_shutdown;
  {
    absl::MutexLock lock(&health_mu_);
    started_shutdown = state_->shut_down;
  }
  if (state_->server) {
    // Shut down here, or wait for a Shutdown() running on another thread.
    if (!started_shutdown) Shutdown(absl::Seconds(1));
    state_->shutdown_done.WaitForNotification();
  }
  if (state_->model_server) state_->model_server->Stop();
  if (state_->ready_thread.joinable()) state_->ready_thread.join();
  if (state_->models) state_->models->StopLoadingMarkerUpkeep();
  if (!state_->tls_stop.HasBeenNotified()) state_->tls_stop.Notify();
  if (state_->tls_thread.joinable()) state_->tls_thread.join();
  if (!state_->tls_dir.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(state_->tls_dir, ignored);
  }
}

namespace {
constexpr const char* kServices[] = {"kaizen.v1.DatasetService", "kaizen.v1.ModelService",
                                     "kaizen.v1.FineTuneService", "kaizen.v1.InferenceService",
                                     "inference.GRPCInferenceService"};

// Refreshes kaizen_jobs{state} and the queue gauges from the catalogue at
// every scrape.
void RefreshJobMetrics(const std::string& catalogue, store::JobStore* jobs,
                       metrics::Metrics* metrics) {
  absl::StatusOr<store::JobStore::StateSummary> summary = jobs->SummarizeStates();
  if (!summary.ok()) {
    common::LogWarning("cannot count jobs for /metrics", {{"error", summary.status().ToString()}});
    return;
  }
  double oldest_age = 0;
  if (summary->oldest_queued_create_time) {
    const absl::Time created =
        absl::FromUnixMillis(google::protobuf::util::TimeUtil::TimestampToMilliseconds(
            *summary->oldest_queued_create_time));
    oldest_age = absl::ToDoubleSeconds(absl::Now() - created);
  }
  metrics->SetJobCounts(catalogue, summary->jobs_by_state, oldest_age);
}

// gRPC's sync server needs a few threads of its own (pollers) before it can
// take any call.
constexpr int kMinGrpcThreads = 8;

void SetHealthOf(grpc::Server* server, bool serving) {
  if (server == nullptr) return;
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  for (const char* svc : kServices) health->SetServingStatus(svc, serving);
  health->SetServingStatus(serving);
}

// Server reflection on one builder, or on none: linking grpc++_reflection
// registers its plugin for every server the process builds (a static
// initializer), so it is taken out again where it is not wanted.
class ReflectionOption final : public grpc::ServerBuilderOption {
 public:
  explicit ReflectionOption(bool enabled) : enabled_(enabled) {}
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    const std::string name = grpc::reflection::ProtoServerReflectionPlugin().name();
    plugins->erase(std::remove_if(plugins->begin(), plugins->end(),
                                  [&](const auto& p) { return p->name() == name; }),
                   plugins->end());
    if (enabled_)
      plugins->push_back(std::make_unique<grpc::reflection::ProtoServerReflectionPlugin>());
  }

 private:
  bool enabled_;
};

// TLS from the files in `tls` (TlsMirror's private copies), re-read by gRPC
// every `reload_seconds`; a client certificate signed by the client CA is
// required when one is given.
std::shared_ptr<grpc::ServerCredentials> TlsCredentials(const auth::TlsFiles& tls,
                                                        int reload_seconds) {
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      tls.key, tls.cert, tls.client_ca, static_cast<unsigned>(std::max(1, reload_seconds)));
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_identity_key_cert_pairs();
  if (tls.client_ca.empty()) {
    options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  } else {
    options.watch_root_certs();
    options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  }
  return grpc::experimental::TlsServerCredentials(options);
}

// A fresh 0700 directory under $TMPDIR (or /tmp) for the TLS copies.
absl::StatusOr<std::string> MakePrivateDir() {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern =
      absl::StrCat(tmp != nullptr && tmp[0] != '\0' ? tmp : "/tmp", "/kaizen-tls-XXXXXX");
  if (::mkdtemp(pattern.data()) == nullptr) {
    return absl::InternalError(
        absl::StrCat("cannot create a private directory for the TLS "
                     "files under ",
                     pattern, ": ", std::strerror(errno)));
  }
  return pattern;
}
}  // namespace

void KaizenServer::SetHealth(bool serving) {
  SetHealthOf(state_->server.get(), serving);
  if (state_->health_only) state_->health_only->SetServing(serving);
}

absl::StatusOr<std::unique_ptr<KaizenServer>> KaizenServer::Start(Options options) {
  std::unique_ptr<KaizenServer> self(new KaizenServer(std::move(options)));
  const Options& o = self->options_;
  const int threads = o.threads > 0 ? o.threads : std::max(1u, std::thread::hardware_concurrency());
  at::set_num_threads(threads);

  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials, self->SetUpSecurity());
  ASSIGN_OR_RETURN(const int orphans, self->OpenStores());
  RETURN_IF_ERROR(self->StartServing(threads));
  self->StartJobs(threads);
  // Before any request compares a job's lease with the time.
  RETURN_IF_ERROR(self->state_->jobs->ReadLeaseClock());
  self->CreateServices();
  RETURN_IF_ERROR(self->Listen(std::move(credentials)));
  RETURN_IF_ERROR(self->ListenForHealth());
  RETURN_IF_ERROR(self->ListenHttp());
  self->SetHealth(false);
  RETURN_IF_ERROR(self->StartBackground());
  common::LogInfo("kaizen-server listening", {{"grpc_address", o.grpc_address},
                                              {"grpc_port", self->grpc_port_},
                                              {"tls", !o.tls.cert.empty()},
                                              {"mutual_tls", !o.tls.client_ca.empty()},
                                              {"tokens", self->state_->auth->token_count()},
                                              {"reflection", o.reflection},
                                              {"health_port", self->health_port_},
                                              {"http_port", self->http_port()},
                                              {"metrics_port", self->metrics_port()},
                                              {"data_dir", o.data_dir},
                                              {"intra_op_threads", threads},
                                              {"orphans_removed", orphans}});
  return self;
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> KaizenServer::SetUpSecurity() {
  const Options& o = options_;
  State& s = *state_;
  auth::ListenSecurity security;
  security.tls = !o.tls.cert.empty();
  security.tokens = !o.tokens_file.empty();
  security.client_certificates = security.tls && !o.tls.client_ca.empty();
  security.insecure = o.insecure;
  for (const std::string& host : {auth::HostOfAddress(o.grpc_address), o.metrics_host,
                                  o.http.port >= 0 ? o.http.host : std::string("127.0.0.1")}) {
    RETURN_IF_ERROR(auth::ChooseListenHost(host, security).status());
  }
  RETURN_IF_ERROR(auth::CheckTlsFiles(o.tls));
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (security.tls) {
    ASSIGN_OR_RETURN(s.tls_dir, MakePrivateDir());
    ASSIGN_OR_RETURN(s.tls_mirror, auth::TlsMirror::Create(o.tls, s.tls_dir));
    credentials = TlsCredentials(s.tls_mirror->mirrored(), o.tls_reload_seconds);
  }
  auth::Authenticator::Options auth_options;
  auth_options.tokens_file = o.tokens_file;
  ASSIGN_OR_RETURN(s.auth, auth::Authenticator::Create(auth_options));
  if (s.auth->enabled() && s.auth->token_count() == 0) {
    common::LogWarning("the tokens file holds no token: every call but health is refused",
                       {{"file", o.tokens_file}});
  }
  return credentials;
}

bool KaizenServer::shared_database() const {
  return store::Database::IsPostgresUrl(options_.database);
}

std::string KaizenServer::ReplicaId() const {
  if (!options_.replica_id.empty()) return options_.replica_id;
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0) std::snprintf(host, sizeof(host), "kaizen");
  return absl::StrCat(host, "-", getpid());
}

absl::StatusOr<int> KaizenServer::OpenStores() {
  const Options& o = options_;
  State& s = *state_;
  // Replicas sharing the data directory: what another one is writing now is
  // young; a day-old left-over is nobody's.
  const absl::Duration min_age = shared_database() ? absl::Hours(24) : absl::ZeroDuration();
  RETURN_IF_ERROR(store::PrepareDataDir(o.data_dir, min_age));
  ASSIGN_OR_RETURN(s.metadata, store::MetadataStore::Open(
                                   o.database.empty() ? o.data_dir + "/kaizen.db" : o.database));
  ASSIGN_OR_RETURN(const int orphans, store::SweepOrphanFiles(o.data_dir, *s.metadata, min_age));
  ASSIGN_OR_RETURN(s.metrics,
                   metrics::Metrics::Create(o.metrics_host, o.metrics_port, o.metrics_http));

  store::DatasetStore::Options dso;
  dso.data_dir = o.data_dir;
  dso.max_upload_bytes = o.max_upload_bytes;
  dso.max_image_pixels = o.max_image_pixels;
  dso.max_jpeg_scans = o.max_jpeg_scans;
  dso.max_stored_shorter_side = o.max_stored_shorter_side;
  dso.stored_jpeg_quality = o.stored_jpeg_quality;
  dso.max_report_files = o.max_report_files;
  dso.decode_budget = o.upload_decode_budget;
  dso.max_loaded_bytes = o.max_loaded_dataset_bytes;
  dso.max_examples = o.max_dataset_examples;
  dso.max_text_row_bytes = o.max_text_row_bytes;
  s.datasets = std::make_unique<store::DatasetStore>(dso, s.metadata.get());
  store::ModelStore::Options mso;
  mso.data_dir = o.data_dir;
  mso.max_model_bytes = o.max_model_bytes;
  mso.replica_id = ReplicaId();
  mso.shared_database = shared_database();
  mso.loading_marker_lease = o.job_lease;
  mso.sandbox = o.model_sandbox;
  mso.sandbox.max_image_pixels = o.max_image_pixels;
  // The inspector's second forward pass runs at the largest batch serving
  // can form for any model.
  mso.sandbox.serving_batch_size = std::max(1, o.serving.max_batch_size);
  for (const auto& [name, config] : o.serving.models) {
    mso.sandbox.serving_batch_size =
        std::max<int64_t>(mso.sandbox.serving_batch_size, config.max_batch_size);
  }
  // An uploaded text model's tokenizer is parsed as training and serving
  // will parse it, so that a bad one is refused at upload.
  mso.check_text_input = [](const kaizen::v1::TextInput& input, std::string_view tokenizer) {
    return training::TextModelInput::Load(input, tokenizer).status();
  };
  s.models = std::make_unique<store::ModelStore>(mso, s.metadata.get());
  ASSIGN_OR_RETURN(s.job_store, store::JobStore::Open(s.metadata->db()));
  return orphans;
}

absl::Status KaizenServer::StartServing(int threads) {
  State& s = *state_;
  serving::ModelServer::Options serving = options_.serving;
  serving.max_image_pixels = options_.max_image_pixels;
  serving.max_jpeg_scans = options_.max_jpeg_scans;
  // The same resolution ModelServer::Create makes: instances depend on it.
  ASSIGN_OR_RETURN(const torch::Device device, serving::ResolveServingDevice(serving.device));
  const bool gpu = !device.is_cpu();
  const serving::Instances instances =
      serving::ResolveInstances(serving.instances, serving.threads_per_instance, threads, gpu);
  serving.instances = instances.instances;
  serving.threads_per_instance = instances.threads_per_instance;
  common::LogInfo("model executors", {{"instances_per_model", serving.instances},
                                      {"threads_per_instance", serving.threads_per_instance},
                                      {"gpu", gpu}});
  ASSIGN_OR_RETURN(s.model_server,
                   serving::ModelServer::Create(serving, s.models.get(), s.metrics.get()));
  // Keeps this replica's loading markers leased (shared database).
  s.models->StartLoadingMarkerUpkeep();
  serving::ModelServer* model_server = s.model_server.get();
  s.models->set_listener(
      {[model_server](const kaizen::v1::Model& m) { model_server->OnVersionAdded(m); },
       [model_server](const std::string& name, int64_t version) {
         model_server->OnVersionDeleted(name, version);
       }});
  s.predictor = std::make_unique<serving::Predictor>(
      model_server, serving::Predictor::OptionsFor(model_server->options()));
  return absl::OkStatus();
}

void KaizenServer::StartJobs(int threads) {
  State& s = *state_;
  s.events = std::make_unique<jobs::JobEventHub>(s.job_store.get());
  jobs::ModelEvaluator::Options eo = options_.evaluation;
  eo.device = torch::cuda::is_available() ? torch::Device(torch::kCUDA, 0) : torch::kCPU;
  s.evaluator = std::make_unique<jobs::ModelEvaluator>(eo, s.models.get(), s.datasets.get());
  jobs::JobManager::Options jmo;
  jmo.evaluator = s.evaluator.get();
  jmo.workers = std::max(1, options_.workers);
  jmo.threads_per_worker = std::max(1, threads / jmo.workers);
  jmo.max_job_attempts = options_.max_job_attempts;
  jmo.max_exports = options_.max_exports;
  jmo.max_export_list_entries = options_.max_export_list_entries;
  jmo.preempt = options_.preempt;
  jmo.metrics = s.metrics.get();
  jmo.data = options_.job_data;
  jmo.tokenizer_sandbox = options_.tokenizer_sandbox;
  jmo.data_parallel = options_.data_parallel;
  if (jmo.data_parallel.scratch_dir.empty())
    jmo.data_parallel.scratch_dir = options_.data_dir + "/tmp";
  jmo.export_dir = options_.data_dir + "/exports";
  jmo.shared_database = shared_database();
  jmo.replica_id = ReplicaId();
  jmo.job_lease = options_.job_lease;
  if (jmo.shared_database) {
    store::ModelStore* models = s.models.get();
    jmo.on_replica_tick = [models] {
      if (absl::Status st = models->AnnounceOtherReplicasChanges(); !st.ok()) {
        common::LogError("cannot read other replicas' model changes", {{"error", st.ToString()}});
      }
    };
  }
  if (serving::ModelServer* model_server = s.model_server.get()) {
    jmo.output_done = [model_server](const std::string& name) { model_server->Warm(name); };
  }
  s.jobs = std::make_unique<jobs::JobManager>(jmo, s.job_store.get(), s.datasets.get(),
                                              s.models.get(), s.events.get());
  jobs::JobManager* job_manager = s.jobs.get();
  s.datasets->set_in_use_check(
      [job_manager](const std::string& n) { return job_manager->DatasetInUse(n); },
      job_manager->references_mutex());
  s.models->set_in_use_check(
      [job_manager](const std::string& n) { return job_manager->ModelInUse(n); },
      job_manager->references_mutex());
  s.models->set_output_check(
      [job_manager](const std::string& n) { return job_manager->JobWritingModel(n); });
}

void KaizenServer::CreateServices() {
  State& s = *state_;
  s.uploads = std::make_unique<UploadRunner>(options_.uploads, s.metrics.get());
  const auth::Authenticator* auth = s.auth.get();
  s.dataset_service = std::make_unique<DatasetServiceImpl>(s.datasets.get(), s.uploads.get(),
                                                           s.metrics.get(), auth);
  s.model_service = std::make_unique<ModelServiceImpl>(s.models.get(), s.evaluator.get(),
                                                       s.uploads.get(), s.metrics.get(), auth);
  s.finetune_service = std::make_unique<FineTuneServiceImpl>(
      s.jobs.get(), s.events.get(), s.metrics.get(), auth,
      FineTuneServiceImpl::Options{options_.max_watcher_backlog});
  s.inference_service =
      std::make_unique<InferenceServiceImpl>(s.predictor.get(), s.metrics.get(), auth);
  s.oip_service = std::make_unique<OipServiceImpl>(s.model_server.get(), s.predictor.get(),
                                                   s.metrics.get(), auth);
}

absl::Status KaizenServer::Listen(std::shared_ptr<grpc::ServerCredentials> credentials) {
  const Options& o = options_;
  State& s = *state_;
  // Health stays open (no token) on every listener: probes carry none.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  builder.SetOption(std::make_unique<ReflectionOption>(o.reflection));
  builder.AddListeningPort(o.grpc_address, std::move(credentials), &grpc_port_);
  builder.SetMaxReceiveMessageSize(o.max_message_bytes);
  builder.SetMaxSendMessageSize(o.max_message_bytes);
  grpc::ResourceQuota quota("kaizen-server");
  quota.SetMaxThreads(std::max(kMinGrpcThreads, o.grpc_max_threads));
  builder.SetResourceQuota(quota);
  builder.RegisterService(s.dataset_service.get());
  builder.RegisterService(s.model_service.get());
  builder.RegisterService(s.finetune_service.get());
  builder.RegisterService(s.inference_service.get());
  builder.RegisterService(s.oip_service.get());
  s.server = builder.BuildAndStart();
  if (!s.server || grpc_port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", o.grpc_address));
  }
  return absl::OkStatus();
}

absl::Status KaizenServer::ListenForHealth() {
  if (options_.health_port < 0) return absl::OkStatus();
  State& s = *state_;
  const std::string address =
      absl::StrCat(auth::HostOfAddress(options_.grpc_address), ":", options_.health_port);
  s.health_only = std::make_unique<HealthOnlyService>(
      std::vector<std::string>(std::begin(kServices), std::end(kServices)));
  grpc::ServerBuilder builder;
  builder.SetOption(std::make_unique<ReflectionOption>(false));
  // Ours instead of the default health service, which needs other sync
  // services beside it.
  builder.SetOption(std::make_unique<grpc::HealthCheckServiceServerBuilderOption>(nullptr));
  grpc::ResourceQuota quota("kaizen-health");
  quota.SetMaxThreads(kMinGrpcThreads);
  builder.SetResourceQuota(quota);
  builder.RegisterService(s.health_only.get());
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &health_port_);
  s.health_server = builder.BuildAndStart();
  if (!s.health_server || health_port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", address, " (--health_port)"));
  }
  return absl::OkStatus();
}

absl::Status KaizenServer::StartBackground() {
  State& s = *state_;
  for (const char* svc : kServices) RETURN_IF_ERROR(s.metrics->InitializeGrpcService(svc));
  {
    store::JobStore* job_store = s.job_store.get();
    metrics::Metrics* m = s.metrics.get();
    m->SetCollectHook([catalogue = s.metadata->catalogue_id(), job_store, m] {
      RefreshJobMetrics(catalogue, job_store, m);
    });
  }
  RETURN_IF_ERROR(s.jobs->Start());
  if (s.tls_mirror) {
    const absl::Duration every = absl::Seconds(std::max(1, options_.tls_reload_seconds));
    s.tls_thread = std::thread([&s, every] {
      while (!s.tls_stop.WaitForNotificationWithTimeout(every)) {
        absl::StatusOr<bool> refreshed = s.tls_mirror->Refresh();
        if (!refreshed.ok() || *refreshed) s.metrics->CredentialReload("tls", refreshed.ok());
        if (!refreshed.ok()) {
          common::LogError("TLS files not reloaded; the previous ones stay in force",
                           {{"error", refreshed.status().ToString()}});
        } else if (*refreshed) {
          common::LogInfo("TLS files reloaded");
          if (s.http_server) {
            if (absl::Status http = s.http_server->ReloadTls(); !http.ok()) {
              common::LogError("HTTPS keeps its previous TLS files", {{"error", http.ToString()}});
            }
          }
        }
      }
    });
  }
  s.ready_thread = std::thread([this] {
    State& st = *state_;
    absl::Status preload = st.model_server->Start();
    if (!preload.ok()) {
      common::LogError("serving did not start", {{"error", preload.ToString()}});
      return;
    }
    absl::MutexLock lock(&health_mu_);
    if (st.shut_down) return;
    SetHealth(true);
    st.ready = true;
    common::LogInfo("ready", {{"grpc_port", grpc_port_}});
  });
  return absl::OkStatus();
}

bool KaizenServer::ready() const { return state_->ready.load(); }

store::ModelStore* KaizenServer::model_store() { return state_->models.get(); }

int KaizenServer::http_port() const {
  return state_->http_server ? state_->http_server->port() : 0;
}

absl::Status KaizenServer::ListenHttp() {
  const Options& o = options_;
  if (o.http.port < 0) return absl::OkStatus();
  State& s = *state_;
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(o.max_message_bytes);
  args.SetMaxSendMessageSize(o.max_message_bytes);
  // Without tokens only loopback names: no DNS rebinding to a server that
  // trusts every caller.
  std::vector<std::string> allowed_hosts;
  if (!s.auth->enabled() && auth::IsLoopbackHost(o.http.host)) {
    allowed_hosts = {"127.0.0.1", "localhost", "::1", o.http.host};
  }
  s.http_api =
      std::make_unique<http::ApiHandler>(s.server->InProcessChannel(args), o.http_call_timeout,
                                         std::move(allowed_hosts), s.auth.get());
  absl::StatusOr<http::ConsoleAssets> console = http::ConsoleAssets::Load(o.console_dir);
  if (console.ok()) {
    s.console = *std::move(console);
  } else {
    s.console_missing = std::string(console.status().message());
    common::LogWarning("web console not served",
                       {{"console_dir", o.console_dir}, {"why", s.console_missing}});
  }
  http::HttpServer::Options http_options = o.http;
  if (s.tls_mirror) {
    // HTTPS from the same files as gRPC (and client certificates when gRPC
    // asks for them), reloaded with them.
    http_options.tls_cert = s.tls_mirror->mirrored().cert;
    http_options.tls_key = s.tls_mirror->mirrored().key;
    http_options.tls_client_ca = s.tls_mirror->mirrored().client_ca;
  }
  http_options.streams_body = [&s](const http::HttpServer::Request& head) {
    return s.http_api->StreamsBody(head);
  };
  ASSIGN_OR_RETURN(s.http_server,
                   http::HttpServer::Start(http_options, [&s, dir = o.console_dir](
                                                             http::HttpServer::Request request,
                                                             http::HttpServer::Respond respond) {
                     const absl::string_view path = request.target;
                     if (path == http::JsonGateway::kPrefix || absl::StartsWith(path, "/api/")) {
                       return s.http_api->Handle(std::move(request), std::move(respond));
                     }
                     if (s.console) return respond(s.console->Serve(request));
                     respond(http::ConsoleNotBuilt(dir, s.console_missing));
                   }));
  return absl::OkStatus();
}

int KaizenServer::metrics_port() const { return state_->metrics ? state_->metrics->port() : 0; }

void KaizenServer::Shutdown(absl::Duration grace) {
  {
    absl::MutexLock lock(&health_mu_);
    if (!state_->server || state_->shut_down) return;
    state_->shut_down = true;
    state_->ready = false;
    SetHealth(false);
    state_->model_server->BeginDrain();
  }
  common::LogInfo("draining",
                  {{"grace_seconds", absl::ToDoubleSeconds(grace)},
                   {"drain_delay_seconds", absl::ToDoubleSeconds(options_.drain_delay)}});
  // Probes see NOT_SERVING while calls are still answered.
  {
    absl::MutexLock lock(&drain_mu_);
    const bool never = false;
    options_.drain_clock->AwaitWithDeadline(&drain_mu_, absl::Condition(&never),
                                            options_.drain_clock->Now() + options_.drain_delay);
  }
  // No new HTTP connections; the calls of those open (an upload, say) get
  // the same grace as gRPC's.
  if (state_->http_server) state_->http_server->StopAccepting();
  // Running jobs checkpoint and go back to the queue; watchers' streams end.
  state_->jobs->Stop();
  state_->events->CloseAll();
  // Calls in flight (Predict included) finish on the running batchers.
  state_->server->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  // Then the HTTP connections go (an answer not yet on its socket is
  // dropped).
  if (state_->http_server) state_->http_server->Stop();
  if (state_->health_server) state_->health_server->Shutdown(absl::ToChronoTime(absl::Now()));
  state_->model_server->Stop();
  if (state_->ready_thread.joinable()) state_->ready_thread.join();
  // Serving's loads have ended: their markers need no more renewals.
  state_->models->StopLoadingMarkerUpkeep();
  state_->shutdown_done.Notify();
}

absl::Status KaizenServer::ReloadTokens() {
  if (!state_->auth->enabled()) {
    return absl::FailedPreconditionError("no --tokens_file: nothing to reload");
  }
  absl::Status reloaded = state_->auth->Reload();
  state_->metrics->CredentialReload("tokens", reloaded.ok());
  if (reloaded.ok()) {
    common::LogInfo("tokens reloaded",
                    {{"tokens", state_->auth->token_count()}, {"file", options_.tokens_file}});
  } else {
    common::LogError("tokens not reloaded; the previous tokens stay in force",
                     {{"error", reloaded.ToString()}});
  }
  return reloaded;
}

void KaizenServer::Wait() {
  if (!state_->server) return;
  state_->server->Wait();
  // The server stops accepting calls midway through Shutdown(); wait for the
  // rest of it (serving engine, threads) too.
  state_->shutdown_done.WaitForNotification();
}

}  // namespace kaizen::api
