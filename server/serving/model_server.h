// ModelServer: which version of each model answers, and the dynamic batcher
// in front of it (one per model, kept by a BatcherRegistry).
//
// - Resolution: a request names a model and either pins a version or follows
//   a policy, LATEST (default) or BEST (best validation metric); a model's
//   serving config may change its default policy. Versions are loaded on
//   first use (and at start-up, see Options::preload) and kept loaded.
// - Hot swaps: when a job writes a new version (ModelStore's version
//   listener), a background loader loads it, warms it up and then swaps it in
//   atomically; several waiting for one model collapse into the newest. A
//   model nobody has asked for in Options::reload_idle_after is not reloaded
//   at each version: its next request loads the newest one (and waits for
//   it), or Warm() does once the job writing it ends. Requests already
//   holding the old version finish on it; the old module is freed when its
//   last request ends. A version that fails to load never replaces a good
//   one: the failure is logged and counted.
// - Batching: concurrent requests for the same model version are merged into
//   one forward pass of up to max_batch_size inputs, waiting at most
//   max_queue_delay for the batch to fill. Each model has a bounded queue
//   feeding `instances` executor threads, each running one batch at a time on
//   the same immutable module: a request that finds the queue full fails at
//   once with RESOURCE_EXHAUSTED. Requests whose deadline has passed, or whose caller
//   went away, are dropped before compute.
// Per-model settings come from serving_config.h; versions are loaded through
// a ModelLoader (model_loader.h), which tests replace.
#pragma once

#include <torch/script.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "kaizen/v1/inference_service.pb.h"
#include "kaizen/v1/model_service.pb.h"
#include "server/common/clock.h"
#include "server/datasets/decode_budget.h"
#include "server/serving/batcher_registry.h"
#include "server/serving/loaded_model.h"
#include "server/serving/model_batcher.h"
#include "server/serving/model_loader.h"
#include "server/serving/preprocess.h"
#include "server/serving/serving_config.h"

namespace kaizen::metrics {
class Metrics;
}
namespace kaizen::store {
class ModelStore;
}

namespace kaizen::serving {

// The device that serving runs on for Options::device: "" = CUDA device 0
// when one is available, else the CPU; otherwise the named device.
// InvalidArgument when the name is not a device.
absl::StatusOr<torch::Device> ResolveServingDevice(const std::string& device);

class ModelServer {
 public:
  struct Options {
    // Server-wide batching defaults (per-model overrides in `models`).
    int max_batch_size = 32;
    absl::Duration max_queue_delay = absl::Milliseconds(2);
    // Requests (not inputs) waiting per model.
    int max_queue_size = 1024;
    // Inputs accepted in one request (the Predictor enforces it).
    int max_request_inputs = 256;
    // Largest image accepted, width * height.
    int64_t max_image_pixels = 25'000'000;
    // Most scans in one progressive JPEG.
    int max_jpeg_scans = 100;
    // Decoded bytes the images of one Predict / ModelInfer request may
    // produce: 1 GiB at most, and the upload ratio beyond 64 MiB.
    datasets::DecodeBudget::Options decode_budget{/*max_bytes=*/int64_t{1} << 30};
    // Executor instances per model, fed from its one queue, and the intra-op
    // threads of each (see ResolveInstances in serving_config.h; the server
    // fills them). Per-model overrides in `models`.
    int instances = 0;             // 0 = 1
    int threads_per_instance = 0;  // 0 keeps LibTorch's default
    // Freeze each loaded version and, on the CPU, apply
    // torch::jit::optimize_for_inference (see LoadedModel::Load).
    bool optimize = true;
    // Load the serving version of every stored (uploaded or fine-tuned)
    // model before Start() returns.
    bool preload = true;
    // Quarantine, in Create, the versions this replica was loading when it
    // died (their markers are left in the catalogue;
    // ModelStore::QuarantineInterruptedLoads takes only its own and those
    // whose lease ran out where replicas share the database).
    bool quarantine_interrupted_loads = true;
    // A model without a request for this long is not loaded when a version is
    // written (only on its next request or Warm()); zero loads every version
    // at once.
    absl::Duration reload_idle_after = absl::Minutes(5);
    std::map<std::string, ServingConfig> models;
    // Device for every serving module; CUDA device 0 when available.
    std::string device;  // "" = auto, "cpu", "cuda:0", ...
    // Tests only: called on the preloading thread before preloading starts,
    // so that a test can observe the server before it is ready.
    std::function<void()> before_preload;
    // Tests only: called on a model's executor thread before each forward
    // pass (after the batch is counted), with the model's name, so that a
    // test can hold the executor while it queues requests behind it.
    std::function<void(const std::string& model)> before_forward;
    // Loads each version's file; empty: TorchScriptLoader(device, optimize).
    // Tests give a fake.
    ModelLoader loader;
    // Times batch delays, request deadlines and image decoding's deadline
    // checks; tests give a FakeClock.
    common::Clock* clock = common::Clock::Real();
  };

  // A server over the catalogue `models` (which must outlive it) that has
  // quarantined what a dead server was loading (quarantine_interrupted_loads)
  // and not preloaded yet (see Start()); its background loader runs already.
  // InvalidArgument when Options::device is not a device. `metrics` may be
  // null.
  static absl::StatusOr<std::unique_ptr<ModelServer>> Create(Options options,
                                                             store::ModelStore* models,
                                                             metrics::Metrics* metrics);
  ~ModelServer();
  ModelServer(const ModelServer&) = delete;
  ModelServer& operator=(const ModelServer&) = delete;

  // Preloads (see Options::preload), then reports started(). Errors
  // loading one model are logged and counted, not returned: a bad model must
  // not keep the others from being served.
  absl::Status Start();
  // Fails queued requests with UNAVAILABLE and joins every thread. Safe to
  // call more than once and from several threads.
  void Stop();
  // Not ready any more (OIP ServerReady answers false) while requests are
  // still served: the server is draining.
  void BeginDrain() { started_ = false; }

  // The version that answers a request: `version` > 0 pins it, otherwise
  // `policy` (or the model's configured policy) picks LATEST or BEST.
  // NotFound for an unknown model or version, FailedPrecondition for a
  // built-in architecture (random weights), Internal if the file does not
  // load. Loads on demand (a request for a version that is not loaded waits
  // for its load, and for a load of the same model already under way).
  absl::StatusOr<std::shared_ptr<const LoadedModel>> Acquire(const std::string& name,
                                                             int64_t version,
                                                             kaizen::v1::VersionPolicy policy);

  // Runs `inputs` (float [N, C, H, W], preprocessed for `model`) through
  // `model`'s batcher and blocks until done. Returns probabilities
  // [N, classes]. ResourceExhausted when the queue is full. The request's
  // size was checked by the Predictor (predictor.h), the one way in.
  absl::StatusOr<torch::Tensor> Infer(const std::shared_ptr<const LoadedModel>& model,
                                      torch::Tensor inputs, const InferOptions& options);

  // True when `name` (and `version`, if > 0) is loaded and can answer at
  // once.
  bool IsReady(const std::string& name, int64_t version);
  // The loaded versions, by model name, each list ascending.
  std::map<std::string, std::vector<int64_t>> LoadedVersions();
  // True once Start() has finished preloading, until draining begins.
  bool started() const { return started_.load(); }

  const Options& options() const { return options_; }
  int64_t max_image_pixels() const { return options_.max_image_pixels; }
  // A decoder for one request's images under this server's limits and decode
  // budget; `received_bytes` are the request's encoded image bytes.
  RequestImageDecoder NewImageDecoder(absl::Time deadline, std::function<bool()> cancelled,
                                      int64_t received_bytes) const;

  // Called by the store when a version is written (the loader picks it up)
  // or deleted (dropped from serving; requests holding it finish).
  void OnVersionAdded(const kaizen::v1::Model& model);
  // Has the background loader load `name`'s serving versions even if it is
  // idle: the job writing it has ended. Ignored for a model never asked for
  // when the server does not preload.
  void Warm(const std::string& name);
  void OnVersionDeleted(const std::string& name, int64_t version);

 private:
  struct Entry;

  ModelServer(Options options, store::ModelStore* models, metrics::Metrics* metrics,
              torch::Device device);

  // Acquires the serving version of every stored model (Options::preload).
  absl::Status Preload();
  ServingConfig ConfigFor(const std::string& name) const;
  // The entry of model `name`, made if missing, and its deletion generation
  // now (see Entry::generation).
  std::pair<std::shared_ptr<Entry>, uint64_t> EntryFor(const std::string& name)
      ABSL_LOCKS_EXCLUDED(mu_);
  // As Acquire; `request` (false when preloading) marks the model as in use.
  absl::StatusOr<std::shared_ptr<const LoadedModel>> Resolve(const std::string& name,
                                                             int64_t version,
                                                             kaizen::v1::VersionPolicy policy,
                                                             bool request);
  // Loads `target` for a request that Acquire() could not answer from what
  // is loaded, and installs it unless it was deleted meanwhile.
  absl::StatusOr<std::shared_ptr<const LoadedModel>> LoadForRequest(const std::string& name,
                                                                    int64_t version, bool best,
                                                                    int64_t target, bool request);
  // Makes `target`, loaded, what `entry` serves by policy (LATEST or BEST),
  // never moving backwards.
  void InstallForPolicy(const std::string& name, Entry& entry, int64_t target, bool best)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::shared_ptr<const LoadedModel>> LoadVersion(const std::string& name,
                                                                 int64_t version);
  void LoaderLoop();
  // Takes the next version the loader should act on; false when stopping.
  // `forced` when Warm() asked for it.
  bool NextPending(kaizen::v1::Model* next, bool* forced) ABSL_LOCKS_EXCLUDED(mu_);
  // Loads the catalogue's latest and best versions of `name` and swaps them
  // in; a version that fails to load leaves the old one serving. Unless
  // `forced`, an idle model is only marked stale (see reload_idle_after).
  void SwapIn(const std::string& name, bool forced);
  // Releases the loaded versions other than the latest, the best and the
  // newest few others.
  static void ReleaseOldVersions(Entry& entry);

  const Options options_;
  store::ModelStore* store_;
  metrics::Metrics* metrics_;
  const torch::Device device_;
  const ModelLoader loader_fn_;
  BatcherRegistry batchers_;
  std::atomic<bool> started_{false};

  absl::Mutex mu_;
  // Per model name: the versions loaded and which answers by policy.
  absl::flat_hash_map<std::string, std::shared_ptr<Entry>> entries_ ABSL_GUARDED_BY(mu_);
  // Versions waiting for the background loader, in arrival order.
  std::vector<kaizen::v1::Model> pending_ ABSL_GUARDED_BY(mu_);
  // Names in pending_ that Warm() asked for.
  absl::flat_hash_set<std::string> forced_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread loader_;
  absl::Mutex stop_mu_;
};

}  // namespace kaizen::serving
