// Models: uploaded TorchScript files, the built-in architectures, and
// versions written by fine-tuning jobs. Uploaded files are kept byte for byte
// once a sandboxed inspector (sandboxed_inspection.h) has checked them: the
// archive, the operators, and forward passes at batch 1 and serving's batch.
#pragma once

#include <torch/script.h>

#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "kaizen/v1/model_service.pb.h"
#include "server/datasets/dataset_file.h"
#include "server/models/sandboxed_inspection.h"
#include "server/store/metadata_store.h"
#include "server/store/upload_receiver.h"

namespace kaizen::store {

class ModelStore {
 public:
  struct Options {
    // Root data directory (holds models/ and tmp/).
    std::string data_dir;
    // Largest TorchScript file accepted.
    int64_t max_model_bytes = int64_t{2} << 30;
    // The sandbox uploaded files are inspected in.
    models::SandboxOptions sandbox;
    // Checks an accepted text model's input and tokenizer file (the server
    // passes training::TextModelInput::Load); an error refuses the upload
    // with its message. Unset: not checked at upload.
    std::function<absl::Status(const kaizen::v1::TextInput&, std::string_view tokenizer)>
        check_text_input;
    // Whose loading markers this store holds and takes back (the replica's
    // id), and whether other replicas share the catalogue: a replica takes
    // back only its own (another's may be a load in progress), a lone
    // server every marker.
    std::string replica_id = "local";
    bool shared_database = false;
    // How long a loading marker outlives its replica's last renewal
    // (RenewLoadingMarkers) before another replica takes it for a death
    // (the server passes --job_lease_seconds).
    absl::Duration loading_marker_lease = absl::Seconds(30);
    // Tests only: called with the model's name once an upload's sandboxed
    // inspection has accepted it, before its version is stored.
    std::function<void(const std::string& name)> after_inspection;
  };

  class Upload {
   public:
    ~Upload();
    absl::Status Append(absl::string_view bytes) { return receiver_.Append(bytes); }
    absl::StatusOr<kaizen::v1::Model> Finish(absl::string_view sha256_hex);

   private:
    friend class ModelStore;
    Upload(ModelStore* store, kaizen::v1::UploadModelHeader header,
           UploadReceiver::Options receiver_options)
        : store_(store), header_(std::move(header)), receiver_(std::move(receiver_options)) {}
    ModelStore* store_;
    kaizen::v1::UploadModelHeader header_;
    UploadReceiver receiver_;
  };

  // A model file ready to stream; a temporary one (a built-in rendered on
  // demand) is removed when this object dies.
  class File {
   public:
    File(kaizen::v1::Model model, std::string path, bool temporary)
        : model_(std::move(model)), path_(std::move(path)), temporary_(temporary) {}
    File(File&& o) noexcept;
    File(const File&) = delete;
    ~File();
    const kaizen::v1::Model& model() const { return model_; }
    const std::string& path() const { return path_; }

   private:
    kaizen::v1::Model model_;
    std::string path_;
    bool temporary_;
  };

  ModelStore(Options options, MetadataStore* metadata);
  ~ModelStore();

  absl::StatusOr<std::unique_ptr<Upload>> BeginUpload(const kaizen::v1::UploadModelHeader& header);

  // version 0: the newest. Fills versions / latest_version / best_version.
  absl::StatusOr<kaizen::v1::Model> Get(const std::string& name, int64_t version);
  absl::StatusOr<kaizen::v1::ListModelsResponse> List(const kaizen::v1::ListModelsRequest& request);
  // version 0: every version. Built-ins cannot be deleted.
  absl::Status Delete(const std::string& name, int64_t version);
  absl::StatusOr<File> OpenFile(const std::string& name, int64_t version);

  // Adds the next version of the fine-tuned model `name` (created on first
  // use): the TorchScript file with `metadata` embedded, and beside it
  // (`<file>.resume`) the opaque state a job needs to resume and, when given,
  // (`<file>.exemplars`, a dataset file written atomically) the rehearsal
  // memory of an INCREMENTAL job. Returns the stored model with its version.
  // With `lease` (a job's run, replicas on one database) the version's row
  // is stored only while the lease is live (ABORTED otherwise, its files
  // removed): nobody sees a version a replica that lost the job wrote.
  absl::StatusOr<kaizen::v1::Model> AddVersion(
      const std::string& name, const torch::jit::Module& module, kaizen::v1::Model metadata,
      absl::string_view resume_state, const datasets::DecodedDataset* exemplars = nullptr,
      std::string_view tokenizer = {}, const JobLease* lease = nullptr);
  // The tokenizer file a text model's version carries (NotFound for a model
  // without text_input; DataLoss when the file is damaged).
  absl::StatusOr<std::string> ReadTokenizer(const std::string& name, int64_t version);
  // The rehearsal memory stored with a version (NOT_FOUND when it has none;
  // DATA_LOSS when the file is damaged).
  absl::StatusOr<datasets::DecodedDataset> ReadExemplars(const std::string& name, int64_t version);
  // Whether a version has a rehearsal memory, without reading it (a stat).
  absl::StatusOr<bool> HasExemplars(const std::string& name, int64_t version);
  // The resume state saved with a version (NOT_FOUND when it has none).
  absl::StatusOr<std::string> ReadResumeState(const std::string& name, int64_t version);
  // Loads a version as a TorchScript module on the CPU (built-ins excluded:
  // the trainer creates those for the dataset's shape).
  absl::StatusOr<torch::jit::Module> LoadModule(const std::string& name, int64_t version);
  // Stores a job's evaluation of one version on its test dataset.
  absl::Status SetTestEvaluation(const std::string& name, int64_t version,
                                 const kaizen::v1::Evaluation& evaluation) {
    return metadata_->SetTestEvaluation(name, version, evaluation);
  }
  // Records that a version must not be served again (see
  // MetadataStore::QuarantineModel); Get and List report it.
  absl::Status Quarantine(const std::string& name, int64_t version, const std::string& reason);
  // Durable "loading" markers for serving (MetadataStore::MarkLoading),
  // leased for Options::loading_marker_lease and kept leased while the load
  // is in progress (StartLoadingMarkerUpkeep).
  absl::Status MarkLoading(const std::string& name, int64_t version);
  absl::Status ClearLoading(const std::string& name, int64_t version);
  // At start: quarantines every version whose loading marker this replica
  // (a lone server: any server) left behind when it died, and, with a
  // shared database, those whose marker's lease ran out more than a whole
  // lease ago (their replica died loading them and never came back under
  // its id); returns how many.
  absl::StatusOr<int> QuarantineInterruptedLoads();
  // Shared database: a thread that runs LoadingMarkerUpkeep every third of
  // the lease, from this call to StopLoadingMarkerUpkeep (called once
  // serving's loads have ended) or the destructor.
  void StartLoadingMarkerUpkeep();
  void StopLoadingMarkerUpkeep();
  // One round of the upkeep (tests call it directly): renews the markers of
  // this process's loads in progress and removes its others (one a failed
  // ClearLoading left); then, once this replica's renewals have succeeded
  // without a gap for a whole lease (so that a database outage, which
  // stops every replica's renewals, costs no replica its loads), takes the
  // markers that other replicas stopped renewing (they died, or stalled
  // past the lease, while loading) and quarantines their versions. Returns
  // how many it quarantined.
  absl::StatusOr<int> LoadingMarkerUpkeep();
  // After this replica loaded a version: lifts its quarantine if another
  // replica set it on taking this replica's marker (its lease ran out while
  // this replica stalled during the load, which has now succeeded); whether
  // it did.
  absl::StatusOr<bool> LiftQuarantineOfAStalledLoad(const std::string& name, int64_t version);
  // Deletes versions of `name` up to `newest_considered` that are not in
  // `keep`; newer ones (written since by another replica that took the job
  // over) stay.
  absl::Status PruneVersions(const std::string& name, const std::vector<int64_t>& keep,
                             int64_t newest_considered);
  // Deletes one version without Delete's in-use check (a job's run pruning
  // or withdrawing its own checkpoints). With `only_sha256`, only while the
  // version is still those bytes (NOT_FOUND otherwise): numbers are handed
  // out again after a deletion, so another replica's version of the same
  // number stays.
  absl::Status RemoveVersion(const std::string& name, int64_t version,
                             absl::string_view only_sha256 = {});

  // Answers whether a queued or running job uses a name; Delete refuses
  // (FAILED_PRECONDITION) while it does. Delete holds `references` (when
  // given) exclusively from that check to the removal, so that a job that
  // validates its references under a shared hold of it cannot slip between.
  using InUseCheck = std::function<absl::StatusOr<bool>(const std::string& name)>;
  void set_in_use_check(InUseCheck check, absl::Mutex* references = nullptr) {
    in_use_ = std::move(check);
    references_ = references;
  }

  // The active job (on any replica: it reads the shared job table) whose
  // output is a model name, if any. An upload is refused while one exists:
  // checked when it begins and when its bytes are in, since another
  // replica's job does not hold the name in this store's reservations. Once
  // set (the job table exists), the version's insertion after the sandboxed
  // inspection (seconds) checks the job table again in its own transaction
  // (MetadataStore::InsertModel), so a job submitted meanwhile through any
  // replica refuses the upload, or is refused (JobStore::Insert).
  using OutputCheck =
      std::function<absl::StatusOr<std::optional<std::string>>(const std::string& name)>;
  void set_output_check(OutputCheck check) { output_check_ = std::move(check); }

  // Reserves a model name for `owner` ("an upload", "job ft-..."), so that an
  // upload and a fine-tuning job's output can never take the same name.
  // ALREADY_EXISTS when another owner holds it or, unless `may_exist`, when
  // the model exists. ReleaseName frees it.
  absl::Status ReserveName(const std::string& name, const std::string& owner,
                           bool may_exist = false);
  void ReleaseName(const std::string& name);

  // Told about every version written by AddVersion (after it is committed)
  // and every version deleted (after its row is gone); the serving engine
  // uses it to swap versions. Set once, before the store is used.
  struct Listener {
    std::function<void(const kaizen::v1::Model& model)> added;
    std::function<void(const std::string& name, int64_t version)> deleted;
  };
  void set_listener(Listener listener) { listener_ = std::move(listener); }

  // Several replicas on one database: tells the listener what other
  // replicas changed in the catalogue since the last call (the first call
  // only takes note of what exists): every version they deleted (gone, or
  // its number reused by a version with other bytes), then the newest
  // version of each model they wrote. This store's own writes and deletions
  // were told when they happened and are not told again. Reads every
  // version's row (without blocking this store's writes); keeps each
  // version's number and digest. One failed listener call is logged and the
  // others are still made.
  absl::Status AnnounceOtherReplicasChanges();

  int64_t max_model_bytes() const { return options_.max_model_bytes; }

 private:
  absl::Status FillVersions(kaizen::v1::Model* model);
  // Why a taken marker's version is quarantined.
  std::string StoppedLoadReason(const MetadataStore::LoadingMarker& marker) const;
  // How that reason starts for a marker of `owner` taken by another
  // replica once its lease ran out.
  static std::string ExpiredMarkerReasonPrefix(const std::string& owner);
  void LogStoppedLoads(const std::vector<MetadataStore::LoadingMarker>& markers);
  absl::Status RemoveFiles(const std::vector<ModelRow>& rows);

  Options options_;
  MetadataStore* metadata_;
  InUseCheck in_use_;
  OutputCheck output_check_;
  // ALREADY_EXISTS naming the job when output_check_ finds one writing `name`.
  absl::Status CheckNoJobWrites(const std::string& name);
  absl::Mutex* references_ = nullptr;
  Listener listener_;
  absl::Mutex mu_;
  // Reserved name -> who holds it.
  absl::flat_hash_map<std::string, std::string> reserved_ ABSL_GUARDED_BY(mu_);
  // Serialises AddVersion so that version numbers are handed out once.
  absl::Mutex version_mu_;
  // What AnnounceOtherReplicasChanges compares the catalogue with: every
  // stored version's digest by model and version, as last read or written
  // or deleted by this store. One scan at a time (scan_mu_); the catalogue
  // is read without announced_mu_, and versions this store writes or
  // deletes meanwhile are noted in touched_ so that the scan does not take
  // them for another replica's.
  absl::Mutex scan_mu_;
  absl::Mutex announced_mu_;
  using KnownVersions = absl::flat_hash_map<std::string, std::map<int64_t, std::string>>;
  KnownVersions known_ ABSL_GUARDED_BY(announced_mu_);
  bool announced_once_ ABSL_GUARDED_BY(announced_mu_) = false;
  bool scanning_ ABSL_GUARDED_BY(announced_mu_) = false;
  std::vector<std::pair<std::string, int64_t>> touched_ ABSL_GUARDED_BY(announced_mu_);
  // Loading markers: this process's loads in progress (how many of each
  // version), held across each write of its markers so that a renewal
  // never removes a marker whose load has just begun.
  absl::Mutex loading_mu_;
  std::map<std::pair<std::string, int64_t>, int> loading_ ABSL_GUARDED_BY(loading_mu_);
  // The upkeep's health: since when its renewals have succeeded with no
  // gap over half a lease (monotonic), and its last success.
  absl::Duration renewing_since_ ABSL_GUARDED_BY(loading_mu_) = absl::InfiniteDuration();
  absl::Duration last_renewal_ ABSL_GUARDED_BY(loading_mu_) = -absl::InfiniteDuration();
  std::mutex upkeep_mu_;
  std::condition_variable upkeep_wake_;
  bool upkeep_stopping_ = false;
  std::thread upkeep_thread_;
  // This store wrote (sha256 set) or deleted (nullopt) a version.
  void NoteLocalChange(const std::string& name, int64_t version, std::optional<std::string> sha256);
};

}  // namespace kaizen::store
