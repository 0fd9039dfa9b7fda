// Local launch of a data-parallel job: rank 0 trains in the server's job
// thread, ranks 1..W-1 are kaizen-worker processes beside it
// (training_worker.h) that meet it through a FileStore in the job's private
// scratch folder and reduce over the loopback, each with the job's intra-op
// thread count. The workers read the same TrainingWorkerSpec: the
// job's model (or checkpoint) and resume state written to a scratch folder,
// and the datasets' record files where they are stored (an INCREMENTAL
// job's prepared images are written there too).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kaizen/v1/finetune_service.pb.h"
#include "server/distributed/group.h"
#include "server/training/text_trainer.h"
#include "server/training/trainer.h"

namespace kaizen::jobs {

struct DataParallelOptions {
  // The worker binary; empty: kaizen-worker beside the running executable.
  std::string worker_path;
  // Used for requests with world_size 0 that can run data parallel
  // (DataParallelRefusal is empty for them); others run in one process.
  int default_world_size = 1;
  // Requests above it are refused.
  int max_world_size = 8;
  // Forming the group, every collective, and a worker's exit after training.
  absl::Duration timeout = absl::Seconds(300);
  // Each job's spec, model and worker logs go into a folder here, removed
  // when the job's run ends.
  std::string scratch_dir;
  // The workers' files (the models; an INCREMENTAL job's prepared images, a
  // text job's token ids and logits) are written there only when that
  // leaves this many bytes free on its file system.
  int64_t scratch_reserve_bytes = int64_t{512} << 20;
};

// The run message of a job that got the server's default world size
// (world_size 0) but trains in one process, `why` saying why.
std::string DefaultWorldSizeDoesNotApply(int world_size, const absl::Status& why);

// OK when `opts` and `data` can train as a local group, else
// FailedPrecondition with the reason: the datasets must be record files, or
// an INCREMENTAL job's images prepared in memory (written for the workers),
// and the device the CPU.
absl::Status CheckDataParallelData(const training::TrainerOptions& opts,
                                   const training::TrainingData& data);

// Why `request` cannot run as several processes ("" when it can): a
// strategy other than FEATURE_EXTRACTION, FINE_TUNE, FULL, SCRATCH, DISTILL
// and INCREMENTAL (on images or, when `text`, on text), or tuning.
std::string DataParallelRefusal(const kaizen::v1::StartFineTuneRequest& request, bool text);

// The processes a request asks for: its world_size, else the default where
// the request can run data parallel, else 1. InvalidArgument when it asks for
// more than max_world_size, or for more than one where it cannot.
absl::StatusOr<int> ResolveWorldSize(const kaizen::v1::StartFineTuneRequest& request, bool text,
                                     const DataParallelOptions& options);

// What WriteTrainingFolder puts in the spec besides the trainer's settings.
struct TrainingFolderLayout {
  int timeout_seconds = 300;
  int threads = 1;
  // The record files as the ranks find them: absolute paths where they are
  // stored (a local run), or names of links in the folder (an export, see
  // LinkIntoFolder). No validation records: "".
  std::string train_records;
  std::string validation_records;
  // Where rank 0 writes its model files, relative to the folder.
  std::string output_dir = ".";
};

// Writes into `dir` (which exists) what every rank of `opts` reads:
// spec.json, the starting model as base.pt, a DISTILL job's teacher as
// teacher.pt, an INCREMENTAL job's previous version as previous.pt, and the
// resume state as resume when `opts` has one.
absl::Status WriteTrainingFolder(const std::string& dir, const training::TrainerOptions& opts,
                                 const TrainingFolderLayout& layout);

// Writes into `dir` what every rank of a text job reads: spec.json (with
// `layout`'s timeout and threads), the classifier or encoder to start from
// as base.pt (without its tokenizer or text_input), the tokenised examples and the teacher's or
// previous classifier's logits as text.pt (WriteTextWorkerData), and the resume state as resume
// when `o` has one.
absl::Status WriteTextTrainingFolder(const std::string& dir, const training::TextTrainerOptions& o,
                                     const training::TextExamples& train,
                                     const training::TextExamples* validation,
                                     const TrainingFolderLayout& layout);

// Hard-links `file` into `dir` as `role` plus its extension (a copy across
// file systems), so that the folder stands alone; returns that name.
absl::StatusOr<std::string> LinkIntoFolder(const std::string& dir, const std::string& file,
                                           const std::string& role);

class LocalDataParallel {
 public:
  // Writes the spec for `opts` and `data` into a new folder
  // `scratch_dir`/`name` (record files, referred to where they are stored;
  // an INCREMENTAL job's images, in memory, written there as raw record
  // files for the run; ResourceExhausted, before writing, when the files
  // would leave less than scratch_reserve_bytes free), serves the rendezvous on a free loopback
  // port, starts W-1 workers (`threads` intra-op threads each, dying with this process) and waits
  // until the group has formed. `extra_worker_args` go on every worker's command line.
  static absl::StatusOr<std::unique_ptr<LocalDataParallel>> Start(
      const DataParallelOptions& options, const std::string& name, int world_size, int threads,
      const training::TrainerOptions& opts, const training::TrainingData& data,
      const std::vector<std::string>& extra_worker_args = {});
  // The same for a text job (`o` on the CPU; examples tokenised by the
  // caller): the workers get WriteTextTrainingFolder's files. The caller
  // trains rank 0 with TrainTextClassifier and `o.group` = group().
  static absl::StatusOr<std::unique_ptr<LocalDataParallel>> StartText(
      const DataParallelOptions& options, const std::string& name, int world_size, int threads,
      const training::TextTrainerOptions& o, const training::TextExamples& train,
      const training::TextExamples* validation,
      const std::vector<std::string>& extra_worker_args = {});
  // Kills the workers still running and removes the folder.
  ~LocalDataParallel();
  LocalDataParallel(const LocalDataParallel&) = delete;
  LocalDataParallel& operator=(const LocalDataParallel&) = delete;

  // Rank 0's group: TrainerOptions::group of the job's own Train().
  distributed::Group* group() const { return group_.get(); }
  // The process of rank 1..W-1 (-1 once Finish has reaped it).
  pid_t worker_pid(int rank) const { return workers_.at(static_cast<size_t>(rank) - 1); }
  // The folder the workers write their reports into (WorkerReportPath).
  const std::string& output_dir() const { return dir_; }
  // After rank 0's training ends: waits for the workers (at most the
  // timeout, then kills them) and closes the group. OK when every worker
  // exited 0, else which rank ended how, with the last line of its log.
  absl::Status Finish();
  // After rank 0's training failed: the workers, which would wait in their
  // next collective until the timeout, are killed within a second and the
  // group closed. Returns how those that had ended by then did (a rank that
  // failed first), as Finish.
  absl::Status Abort();
  // After rank 0's training ended with `trained` (`seconds` long): when it
  // failed, Abort, and its status comes back with how the workers that had
  // ended did added to its message (its payloads kept). Otherwise Finish: a
  // worker that did not end cleanly is only a warning through `say` (rank 0
  // wrote every version), as is the share of the time rank 0 spent in
  // collectives.
  absl::Status Conclude(const absl::Status& trained, double seconds,
                        const std::function<void(const std::string&)>& say);

  // What a job announces when its group has formed.
  static std::string Announcement(int world_size, int threads, int64_t global_batch);

 private:
  LocalDataParallel() = default;
  // The private folder `scratch_dir`/`name`, empty.
  static absl::StatusOr<std::unique_ptr<LocalDataParallel>> Create(
      const DataParallelOptions& options, const std::string& name);
  // Forms the group, starting the workers on the folder's spec.json.
  absl::Status Launch(int world_size, int threads, const std::vector<std::string>& extra_args);
  absl::Status StartWorker(int rank, int world_size, int threads,
                           const std::vector<std::string>& extra_args);
  // Waits for the workers not yet reaped until `deadline`, then kills them
  // (saying so unless `kill_late_quietly`), and closes the group.
  absl::Status Reap(std::chrono::steady_clock::time_point deadline, bool kill_late_quietly);
  // How rank `rank` ended by its wait status; "" for a clean exit.
  std::string Describe(int rank, int status) const;

  DataParallelOptions options_;
  std::string dir_;
  std::vector<pid_t> workers_;  // rank i + 1
  std::unique_ptr<distributed::Group> group_;
};

}  // namespace kaizen::jobs
