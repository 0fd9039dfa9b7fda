// The fine-tuning engine's control plane: validates and queues jobs, runs them
// on a pool of worker threads (one device each), turns every checkpoint into
// a new version of the output model, publishes events, and cancels, pauses,
// resumes, preempts or requeues jobs. Everything a job needs to survive a
// crash is in the JobStore and the ModelStore: on start, jobs found RUNNING
// are requeued and resume from their last checkpoint; PAUSED jobs stay
// paused.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "kaizen/v1/finetune_service.pb.h"
#include "server/jobs/data_parallel.h"
#include "server/jobs/job_event_hub.h"
#include "server/jobs/model_evaluator.h"
#include "server/jobs/tokenizer_sandbox.h"
#include "server/metrics/metrics.h"
#include "server/store/dataset_store.h"
#include "server/store/job_store.h"
#include "server/store/model_store.h"

namespace kaizen::training {
struct Checkpoint;
struct TrainerOptions;
struct TrainResult;
}  // namespace kaizen::training

namespace kaizen::jobs {

struct TextJobInputs;
struct TextJobOutput;

// How a job reads a dataset stored as a record file
// (training::TrainerOptions): converted into memory up to
// max_image_memory_bytes, streamed from disk beyond.
struct JobDataOptions {
  int64_t max_image_memory_bytes = int64_t{2} << 30;
  int loader_threads = 2;
  int prefetch_batches = 4;
  // The FINE_TUNE frozen-prefix cache's budget (TrainerOptions); 0: off.
  int64_t max_prefix_cache_bytes = int64_t{1} << 30;
  // Train in the channels_last memory format (TrainerOptions).
  bool channels_last = false;
};

class JobManager {
 public:
  struct Options {
    // Worker threads; each takes one job at a time.
    int workers = 1;
    // LibTorch intra-op threads per worker.
    int threads_per_worker = 1;
    // Step progress events are published at most this often.
    absl::Duration progress_interval = absl::Seconds(1);
    // A job found RUNNING at start-up (the server died while it ran) after
    // this many attempts ends FAILED instead of being requeued again, so that
    // a job that crashes the server cannot do so forever. Graceful shutdowns
    // do not count.
    int max_job_attempts = 3;
    // --preempt: while every worker is busy, a job that is queued (or
    // resumed) with a strictly higher priority than the lowest-priority
    // running job preempts that job: it checkpoints after its current step,
    // is PAUSED ("preempted by job ID") and goes straight back to the queue
    // at its old place, so it continues on its own once a worker is free.
    bool preempt = false;
    // Where training progress, checkpoints and job outcomes are recorded;
    // nullptr records nothing. Must outlive the manager.
    metrics::Metrics* metrics = nullptr;
    JobDataOptions data;
    // Where and within what text jobs train their tokenizers.
    TokenizerSandbox tokenizer_sandbox;
    // Jobs with a world_size above 1: their worker processes and limits.
    DataParallelOptions data_parallel;
    // <data_dir>/exports: where ExportJob writes its folders (written first
    // into data_parallel.scratch_dir, on the same file system); empty:
    // ExportJob is refused.
    std::string export_dir;
    // Most export folders export_dir may hold: ExportJob is refused
    // (RESOURCE_EXHAUSTED) at this many, until DeleteExport frees one.
    int max_exports = 64;
    // Most entries of one export folder ListExports looks at for its size
    // (what the pods wrote under out/ may be huge): beyond, the size is
    // reported incomplete.
    int64_t max_export_list_entries = 10'000;
    // Evaluates the final versions of jobs that name a test dataset; without
    // one such jobs are refused.
    ModelEvaluator* evaluator = nullptr;
    // Called with a job's output model once the job has ended (succeeded,
    // failed or cancelled): serving loads its newest version then.
    std::function<void(const std::string& model)> output_done;
    // Several replicas on one database (server --database=postgresql://…):
    // the replica's name in job leases (see JobStore::ClaimNext), how long a
    // lease lasts unrenewed (a dead replica's job is taken over after it),
    // and whether other replicas share the database. A lone server (SQLite)
    // requeues what a crash left RUNNING at start-up instead.
    bool shared_database = false;
    std::string replica_id = "local";
    absl::Duration job_lease = absl::Seconds(30);
    // Shared database: a job row left held this long (its Submit stopped
    // before queueing it) is queued (QueueAbandonedSubmissions).
    absl::Duration abandoned_submission = absl::Minutes(10);
    // This machine's clock, as leases read it; tests give a replica one that
    // is off, or one that steps. A lone server times leases by it (and so
    // does a replica before its first reading of the database's clock). With
    // a shared database leases are timed by the database's clock (LeaseNowMs),
    // advanced between readings by the monotonic clock, which also schedules
    // renewals: this one then only tells the log that the two disagree.
    std::function<absl::Time()> clock = [] { return absl::Now(); };
    // Shared database only: called after each lease renewal, for the other
    // chores that follow what other replicas wrote (new model versions).
    std::function<void()> on_replica_tick;
    // Tests only: called by Submit after it has checked the job's dataset and
    // models and before it stores the job.
    std::function<void()> after_references_checked;
    // Tests only: called by a worker after each training step with the job's
    // id and step (counted from 1 over the whole job).
    std::function<void(const std::string& job_id, int64_t step)> after_step;
    // Tests only (shared database): called with mu_ held once a run's end
    // state is stored and before its lease is released, the window in which
    // another replica may still leave a request on the lease.
    std::function<void(const std::string& job_id)> before_lease_release;
    // Tests only (shared database): called once the lease is renewed before
    // a checkpoint's version is written; a test that takes the job over
    // here plays a replica that stalled for a whole lease right after.
    std::function<void(const std::string& job_id)> before_version_written;
    // Tests only (shared database): called once a checkpoint's version is
    // stored and before the job's row is made to point at it.
    std::function<void(const std::string& job_id, int64_t version)> after_version_written;
    // Tests only (shared database): called by the replica thread before each
    // renewal of its leases; a test that blocks here plays a replica whose
    // database calls hang.
    std::function<void()> before_lease_renewal;
    // Tests only (shared database): called by Cancel once it has found no
    // live lease on a RUNNING job and before it leases the job to end it.
    std::function<void(const std::string& job_id)> before_taking_a_dead_replicas_job;
    // Tests only (shared database): called by Cancel once it has leased
    // such a job and before it reads the job's row again.
    std::function<void(const std::string& job_id)> after_taking_a_dead_replicas_job;
    // Tests only (shared database): called before an event of a run (an
    // epoch, a checkpoint, a message) is stored with the check of the run's
    // lease (PublishLeased, PublishRunMessage); a test that takes the job over here plays a replica
    // that stalled for a whole lease right after renewing it.
    std::function<void(const std::string& job_id, const kaizen::v1::JobEvent& event)>
        before_leased_event;
    // Tests only: called before a job's test evaluation of one version is
    // stored.
    std::function<void(const std::string& job_id, int64_t version)> before_test_evaluation_stored;
  };

  JobManager(Options options, store::JobStore* jobs, store::DatasetStore* datasets,
             store::ModelStore* models, JobEventHub* events);
  ~JobManager();

  // Requeues jobs a crash left RUNNING and starts the workers. With a shared
  // database, first reads the database's clock (ReadLeaseClock) unless a
  // reading was kept already.
  absl::Status Start();
  // Shared database: reads the database's clock, by which leases are timed,
  // up to 5 times 200 ms apart; UNAVAILABLE if no reading could be kept. The
  // server calls it before it listens, so that no request compares leases by
  // this machine's clock. OK at once for a lone server.
  absl::Status ReadLeaseClock();
  // Stops the workers: running jobs checkpoint and go back to QUEUED, to
  // resume on the next start.
  void Stop();

  absl::StatusOr<kaizen::v1::Job> Submit(const kaizen::v1::StartFineTuneRequest& request);
  // The job of Submit once its request is valid: checks the references and
  // stores the job, under a shared hold of references_mutex().
  absl::StatusOr<kaizen::v1::Job> CheckReferencesAndInsert(
      const kaizen::v1::StartFineTuneRequest& request);
  absl::StatusOr<kaizen::v1::Job> Get(const std::string& id);
  absl::StatusOr<kaizen::v1::ListJobsResponse> List(const kaizen::v1::ListJobsRequest& request);
  absl::StatusOr<kaizen::v1::Job> Cancel(const std::string& id);
  // A QUEUED job becomes PAUSED at once. A RUNNING one is asked to stop
  // after its current step: it writes a checkpoint that resumes at that very
  // step, frees its worker and becomes PAUSED; the answer is the job as it
  // is now (RUNNING, with pause_reason set). A PAUSED job is returned as it
  // is. FailedPrecondition for a job that has ended, NotFound for none.
  absl::StatusOr<kaizen::v1::Job> Pause(const std::string& id);
  // A PAUSED job goes back to the queue (QUEUED) at its old place: the queue
  // is ordered by priority, then age, and neither changes. QUEUED and RUNNING
  // jobs are returned as they are (a user's pause that has not taken effect
  // yet is withdrawn). FailedPrecondition for a job that has ended.
  absl::StatusOr<kaizen::v1::Job> Resume(const std::string& id);
  // FineTuneService.ExportJob: writes the job's folder for a PyTorchJob into
  // Options::export_dir and returns the manifest (job_export.h).
  absl::StatusOr<kaizen::v1::ExportJobResponse> Export(const kaizen::v1::ExportJobRequest& request);
  // FineTuneService.ListExports and DeleteExport (export_folders.h).
  absl::StatusOr<kaizen::v1::ListExportsResponse> ListExports(
      const kaizen::v1::ListExportsRequest& request);
  absl::Status DeleteExport(const kaizen::v1::DeleteExportRequest& request);

  // Whether a QUEUED, RUNNING or PAUSED job reads the dataset / uses the
  // model.
  absl::StatusOr<bool> DatasetInUse(const std::string& name);
  // Jobs held (being submitted), QUEUED, RUNNING or PAUSED, of every replica.
  absl::StatusOr<std::vector<kaizen::v1::Job>> ActiveJobs();
  // The active job (held, QUEUED, RUNNING or PAUSED, submitted through any
  // replica) whose output model is `name`, if any.
  absl::StatusOr<std::optional<std::string>> JobWritingModel(const std::string& name);
  absl::StatusOr<bool> ModelInUse(const std::string& name);

  // Submit holds this shared from checking a job's references to storing the
  // job; the stores' Delete holds it exclusively (set_in_use_check).
  absl::Mutex* references_mutex() { return &references_mu_; }

 private:
  // A job a worker has claimed; lives on the worker's stack while it runs.
  struct Running {
    std::atomic<bool> cancel{false};
    // Another replica took the job over (this one stopped renewing its lease
    // in time): stop and record nothing.
    std::atomic<bool> lost{false};
    // Shared database: when the lease runs out unless renewed (LeaseNowMs
    // taken just before its latest renewal, plus the lease). An expired lease
    // is never renewed (JobStore::RenewLeases), so past this the run records
    // nothing more and reports nothing more (Reports).
    std::atomic<int64_t> leased_until_ms{std::numeric_limits<int64_t>::max()};
    // Checkpoint after the current step and free the worker (PauseJob or a
    // preemption).
    std::atomic<bool> pause{false};
    // The rest is set when the job is claimed and read or written with mu_
    // held.
    std::string job_id;
    int32_t priority = 0;
    int64_t create_millis = 0;
    // Non-empty while `pause` is a preemption: the job that takes the worker.
    std::string preempted_by;
    // The latest step: the stored row is written at epoch ends, so GetJob
    // and ListJobs take the step, total steps and epoch from here while the
    // job runs.
    kaizen::v1::StepProgress progress;
  };
  // Replaces a running job's stored step, total steps and epoch with its
  // latest step's (mu_ held).
  void OverlayProgress(kaizen::v1::Job* job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // CheckReferencesAndInsert for a job whose dataset holds text (text_job.h):
  // the base (a stored text model, or transformer-small for a job that builds
  // one), the validation and test datasets (text, the same classes), the
  // output settings.
  absl::StatusOr<kaizen::v1::Job> CheckTextReferencesAndInsert(
      const kaizen::v1::StartFineTuneRequest& request, const kaizen::v1::Dataset& dataset);
  // A text dataset named by `field` that exists, holds text and has
  // `classes` (all of them in order when `same_order`, else among them).
  absl::Status CheckTextDataset(absl::string_view field, const std::string& name,
                                const std::vector<std::string>& classes, bool same_order);
  // The steps of CheckReferencesAndInsert. The base model exists.
  absl::Status CheckBaseModel(const kaizen::v1::StartFineTuneRequest& request);
  // The stored version `ref` names for `field` (e.g. "base_model"): a parse
  // or lookup error prefixed with the field; FailedPrecondition for a
  // built-in architecture (random weights; `builtin_advice` ends the message)
  // or a quarantined version.
  absl::StatusOr<kaizen::v1::Model> TrainedModel(absl::string_view field, const std::string& ref,
                                                 absl::string_view builtin_advice);
  // STRATEGY_DISTILL: the teacher exists, is trained (not a built-in, not
  // quarantined) and predicts the dataset's classes in order. Returns the
  // job's DistillationResult as far as submission knows it: the resolved
  // teacher version, temperature and alpha, and both parameter counts.
  // NotFound ("distillation.teacher_model: ..."), FailedPrecondition,
  // InvalidArgument naming both class lists.
  absl::StatusOr<kaizen::v1::DistillationResult> CheckTeacher(
      const kaizen::v1::StartFineTuneRequest& request, const kaizen::v1::Dataset& dataset);
  // DISTILL: the teacher version the job resolved at submission, loaded for
  // training (on a resume too; `announce` says so in a run message) or for
  // an export.
  absl::Status LoadTeacher(const kaizen::v1::Job& job, training::TrainerOptions* opts,
                           bool announce = true);
  // Loads a version a job pinned at submission (a DISTILL teacher, an
  // INCREMENTAL base); FailedPrecondition naming `role` when it cannot be.
  absl::Status LoadPinned(absl::string_view role, const std::string& name, int64_t version,
                          torch::jit::Module* module, kaizen::v1::Model* metadata);
  // DISTILL, once training ends: teacher and student side by side in
  // job->distillation (validation accuracy, parameters, latency) and an
  // event.
  void ReportDistillation(kaizen::v1::Job* job, const training::TrainerOptions& opts,
                          const training::TrainResult& result);
  // The training dataset (returned) and a validation dataset exist, with the
  // same class names.
  // test_dataset: not the training or validation dataset, with classes among
  // the training dataset's.
  absl::Status CheckTestDataset(const kaizen::v1::StartFineTuneRequest& request,
                                const std::vector<std::string>& train_classes);
  // Evaluates the job's latest and best versions on its test dataset and
  // stores each result with its version.
  // DISTILL: the teacher is evaluated too, and both accuracies go into
  // job->distillation.
  absl::Status EvaluateOnTestDataset(kaizen::v1::Job* job,
                                     const std::function<bool()>& should_stop);
  // DISTILL: the teacher's accuracy on the test dataset beside the
  // student's (`student`, its latest version's evaluation); `examples` names
  // what the test set holds, in the job's event.
  absl::Status EvaluateTeacherOnTestDataset(kaizen::v1::Job* job,
                                            const kaizen::v1::Evaluation& student,
                                            const std::function<bool()>& should_stop,
                                            absl::string_view examples = "images");
  // Stores `e` as the test_evaluation of one version of `job`'s output,
  // leaving out the confusion matrix and then the per-class rows when the
  // record would be too large; returns what was left out, for the job's
  // message. Fenced like a checkpoint (FenceRun): ABORTED, and nothing
  // stored, once the run has lost its lease, since the job's new holder may
  // have written a version of the same number.
  absl::StatusOr<std::string> StoreTestEvaluation(const kaizen::v1::Job& job, int64_t version,
                                                  kaizen::v1::Evaluation e);
  // `old_classes`: for INCREMENTAL, the base's classes (the job's class list
  // is them merged with the dataset's), else empty.
  absl::StatusOr<kaizen::v1::Dataset> CheckDatasets(const kaizen::v1::StartFineTuneRequest& request,
                                                    const std::vector<std::string>& old_classes);
  // INCREMENTAL: resolves base_model to a version (pinned for the job's
  // life), which must have class names (FAILED_PRECONDITION naming it
  // otherwise, and for a base without a rehearsal memory whose training
  // images cannot be found while rehearsal is on); the settings resolved
  // with `seed`. `previous_datasets`: the datasets the old classes'
  // exemplars will be chosen from (empty when the base has a memory or
  // rehearsal is off); none may be the job's dataset or test_dataset
  // (INVALID_ARGUMENT: their images would be replayed as training images).
  // `text`: a text job's (its base a text classifier, its previous
  // datasets text datasets, and no stored memory: text exemplars are chosen
  // from the previous datasets at each run).
  absl::StatusOr<kaizen::v1::IncrementalResult> CheckIncrementalBase(
      const kaizen::v1::StartFineTuneRequest& request, uint64_t seed,
      std::vector<std::string>* previous_datasets, bool text = false);
  // INCREMENTAL at submission: the checked `inc` completed with the resolved
  // settings and the new classes into job->incremental, and the datasets the
  // exemplars come from written into the job's request.
  absl::Status RecordIncremental(kaizen::v1::IncrementalResult inc,
                                 const kaizen::v1::Dataset& dataset,
                                 const std::vector<std::string>& previous_datasets, bool text,
                                 kaizen::v1::Job* job);
  // INCREMENTAL: the images the base was trained on, to choose its
  // exemplars from when it has no memory: incremental.previous_datasets, else
  // the dataset of the job that wrote the base version. NOT_FOUND (the
  // caller words the FAILED_PRECONDITION) when neither is there.
  absl::StatusOr<std::vector<std::string>> PreviousDatasets(
      const kaizen::v1::StartFineTuneRequest& request, const kaizen::v1::Model& base, bool text);
  // INCREMENTAL: the pinned base version (as `opts->base` on a first run),
  // the data relabelled to the merged class list, and the memories.
  struct IncrementalData {
    std::optional<datasets::DecodedDataset> memory;
    std::optional<datasets::DecodedDataset> memory_source;
    std::optional<datasets::DecodedDataset> resume_memory;
  };
  absl::Status LoadIncremental(kaizen::v1::Job* job, bool resuming, training::TrainerOptions* opts,
                               datasets::DecodedDataset* train,
                               std::optional<datasets::DecodedDataset>* validation,
                               IncrementalData* memories);
  // INCREMENTAL, once training ends: accuracy before and after on the old,
  // new and all classes (validation images), into job->incremental.
  void ReportIncremental(kaizen::v1::Job* job, const training::TrainResult& result);
  // INCREMENTAL with test_dataset: the same on the test dataset, the base
  // scored on its old-class images (`latest`: the latest version's
  // evaluation).
  absl::Status EvaluateIncrementalOnTestDataset(kaizen::v1::Job* job,
                                                const kaizen::v1::Evaluation& latest,
                                                const std::function<bool()>& should_stop);
  // Reserves the output model's name for the job and stores the job; with a
  // request_id that lost a race, the job that won.
  absl::StatusOr<kaizen::v1::Job> ReserveAndInsert(kaizen::v1::Job job);
  // A validate_only request's answer: the checked job (its output name not
  // that of a stored model), without id, state or create time.
  absl::StatusOr<kaizen::v1::Job> Preview(kaizen::v1::Job job);

  void WorkerLoop(int worker_index);
  absl::StatusOr<std::optional<kaizen::v1::Job>> Claim(const std::string& device);
  // Runs one claimed job to its end state (or back to QUEUED on shutdown).
  void RunJob(kaizen::v1::Job job, Running* running);
  // The state a run ends in, and whether the job goes straight back to the
  // queue (a preempted job).
  struct RunEnd {
    kaizen::v1::JobState state;
    bool requeue = false;
  };
  // From Execute's status and whether training stopped at should_stop;
  // records the error or the pause in `job` and tells the watchers.
  RunEnd DecideEnd(const absl::Status& st, bool stopped, const Running& running,
                   kaizen::v1::Job* job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A run stopped by a pause, a preemption or a shutdown.
  RunEnd StoppedEnd(const Running& running, kaizen::v1::Job* job)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `*stopped`: training stopped before its end at should_stop (cancel,
  // pause or shutdown) after writing a checkpoint.
  absl::Status Execute(kaizen::v1::Job* job, Running* running, bool* stopped);
  // The trainer's settings for `job` from its resolved hyperparameters and
  // the server's data options, without a model.
  training::TrainerOptions TrainerOptionsOf(const kaizen::v1::Job& job) const;
  // The job's newest checkpoint (model, metadata and resume state) into
  // `opts`: the starting point of a resumed run (LoadCheckpointToResume)
  // and of an export.
  absl::Status LoadCheckpoint(const kaizen::v1::Job& job, training::TrainerOptions* opts);
  // Export's work: stages the job's folder in `staging` (which the caller
  // removes on failure) and renames it to export_dir/`folder`.
  absl::StatusOr<kaizen::v1::ExportJobResponse> ExportInto(
      const kaizen::v1::ExportJobRequest& request, const std::string& folder,
      const std::string& staging);
  // Execute for a text job (text_job.h). It writes a version after each
  // epoch and continues from the latest when it resumes (the epoch under
  // way when it stopped runs again).
  absl::Status ExecuteText(kaizen::v1::Job* job, Running* running, bool* stopped);
  // Train() in this thread, as rank 0 of job.world_size() processes when
  // that is above 1 (LocalDataParallel).
  absl::StatusOr<training::TrainResult> TrainOnWorldSize(const kaizen::v1::Job& job,
                                                         training::TrainerOptions opts,
                                                         const training::TrainingData& data,
                                                         const training::Callbacks& cb);
  // A text job with a version: `*trained` when its training is over (the
  // version's resume state says all epochs ran, or it has none); otherwise
  // in->resume from that version, and the job's history cut back to it.
  absl::Status LoadTextCheckpointToResume(kaizen::v1::Job* job, TextJobInputs* in, bool* trained);
  // The text job's new version on its test dataset, stored with the version
  // (DISTILL: the teacher's beside it, EvaluateTeacherOnTestDataset).
  absl::Status EvaluateTextOnTestDataset(kaizen::v1::Job* job,
                                         const std::function<bool()>& should_stop);
  // A text DISTILL job's pinned teacher, with its tokenizer, into `in`.
  absl::Status LoadTextTeacher(const kaizen::v1::Job& job, TextJobInputs* in);
  // A text INCREMENTAL job: the pinned base version (as in->base too on a
  // first run), the texts relabelled to the merged classes, and the old
  // classes' exemplars chosen at random from the previous datasets and
  // replayed beside the new texts (in->train).
  absl::Status LoadTextIncremental(kaizen::v1::Job* job, TextJobInputs* in);
  // A text INCREMENTAL job once trained: accuracy on the old, new and all
  // classes before (the base) and after (`out`), on the test dataset when
  // the job names one, else on the validation texts; into job->incremental
  // and an event.
  void ReportTextIncremental(kaizen::v1::Job* job, const TextJobInputs& in,
                             const TextJobOutput& out, const std::function<bool()>& should_stop);
  // A text DISTILL job's result once its version is stored: teacher and
  // student side by side (validation accuracy, parameters, the time of one
  // text's forward pass) into job->distillation, in an event, and persisted
  // with the job.
  void ReportTextDistillation(kaizen::v1::Job* job, const TextJobOutput& out);
  // A DISTILL job's report line as an event, and the job persisted.
  void PublishDistillation(kaizen::v1::Job* job, const std::string& line);
  // The model and optimiser state of the job's last checkpoint; forgets the
  // history of the epochs that will run again.
  absl::Status LoadCheckpointToResume(kaizen::v1::Job* job, training::TrainerOptions* opts);
  // The base model of a job's first run: a fresh built-in or a stored model.
  absl::Status LoadBaseModel(const kaizen::v1::Job& job, const kaizen::v1::Dataset& dataset_info,
                             training::TrainerOptions* opts);
  void ExplainIneffectiveSettings(const kaizen::v1::Job& job, const training::TrainerOptions& opts);
  // StartFineTuneRequest.tuning: runs the search (training/tuner.h) from
  // the base in `opts`, keeping the trials of an earlier run that stopped;
  // records every trial in job->tuning (GetJob) and in events; once it ends,
  // the winner becomes job->resolved_hyperparameters. False when stopped at
  // should_stop first. `running`: the run, whose messages stop with its
  // lease (Reports).
  absl::StatusOr<bool> TuneJob(kaizen::v1::Job* job, const Running& running,
                               const training::TrainerOptions& opts,
                               const datasets::DecodedDataset& train,
                               const datasets::DecodedDataset* validation,
                               const std::function<bool()>& should_stop);
  // Stores one trial in job->tuning, replacing the same trial and round.
  void RecordTrial(kaizen::v1::Job* job, const Running& running,
                   const kaizen::v1::TuningTrial& trial);
  // Step progress events are published at most every progress_interval.
  struct ProgressThrottle {
    absl::Time started;
    absl::Time last_published = absl::InfinitePast();
    int64_t first_step = -1;  // the first step of this run
  };
  // The trainer's callbacks for one job (Execute).
  void OnStep(kaizen::v1::Job* job, Running* running, const kaizen::v1::StepProgress& p,
              ProgressThrottle* throttle);
  void OnEpoch(kaizen::v1::Job* job, const kaizen::v1::EpochMetrics& m);
  // Stores the checkpoint as a new version, tracks the best version and
  // prunes by the retention policy (checkpoint_policy.h).
  absl::Status OnCheckpoint(kaizen::v1::Job* job, const training::Checkpoint& ckpt);
  // The versions of model `name` that queued, running or paused DISTILL jobs
  // resolved as their teacher, INCREMENTAL jobs as their base, or any job
  // names as its base_model (`name:N`); checkpoint retention and the
  // withdrawal of unrecorded versions keep them.
  absl::StatusOr<std::vector<int64_t>> PinnedVersionsInUse(const std::string& name);
  // With Options::preempt, pauses the running jobs that queued jobs of
  // higher priority should replace, once free workers are accounted for.
  void PreemptForQueue() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Stores `state` as the job's event and row; an end state only once the
  // job's unrecorded versions are withdrawn (WithdrawUnrecordedVersions).
  absl::Status PublishState(kaizen::v1::Job* job, kaizen::v1::JobState state);
  // PublishState into a claimable state (QUEUED): the row (state and proto
  // together) changes only while its state is `from`; false, and `job`
  // unchanged, when another replica moved it first (no event then: the
  // event and the row are one transaction, JobStore::AppendEventIf).
  absl::StatusOr<bool> PublishStateIf(kaizen::v1::Job* job, kaizen::v1::JobState state,
                                      kaizen::v1::JobState from);
  // Queues a held job (its row's state column UNSPECIFIED: a Submit in
  // progress, or one that stopped before queueing it); false, and `job`
  // unchanged, when it is no longer held (PublishStateIf).
  absl::StatusOr<bool> QueueIfHeld(kaizen::v1::Job* job);
  // The job a Submit with `request`'s request_id already made, queued if
  // it was left held; nullopt without a request_id, for validate_only, or
  // when there is none yet.
  absl::StatusOr<std::optional<kaizen::v1::Job>> RetriedSubmission(
      const kaizen::v1::StartFineTuneRequest& request);
  // Fails a job that has used up --max_job_attempts (mu_ held or at start).
  absl::Status FailAfterAttempts(kaizen::v1::Job* job, absl::string_view what);
  // Claims a job whose replica died (shared database): nullopt when none,
  // when the one found had used up its attempts and was failed instead, or
  // when it was a preempted job left PAUSED, which goes back to the queue.
  absl::StatusOr<std::optional<kaizen::v1::Job>> ClaimOrphan() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Shared database: every job_lease / 3 renews this replica's leases,
  // passes on cancel and pause requests made through other replicas, notices
  // jobs taken over and runs on_replica_tick; every second delivers other
  // replicas' events to this one's watchers.
  void ReplicaLoop();
  void ReplicaTick(bool renew);
  // An ended job's output name is free again and, when it ran (`ran`),
  // serving loads its newest version.
  void OutputEnded(const kaizen::v1::Job& job, bool ran = true);
  // Notes that this replica reserved the job's output name
  // (ModelStore::ReserveName), for OutputEnded or
  // ReleaseOutputsOfJobsEndedElsewhere to free.
  void NoteReservedOutput(const kaizen::v1::Job& job);
  // Shared database: frees the output names this replica reserved for jobs
  // that ended on another replica (ran there, or were cancelled through
  // it), which would otherwise refuse uploads and jobs into those names
  // through this replica until it restarts. Every lease renewal.
  void ReleaseOutputsOfJobsEndedElsewhere() ABSL_LOCKS_EXCLUDED(mu_);
  // Asks a RUNNING job held by this replica to pause (mu_ held).
  void RequestPause(Running* running) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A cancel or pause that another replica left on the lease of a job this
  // one runs: passed to the run like a local request.
  void ApplyLeaseRequest(const std::string& id, Running* running, const std::string& request)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // One that reached the lease after the run had ended, or that reached a
  // run that had already finished: a QUEUED or PAUSED job is cancelled or
  // paused here (the caller releases the output name of a cancelled one); if
  // another replica claimed it meanwhile, the request is left on that
  // replica's lease; an ended job gets a message that it came too late.
  void ApplyLateRequest(kaizen::v1::Job* job, const std::string& request)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Stores a running job's row. With a shared database, only while this
  // replica holds the job's lease (JobStore::UpdateIfLeased): ABORTED, and
  // the run marked lost, once another replica may have taken it over.
  absl::Status Persist(kaizen::v1::Job* job) ABSL_LOCKS_EXCLUDED(mu_);
  // Shared database: renews the lease of a job this replica runs before a
  // write that must not come from a replica that lost it (a checkpoint's
  // version); ABORTED, and the run marked lost, when it is gone. A request
  // left on the lease reaches the run as at a renewal.
  absl::Status FenceRun(const std::string& job_id) ABSL_LOCKS_EXCLUDED(mu_);
  // Records the job's row (which sets its last_sequence) and tells
  // watchers of a run's `event` (an epoch, a checkpoint) together, in one
  // transaction: neither is stored without the other. With a shared
  // database the transaction checks that this replica's lease is live
  // (JobStore::AppendEventIfLeased): ABORTED, nothing stored and the run
  // marked lost otherwise, so a replica that stalled right after a renewal
  // (FenceRun) neither records nor tells an epoch or a checkpoint of a job
  // another replica now runs. A lone server's checks that the row is still
  // RUNNING (FAILED_PRECONDITION otherwise).
  absl::Status PublishLeased(kaizen::v1::Job* job, kaizen::v1::JobEvent event)
      ABSL_LOCKS_EXCLUDED(mu_);
  // A message of this replica's run of `job_id` (what its trainer or tuner
  // decided, a trial's result, early stopping): with a shared database,
  // stored only while the run's lease is live (JobStore::
  // AppendEventWhileLeased), the run marked lost otherwise; a lone server's
  // is published as any message.
  void PublishRunMessage(const std::string& job_id, const std::string& message)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Shared database: queues the held rows (JobStore::Insert) that this
  // replica has seen held for Options::abandoned_submission by its monotonic
  // clock
  // (no replica's wall clock is compared with another's), whose Submit
  // stopped between inserting the job and queueing it (its replica died or
  // lost the database), as a lone server does at start; otherwise they would
  // hold their output name and datasets for good. Conditional
  // (PublishStateIf), so a Submit that was only slow is not overwritten, nor
  // does it overwrite. Every lease renewal, on the replica thread.
  void QueueAbandonedSubmissions() ABSL_LOCKS_EXCLUDED(mu_);
  // The run of `job_id` here stops and records nothing more (mu_ held).
  void MarkLost(const std::string& job_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Now by the clock leases are timed by: with a shared database the
  // database's (its last reading by RefreshLeaseClock plus the monotonic
  // time since), so that replicas whose clocks disagree agree on when a
  // lease ends, and a step of this machine's clock (NTP, an operator)
  // changes nothing; this machine's for a lone server.
  int64_t LeaseNowMs() const;
  // Reads the database's clock and keeps its offset from the monotonic
  // clock, taken at the middle of the round trip (off by at most half of
  // it); a reading whose round trip took over a second is refused, not kept.
  // Logs a warning when this machine's clock disagrees with the database's
  // by a second more than at the last reading. Shared database only (OK
  // otherwise): at start and every lease renewal.
  absl::Status RefreshLeaseClock();
  // Whether the run of `job_id` here was found to have lost its lease.
  bool RunLost(const std::string& job_id) ABSL_LOCKS_EXCLUDED(mu_);
  // Whether a run still tells watchers of its progress: not once it is lost,
  // nor once its lease has run out here (a replica stalled past its lease
  // learns it was taken over only at its next renewal or fenced write).
  bool Reports(const Running& running) const;
  // Notes a lease of `running` held at `now_ms` for another `lease_ms`.
  static void LeaseHeld(Running* running, int64_t now_ms, int64_t lease_ms);
  // Versions of the job's output that this job wrote and its row does not
  // record (newer than its latest_version) were left by a run that stopped
  // between writing and recording one (its replica lost the lease, was
  // killed, or the server crashed): they are withdrawn, unless an active job
  // pins one, so that the output holds only what the job records. Called
  // before a run (once the caller has renewed the lease: a replica that
  // stalled since claiming the job must not touch what its new holder
  // writes) and before a job's end state is published (PublishState), since
  // nothing runs it again.
  void WithdrawUnrecordedVersions(const kaizen::v1::Job& job);
  void PublishMessage(const std::string& job_id, const std::string& message);

  Options options_;
  // The database's clock less the monotonic clock, and less this machine's,
  // in ms, at the last reading (RefreshLeaseClock).
  std::atomic<int64_t> lease_clock_base_ms_{0};
  std::atomic<int64_t> wall_clock_offset_ms_{0};
  std::atomic<bool> lease_clock_read_{false};  // a reading was kept
  store::JobStore* jobs_;
  store::DatasetStore* datasets_;
  store::ModelStore* models_;
  JobEventHub* events_;

  absl::Mutex mu_;
  absl::CondVar wake_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // Set once the workers have stopped: the replica thread ends. A standard
  // condition variable, whose timed wait runs on the monotonic clock (this
  // Abseil's timed waits end at a wall-clock deadline, which a step of the
  // clock would move).
  std::mutex replica_mu_;
  std::condition_variable replica_wake_;
  bool replica_stopping_ = false;  // guarded by replica_mu_
  // Replica thread only: held rows (their ids) and since when, by the
  // monotonic clock, this replica has seen each held
  // (QueueAbandonedSubmissions).
  absl::flat_hash_map<std::string, absl::Duration> held_since_;
  absl::flat_hash_map<std::string, Running*> running_ ABSL_GUARDED_BY(mu_);
  absl::Mutex references_mu_;
  // Output names this replica reserved, by job id (NoteReservedOutput).
  absl::Mutex outputs_mu_;
  absl::flat_hash_map<std::string, std::string> reserved_outputs_ ABSL_GUARDED_BY(outputs_mu_);
  std::atomic<bool> shutting_down_{false};
  std::vector<std::thread> workers_;
  std::thread replica_thread_;
};

}  // namespace kaizen::jobs
