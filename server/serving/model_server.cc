#include "server/serving/model_server.h"

#include <torch/torch.h>

#include <algorithm>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "server/common/logging.h"
#include "server/common/status_macros.h"
#include "server/metrics/metrics.h"
#include "server/models/builtin_models.h"
#include "server/store/model_store.h"

namespace kaizen::serving {

using kaizen::v1::Model;
using kaizen::v1::VersionPolicy;

namespace {

// The version a policy serves: the newest (or the best) that is not
// quarantined.
int64_t PickServableVersion(const Model& model, bool best) {
  const std::set<int64_t> quarantined(model.quarantined_versions().begin(),
                                      model.quarantined_versions().end());
  const int64_t latest = model.latest_version() > 0 ? model.latest_version() : model.version();
  const int64_t best_version = model.best_version() > 0 ? model.best_version() : latest;
  if (best && !quarantined.count(best_version)) return best_version;
  for (auto it = model.versions().rbegin(); it != model.versions().rend(); ++it) {
    if (!quarantined.count(*it)) return *it;
  }
  return best ? best_version : latest;  // all quarantined: the load says why
}

// The loaded version that answers a request for `version` (0: by policy,
// the best or the latest) among `loaded`, or null.
std::shared_ptr<const LoadedModel> Lookup(
    const std::map<int64_t, std::shared_ptr<const LoadedModel>>& loaded, int64_t latest,
    int64_t best_version, int64_t version, bool best) {
  const int64_t v = version > 0 ? version : (best ? best_version : latest);
  auto it = loaded.find(v);
  return v > 0 && it != loaded.end() ? it->second : nullptr;
}

// The server-wide settings a model's serving config falls back to.
ServingConfig Defaults(const ModelServer::Options& o) {
  ServingConfig c;
  c.max_batch_size = o.max_batch_size;
  c.max_queue_delay = o.max_queue_delay;
  c.max_queue_size = o.max_queue_size;
  c.instances = std::max(1, o.instances);
  c.threads_per_instance = o.threads_per_instance;
  return c;
}

BatcherRegistry::Options RegistryOptions(const ModelServer::Options& o) {
  BatcherRegistry::Options r;
  r.models = o.models;
  r.defaults = Defaults(o);
  r.clock = o.clock;
  r.before_forward = o.before_forward;
  return r;
}

}  // namespace

// Versions other than the latest and the best kept loaded per model.
constexpr int kPinnedVersionsKept = 3;

// The loaded versions of one model and which of them answers by policy.
struct ModelServer::Entry {
  std::map<int64_t, std::shared_ptr<const LoadedModel>> loaded;
  int64_t latest = 0;  // 0: not resolved yet
  int64_t best = 0;
  // Bumped by every deletion, and the generation at which each version was
  // last deleted: a load that started before its version was deleted is not
  // installed (the file may be gone, and the catalogue can hand a deleted
  // version's number out again).
  uint64_t generation = 0;
  std::map<int64_t, uint64_t> deleted_at;
  // The last request's time, and whether the catalogue has a newer latest
  // (best) version than the one loaded, left for the next request because
  // the model was idle (Options::reload_idle_after).
  absl::Time last_request = absl::InfinitePast();
  bool stale_latest = false;
  bool stale_best = false;

  // What answers `version` (> 0 pins it) or, by policy, the latest or best
  // one; null when that is not loaded, or when it is stale and
  // `allow_stale` is false.
  std::shared_ptr<const LoadedModel> Serving(int64_t version, bool by_best,
                                             bool allow_stale) const {
    if (!allow_stale && version == 0 && (by_best ? stale_best : stale_latest)) return nullptr;
    return Lookup(loaded, latest, best, version, by_best);
  }

  bool DeletedSince(int64_t version, uint64_t since) const {
    auto it = deleted_at.find(version);
    return it != deleted_at.end() && it->second > since;
  }
  // Serialises loads of this model so that concurrent first requests load
  // it once.
  absl::Mutex load_mu;
};

absl::StatusOr<torch::Device> ResolveServingDevice(const std::string& device) {
  if (device.empty()) {
    return torch::cuda::is_available() ? torch::Device(torch::kCUDA, 0)
                                       : torch::Device(torch::kCPU);
  }
  try {
    return torch::Device(device);
  } catch (const std::exception&) {
    return absl::InvalidArgumentError(
        absl::StrCat("serving device \"", device, "\" is not a device (cpu, cuda, cuda:1, ...)"));
  }
}

absl::StatusOr<std::unique_ptr<ModelServer>> ModelServer::Create(Options options,
                                                                 store::ModelStore* models,
                                                                 metrics::Metrics* metrics) {
  ASSIGN_OR_RETURN(const torch::Device device, ResolveServingDevice(options.device));
  // Versions a dead server was loading are not tried again. Taken before
  // anything can load (the loader, a request, a job's new version), so that
  // no marker taken is a load of this process.
  if (options.quarantine_interrupted_loads) {
    ASSIGN_OR_RETURN(int interrupted, models->QuarantineInterruptedLoads());
    if (interrupted > 0) {
      common::LogWarning("versions quarantined after an interrupted load",
                         {{"count", interrupted}});
    }
  }
  std::unique_ptr<ModelServer> server(new ModelServer(std::move(options), models, metrics, device));
  // Started only once the server is whole.
  server->loader_ = std::thread([s = server.get()] { s->LoaderLoop(); });
  return server;
}

ModelServer::ModelServer(Options options, store::ModelStore* models, metrics::Metrics* metrics,
                         torch::Device device)
    : options_(std::move(options)),
      store_(models),
      metrics_(metrics),
      device_(device),
      loader_fn_(options_.loader ? options_.loader : TorchScriptLoader(device_, options_.optimize)),
      batchers_(RegistryOptions(options_), metrics) {}

ModelServer::~ModelServer() { Stop(); }

absl::Status ModelServer::Start() {
  if (options_.before_preload) options_.before_preload();
  if (options_.preload) RETURN_IF_ERROR(Preload());
  started_ = true;
  return absl::OkStatus();
}

absl::Status ModelServer::Preload() {
  kaizen::v1::ListModelsRequest request;
  request.set_page_size(1000);
  int loaded = 0, failed = 0;
  do {
    absl::StatusOr<kaizen::v1::ListModelsResponse> page = store_->List(request);
    if (!page.ok()) return page.status();
    for (const Model& m : page->models()) {
      if (m.source() == kaizen::v1::MODEL_SOURCE_BUILTIN) continue;
      {
        absl::MutexLock lock(&mu_);
        if (stopping_) return absl::CancelledError("stopped while preloading");
      }
      absl::StatusOr<std::shared_ptr<const LoadedModel>> r =
          Resolve(m.name(), 0, kaizen::v1::VERSION_POLICY_UNSPECIFIED, /*request=*/false);
      r.ok() ? ++loaded : ++failed;
    }
    request.set_page_token(page->next_page_token());
  } while (!request.page_token().empty());
  common::LogInfo("models preloaded",
                  {{"loaded", loaded}, {"failed", failed}, {"device", device_.str()}});
  return absl::OkStatus();
}

void ModelServer::Stop() {
  absl::MutexLock stop_lock(&stop_mu_);
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    started_ = false;
  }
  // The batchers are freed only with the ModelServer: a caller may still
  // hold one.
  batchers_.Stop();
  if (loader_.joinable()) loader_.join();
}

ServingConfig ModelServer::ConfigFor(const std::string& name) const {
  return EffectiveServingConfig(options_.models, name, Defaults(options_));
}

absl::StatusOr<std::shared_ptr<const LoadedModel>> ModelServer::LoadVersion(const std::string& name,
                                                                            int64_t version) {
  ASSIGN_OR_RETURN(store::ModelStore::File file, store_->OpenFile(name, version));
  if (!file.model().quarantine_reason().empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("model \"", name, "\" version ", version, " is quarantined and not served: ",
                     file.model().quarantine_reason(), "; delete it or write a new version"));
  }
  const int batch = std::max(1, ConfigFor(name).max_batch_size);
  std::vector<int64_t> warmup = {1};
  if (batch > 1) warmup.push_back(batch);
  const absl::Time start = absl::Now();
  // Held while the version loads and warms up: if this process dies here,
  // the next start quarantines the version instead of dying the same way.
  RETURN_IF_ERROR(store_->MarkLoading(name, version));
  absl::StatusOr<std::shared_ptr<const LoadedModel>> loaded =
      loader_fn_(file.path(), file.model(), warmup);
  store_->ClearLoading(name, version).IgnoreError();
  if (metrics_) metrics_->ModelLoaded(name, loaded.ok());
  if (!loaded.ok()) {
    common::LogError(
        "model version failed to load",
        {{"model", name}, {"version", version}, {"error", loaded.status().ToString()}});
    // Not retried on every request or at every start; a version deleted
    // meanwhile needs no record.
    if (store_->Get(name, version).ok()) {
      store_->Quarantine(name, version, std::string(loaded.status().message())).IgnoreError();
    }
    return loaded.status();
  }
  // Another replica may have taken this load's marker while this process
  // stalled: the load is the proof that the version does not crash.
  store_->LiftQuarantineOfAStalledLoad(name, version).IgnoreError();
  common::LogInfo("model version loaded", {{"model", name},
                                           {"version", version},
                                           {"device", device_.str()},
                                           {"optimized", (*loaded)->optimized()},
                                           {"ms", absl::ToInt64Milliseconds(absl::Now() - start)}});
  return loaded;
}

absl::StatusOr<std::shared_ptr<const LoadedModel>> ModelServer::Acquire(const std::string& name,
                                                                        int64_t version,
                                                                        VersionPolicy policy) {
  return Resolve(name, version, policy, /*request=*/true);
}

absl::StatusOr<std::shared_ptr<const LoadedModel>> ModelServer::Resolve(const std::string& name,
                                                                        int64_t version,
                                                                        VersionPolicy policy,
                                                                        bool request) {
  if (version < 0) {
    return absl::InvalidArgumentError(absl::StrCat("version is ", version, "; it must be >= 0"));
  }
  if (models::IsBuiltinModel(name)) {
    return absl::FailedPreconditionError(
        absl::StrCat("\"", name,
                     "\" is a built-in architecture with random weights; fine-tune it "
                     "(StartFineTune) and serve the model the job writes"));
  }
  if (policy == kaizen::v1::VERSION_POLICY_UNSPECIFIED) policy = ConfigFor(name).policy;
  const bool best = policy == kaizen::v1::VERSION_POLICY_BEST;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return absl::UnavailableError("the server is shutting down");
    auto it = entries_.find(name);
    if (it != entries_.end()) {
      Entry& e = *it->second;
      if (request) e.last_request = options_.clock->Now();
      if (auto m = e.Serving(version, best, /*allow_stale=*/false)) return m;
    }
  }
  // Not loaded. The catalogue says whether the model exists (so unknown
  // names never get an entry) and which version the policy picks.
  ASSIGN_OR_RETURN(Model model, store_->Get(name, version));
  if (model.source() == kaizen::v1::MODEL_SOURCE_BUILTIN) {
    return absl::FailedPreconditionError(absl::StrCat("\"", name, "\" is a built-in architecture"));
  }
  const int64_t target = version > 0 ? version : PickServableVersion(model, best);
  absl::StatusOr<std::shared_ptr<const LoadedModel>> loaded =
      LoadForRequest(name, version, best, target, request);
  if (!loaded.ok() && version == 0) {
    // A stale model's newest version that does not load (it is quarantined
    // now) never replaces the good one still loaded: that one answers.
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(name);
    if (it != entries_.end()) {
      if (auto m = it->second->Serving(version, best, /*allow_stale=*/true)) return m;
    }
  }
  return loaded;
}

std::pair<std::shared_ptr<ModelServer::Entry>, uint64_t> ModelServer::EntryFor(
    const std::string& name) {
  absl::MutexLock lock(&mu_);
  std::shared_ptr<Entry>& slot = entries_[name];
  if (!slot) slot = std::make_shared<Entry>();
  return {slot, slot->generation};
}

absl::StatusOr<std::shared_ptr<const LoadedModel>> ModelServer::LoadForRequest(
    const std::string& name, int64_t version, bool best, int64_t target, bool request) {
  auto [entry, generation] = EntryFor(name);
  // Loaded once: concurrent first requests wait for the first one's load.
  absl::MutexLock load_lock(&entry->load_mu);
  {
    absl::MutexLock lock(&mu_);
    if (request) entry->last_request = options_.clock->Now();  // a new entry's first
    if (auto m = entry->Serving(version, best, /*allow_stale=*/false)) return m;
    auto it = entry->loaded.find(target);
    if (it != entry->loaded.end()) {
      if (version == 0) InstallForPolicy(name, *entry, target, best);
      return it->second;
    }
  }
  ASSIGN_OR_RETURN(std::shared_ptr<const LoadedModel> loaded, LoadVersion(name, target));
  absl::MutexLock lock(&mu_);
  if (entry->DeletedSince(target, generation)) {
    // Deleted while it loaded: not installed; this request still gets the
    // weights it asked for.
    return loaded;
  }
  entry->loaded[target] = loaded;
  if (version == 0) InstallForPolicy(name, *entry, target, best);
  return loaded;
}

void ModelServer::InstallForPolicy(const std::string& name, Entry& entry, int64_t target,
                                   bool best) {
  // Only move forward: the background loader may have installed a newer one.
  if (best) {
    entry.best = std::max(entry.best, target);
    entry.stale_best = false;
  } else {
    entry.latest = std::max(entry.latest, target);
    entry.stale_latest = false;
    if (metrics_) metrics_->SetServingVersion(name, entry.latest);
  }
  ReleaseOldVersions(entry);
}

absl::StatusOr<torch::Tensor> ModelServer::Infer(const std::shared_ptr<const LoadedModel>& model,
                                                 torch::Tensor inputs,
                                                 const InferOptions& options) {
  // Images [N, C, H, W]; a text model's ids [N, T].
  const int64_t n = inputs.dim() == (model->is_text() ? 2 : 4) ? inputs.size(0) : 0;
  if (n < 1) return absl::InvalidArgumentError("the batch is empty; send at least one input");
  ModelBatcher* batcher = batchers_.Get(model->name());
  if (batcher == nullptr) return absl::UnavailableError("the server is shutting down");
  return batcher->Run(model, std::move(inputs), options);
}

bool ModelServer::IsReady(const std::string& name, int64_t version) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(name);
  if (it == entries_.end()) return false;
  const Entry& e = *it->second;
  int64_t v = version;
  if (v == 0) v = ConfigFor(name).policy == kaizen::v1::VERSION_POLICY_BEST ? e.best : e.latest;
  return v > 0 && e.loaded.count(v) > 0;
}

std::map<std::string, std::vector<int64_t>> ModelServer::LoadedVersions() {
  absl::MutexLock lock(&mu_);
  std::map<std::string, std::vector<int64_t>> out;
  for (const auto& [name, e] : entries_) {
    for (const auto& [v, m] : e->loaded) out[name].push_back(v);
  }
  return out;
}

void ModelServer::OnVersionAdded(const Model& model) {
  absl::MutexLock lock(&mu_);
  if (stopping_) return;
  // Models that were never asked for are loaded on first use, unless the
  // server preloads everything.
  if (!options_.preload && !entries_.contains(model.name())) return;
  pending_.push_back(model);
}

void ModelServer::Warm(const std::string& name) {
  absl::MutexLock lock(&mu_);
  if (stopping_) return;
  if (!options_.preload && !entries_.contains(name)) return;
  kaizen::v1::Model model;
  model.set_name(name);
  forced_.insert(name);
  pending_.push_back(std::move(model));
}

void ModelServer::OnVersionDeleted(const std::string& name, int64_t version) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(name);
  if (it == entries_.end()) return;
  Entry& e = *it->second;
  e.deleted_at[version] = ++e.generation;
  e.loaded.erase(version);  // requests holding it finish on it
  if (e.latest == version) e.latest = 0;
  if (e.best == version) e.best = 0;
}

void ModelServer::LoaderLoop() {
  Model next;
  bool forced = false;
  while (NextPending(&next, &forced)) SwapIn(next.name(), forced);
}

bool ModelServer::NextPending(Model* next, bool* forced) {
  absl::MutexLock lock(&mu_);
  while (true) {
    mu_.Await(absl::Condition(
        +[](ModelServer* self) ABSL_EXCLUSIVE_LOCKS_REQUIRED(self->mu_) {
          return self->stopping_ || !self->pending_.empty();
        },
        this));
    if (stopping_) return false;
    *next = std::move(pending_.front());
    pending_.erase(pending_.begin());
    // Versions arrive in order; several queued for one model collapse into
    // the newest (the catalogue is asked for the current latest and best).
    if (std::none_of(pending_.begin(), pending_.end(),
                     [&](const Model& m) { return m.name() == next->name(); })) {
      *forced = forced_.erase(next->name()) > 0;
      return true;
    }
  }
}

void ModelServer::SwapIn(const std::string& name, bool forced) {
  // Warm() comes for every job's output when the job ends, one that wrote
  // no version included: no entry for a name the catalogue does not have.
  if (forced && !store_->Get(name, 0).ok()) return;
  auto [entry, generation] = EntryFor(name);  // before the catalogue is read
  if (!forced && options_.reload_idle_after > absl::ZeroDuration()) {
    absl::MutexLock lock(&mu_);
    const absl::Duration idle = options_.clock->Now() - entry->last_request;
    if (idle >= options_.reload_idle_after) {
      // Nobody is asking: the cores stay with training. The next request
      // loads what the catalogue then says.
      entry->stale_latest = entry->stale_best = true;
      if (metrics_) metrics_->ModelLoadDeferred(name);
      return;
    }
  }
  absl::StatusOr<Model> current = store_->Get(name, 0);
  if (!current.ok()) return;  // deleted meanwhile
  const int64_t latest = PickServableVersion(*current, false);
  const int64_t best = PickServableVersion(*current, true);
  absl::MutexLock load_lock(&entry->load_mu);
  for (int64_t v : {latest, best}) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
      if (entry->loaded.count(v)) continue;
    }
    // Loaded and warmed up outside the lock; a failure keeps the old one.
    absl::StatusOr<std::shared_ptr<const LoadedModel>> loaded = LoadVersion(name, v);
    if (!loaded.ok()) continue;
    absl::MutexLock lock(&mu_);
    if (entry->DeletedSince(v, generation)) continue;  // deleted meanwhile: stale
    entry->loaded[v] = *std::move(loaded);
  }
  absl::MutexLock lock(&mu_);
  const int64_t old_latest = entry->latest;
  if (entry->loaded.count(latest)) {
    if (latest > entry->latest) entry->latest = latest;
    entry->stale_latest = false;
  }
  if (entry->loaded.count(best)) {
    entry->best = best;
    entry->stale_best = false;
  }
  ReleaseOldVersions(*entry);
  if (entry->latest != old_latest) {
    if (metrics_) metrics_->SetServingVersion(name, entry->latest);
    common::LogInfo("model version swapped in",
                    {{"model", name}, {"from", old_latest}, {"to", entry->latest}});
  }
}

void ModelServer::ReleaseOldVersions(Entry& entry) {
  // Besides the latest and the best, the newest few other versions stay
  // loaded for requests that pin them; older ones are released (loaded
  // again on demand; requests in flight keep theirs alive).
  std::vector<int64_t> others;  // newest first
  for (auto it = entry.loaded.rbegin(); it != entry.loaded.rend(); ++it) {
    if (it->first != entry.latest && it->first != entry.best) others.push_back(it->first);
  }
  for (size_t i = kPinnedVersionsKept; i < others.size(); ++i) entry.loaded.erase(others[i]);
}

RequestImageDecoder ModelServer::NewImageDecoder(absl::Time deadline,
                                                 std::function<bool()> cancelled,
                                                 int64_t received_bytes) const {
  RequestImageDecoder::Options o;
  o.max_pixels = options_.max_image_pixels;
  o.max_jpeg_scans = options_.max_jpeg_scans;
  o.budget = options_.decode_budget;
  o.deadline = deadline;
  o.cancelled = std::move(cancelled);
  o.clock = options_.clock;
  return RequestImageDecoder(std::move(o), received_bytes);
}

}  // namespace kaizen::serving
