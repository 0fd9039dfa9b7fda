#include "server/jobs/data_parallel.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>

#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "server/common/atomic_file.h"
#include "server/common/status_macros.h"
#include "server/datasets/record_file.h"
#include "server/jobs/training_worker.h"
#include "server/models/model_file.h"
#include "server/sandbox/subprocess.h"

extern char** environ;

namespace kaizen::jobs {
namespace {

std::string LastLine(const std::string& path) {
  std::string text;
  if (!common::ReadFile(path, &text).ok()) return "";
  std::vector<absl::string_view> lines = absl::StrSplit(text, '\n', absl::SkipWhitespace());
  return lines.empty() ? "" : std::string(lines.back().substr(0, 500));
}

// How long Abort waits for workers that are already ending.
constexpr std::chrono::milliseconds kAbortGrace(1000);

std::string LogPath(const std::string& dir, int rank) {
  return absl::StrFormat("%s/rank-%d.log", dir, rank);
}

}  // namespace

std::string DataParallelRefusal(const kaizen::v1::StartFineTuneRequest& request, bool text) {
  switch (request.strategy()) {
    case kaizen::v1::STRATEGY_FEATURE_EXTRACTION:
    case kaizen::v1::STRATEGY_FINE_TUNE:
    case kaizen::v1::STRATEGY_FULL:
    case kaizen::v1::STRATEGY_SCRATCH:
    case kaizen::v1::STRATEGY_DISTILL:
    case kaizen::v1::STRATEGY_INCREMENTAL:
      break;
    default:
      return absl::StrCat(kaizen::v1::Strategy_Name(request.strategy()),
                          " trains in one process (FEATURE_EXTRACTION, FINE_TUNE, FULL, SCRATCH, "
                          "DISTILL and INCREMENTAL run data parallel",
                          text ? ", on text as on images)" : ")");
  }
  if (request.tuning().max_trials() > 0) return "tuning trials run in one process";
  return "";
}

absl::StatusOr<int> ResolveWorldSize(const kaizen::v1::StartFineTuneRequest& request, bool text,
                                     const DataParallelOptions& options) {
  const std::string refusal = DataParallelRefusal(request, text);
  if (request.world_size() < 0 || request.world_size() > options.max_world_size) {
    return absl::InvalidArgumentError(
        absl::StrFormat("world_size is %d; this server runs 1 to %d processes per job "
                        "(--max_world_size)",
                        request.world_size(), options.max_world_size));
  }
  if (request.world_size() > 1 && !refusal.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("world_size is ", request.world_size(), " but ", refusal));
  }
  if (request.world_size() > 0) return request.world_size();
  return refusal.empty() ? std::min(options.default_world_size, options.max_world_size) : 1;
}

namespace {

// Writes the resume state (when there is one) and `spec`, with `layout`'s
// output folder, timeout and threads, into `dir`.
absl::Status WriteSpecAndResumeState(const std::string& dir,
                                     kaizen::internal::TrainingWorkerSpec spec,
                                     const std::string& resume_state,
                                     const TrainingFolderLayout& layout) {
  if (!resume_state.empty()) {
    RETURN_IF_ERROR(common::WriteFileAtomically(dir + "/resume", resume_state));
    spec.set_resume_state("resume");
  }
  spec.set_output_dir(layout.output_dir);
  spec.set_timeout_seconds(layout.timeout_seconds);
  spec.set_threads(layout.threads);
  return WriteTrainingWorkerSpec(spec, dir + "/spec.json");
}

}  // namespace

absl::Status WriteTrainingFolder(const std::string& dir, const training::TrainerOptions& opts,
                                 const TrainingFolderLayout& layout) {
  kaizen::internal::TrainingWorkerSpec spec = SpecOfTrainerSettings(opts);
  RETURN_IF_ERROR(models::SaveModelFile(opts.base, opts.base_metadata, dir + "/base.pt"));
  spec.set_base_model("base.pt");
  if (opts.distillation) {
    RETURN_IF_ERROR(models::SaveModelFile(
        opts.distillation->teacher, opts.distillation->teacher_metadata, dir + "/teacher.pt"));
    spec.set_teacher_model("teacher.pt");
  }
  if (opts.incremental) {
    RETURN_IF_ERROR(models::SaveModelFile(
        opts.incremental->previous, opts.incremental->previous_metadata, dir + "/previous.pt"));
    spec.set_previous_model("previous.pt");
  }
  spec.set_train_records(layout.train_records);
  spec.set_validation_records(layout.validation_records);
  return WriteSpecAndResumeState(dir, std::move(spec), opts.resume_state, layout);
}

absl::Status WriteTextTrainingFolder(const std::string& dir, const training::TextTrainerOptions& o,
                                     const training::TextExamples& train,
                                     const training::TextExamples* validation,
                                     const TrainingFolderLayout& layout) {
  kaizen::internal::TrainingWorkerSpec spec;
  spec.set_strategy(o.strategy);
  *spec.mutable_hyperparameters() = o.hyperparameters;
  // Without its tokenizer: the server tokenises (text_pad_id below).
  kaizen::v1::Model metadata = o.base_metadata;
  metadata.clear_text_input();
  RETURN_IF_ERROR(models::SaveModelFile(o.base, metadata, dir + "/base.pt"));
  spec.set_base_model("base.pt");
  spec.set_text_pad_id(o.pad_id);
  torch::Tensor teacher_logits, previous_logits;
  if (o.distillation) {
    teacher_logits = o.distillation->teacher_logits;
    spec.set_distillation_temperature(o.distillation->temperature);
    spec.set_distillation_alpha(o.distillation->alpha);
  }
  if (o.incremental) {
    previous_logits = o.incremental->previous_logits;
    spec.set_text_incremental_temperature(o.incremental->temperature);
    spec.set_text_incremental_weight(o.incremental->weight);
  }
  RETURN_IF_ERROR(WriteTextWorkerData(dir + "/text.pt", train, validation, o.num_classes,
                                      teacher_logits, previous_logits));
  spec.set_text_examples("text.pt");
  return WriteSpecAndResumeState(dir, std::move(spec), o.resume_state, layout);
}

absl::StatusOr<std::string> LinkIntoFolder(const std::string& dir, const std::string& file,
                                           const std::string& role) {
  const std::string name = role + std::filesystem::path(file).extension().string();
  std::error_code ec;
  std::filesystem::create_hard_link(file, dir + "/" + name, ec);
  if (ec) {
    ec.clear();
    std::filesystem::copy_file(file, dir + "/" + name, ec);
  }
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot link or copy ", file, " into ", dir, ": ", ec.message()));
  }
  return name;
}

namespace {

// An INCREMENTAL job's images are prepared in memory (classes in the merged
// order); LocalDataParallel::Start writes them for the workers.
bool Prepared(const training::TrainerOptions& opts, const training::TrainingData& data) {
  return opts.incremental.has_value() && data.train != nullptr;
}

// What `d`'s raw record file takes: its pixels and an index entry per
// record (64 bytes is more than one takes).
int64_t RawRecordFileBytes(const datasets::DecodedDataset& d) {
  return static_cast<int64_t>(d.pixels.size()) + static_cast<int64_t>(d.records.size()) * 64;
}

// What a model file of `module` takes, less its code: its parameters' and
// buffers' bytes.
int64_t ModelFileBytes(const torch::jit::Module& module) {
  int64_t bytes = 0;
  for (const torch::Tensor& p : module.parameters()) bytes += static_cast<int64_t>(p.nbytes());
  for (const torch::Tensor& b : module.buffers()) bytes += static_cast<int64_t>(b.nbytes());
  return bytes;
}

// OK when writing the workers' files, `need` bytes, into `dir` leaves at
// least `reserve` free on its file system; ResourceExhausted saying so when
// not, before anything is written.
absl::Status CheckScratchSpace(const std::string& dir, int64_t need, int64_t reserve) {
  struct statvfs fs;
  if (statvfs(dir.c_str(), &fs) != 0) {
    return absl::InternalError(
        absl::StrCat("cannot tell the free space in ", dir, ": ", std::strerror(errno)));
  }
  const int64_t available = static_cast<int64_t>(
      std::min<uint64_t>(static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize, INT64_MAX / 2));
  if (available - need < reserve) {
    constexpr double kMiB = 1 << 20;
    return absl::ResourceExhaustedError(absl::StrFormat(
        "the files the data-parallel workers read (%.1f MiB, written to %s) would leave %.1f "
        "MiB free there, less than the %.1f MiB kept free (--scratch_reserve_mb)",
        need / kMiB, dir, (available - need) / kMiB, reserve / kMiB));
  }
  return absl::OkStatus();
}

}  // namespace

std::string DefaultWorldSizeDoesNotApply(int world_size, const absl::Status& why) {
  return absl::StrFormat(
      "the server's default of %d processes does not apply (%s): the job trains in one process",
      world_size, why.message());
}

absl::Status CheckDataParallelData(const training::TrainerOptions& opts,
                                   const training::TrainingData& data) {
  if (data.train_file == nullptr && !Prepared(opts, data)) {
    return absl::FailedPreconditionError(
        "a data-parallel job needs its datasets in record files; datasets stored in the old "
        ".kds format train in one process");
  }
  if (!opts.device.is_cpu()) {
    return absl::FailedPreconditionError(
        "data-parallel jobs train on CPUs (Gloo); this job's device is not the CPU");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<LocalDataParallel>> LocalDataParallel::Create(
    const DataParallelOptions& options, const std::string& name) {
  std::unique_ptr<LocalDataParallel> dp(new LocalDataParallel());
  dp->options_ = options;
  std::error_code ec;
  // Absolute: the workers resolve relative paths against the spec's folder.
  dp->dir_ = std::filesystem::absolute(absl::StrCat(options.scratch_dir, "/", name), ec).string();
  std::filesystem::remove_all(dp->dir_, ec);
  std::filesystem::create_directories(dp->dir_, ec);
  if (ec || chmod(dp->dir_.c_str(), 0700) != 0) {
    return absl::InternalError(absl::StrCat("cannot create ", dp->dir_, ": ", ec.message()));
  }
  return dp;
}

absl::StatusOr<std::unique_ptr<LocalDataParallel>> LocalDataParallel::Start(
    const DataParallelOptions& options, const std::string& name, int world_size, int threads,
    const training::TrainerOptions& opts, const training::TrainingData& data,
    const std::vector<std::string>& extra_worker_args) {
  if (const absl::Status fits = CheckDataParallelData(opts, data); !fits.ok()) {
    return absl::Status(fits.code(), absl::StrCat(fits.message(), " (set world_size 1)"));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<LocalDataParallel> dp, Create(options, name));
  TrainingFolderLayout layout;
  layout.timeout_seconds = static_cast<int>(absl::ToInt64Seconds(options.timeout));
  layout.threads = threads;
  std::error_code ec;
  const bool prepared = Prepared(opts, data);
  // The models, and an INCREMENTAL job's images.
  int64_t bytes = ModelFileBytes(opts.base);
  if (opts.distillation) bytes += ModelFileBytes(opts.distillation->teacher);
  if (opts.incremental) bytes += ModelFileBytes(opts.incremental->previous);
  for (const datasets::DecodedDataset* d : {data.train, data.validation}) {
    if (d != nullptr && prepared) bytes += RawRecordFileBytes(*d);
  }
  RETURN_IF_ERROR(CheckScratchSpace(dp->dir_, bytes, options.scratch_reserve_bytes));
  if (prepared) {
    layout.train_records = dp->dir_ + "/train.krf";
    RETURN_IF_ERROR(datasets::WriteRawRecordFile(layout.train_records, *data.train).status());
    if (data.validation != nullptr) {
      layout.validation_records = dp->dir_ + "/validation.krf";
      RETURN_IF_ERROR(
          datasets::WriteRawRecordFile(layout.validation_records, *data.validation).status());
    }
  } else {
    layout.train_records = std::filesystem::absolute(data.train_file->path(), ec).string();
    if (data.validation_file != nullptr) {
      layout.validation_records =
          std::filesystem::absolute(data.validation_file->path(), ec).string();
    }
  }
  RETURN_IF_ERROR(WriteTrainingFolder(dp->dir_, opts, layout));
  RETURN_IF_ERROR(dp->Launch(world_size, threads, extra_worker_args));
  return dp;
}

absl::StatusOr<std::unique_ptr<LocalDataParallel>> LocalDataParallel::StartText(
    const DataParallelOptions& options, const std::string& name, int world_size, int threads,
    const training::TextTrainerOptions& o, const training::TextExamples& train,
    const training::TextExamples* validation, const std::vector<std::string>& extra_worker_args) {
  if (!training::ModuleDevice(o.base).is_cpu()) {
    return absl::FailedPreconditionError(
        "data-parallel jobs train on CPUs (Gloo); this job's device is not the CPU");
  }
  ASSIGN_OR_RETURN(std::unique_ptr<LocalDataParallel> dp, Create(options, name));
  // The model; tokens (4 bytes), an offset and a label (8 each) per
  // sequence; logits.
  int64_t bytes = ModelFileBytes(o.base);
  for (const training::TextExamples* set : {&train, validation}) {
    if (set == nullptr) continue;
    for (const std::vector<int32_t>& s : set->sequences) {
      bytes += 4 * static_cast<int64_t>(s.size()) + 16;
    }
  }
  for (const torch::Tensor* logits : {o.distillation ? &o.distillation->teacher_logits : nullptr,
                                      o.incremental ? &o.incremental->previous_logits : nullptr}) {
    if (logits != nullptr && logits->defined()) bytes += 4 * logits->numel();
  }
  RETURN_IF_ERROR(CheckScratchSpace(dp->dir_, bytes, options.scratch_reserve_bytes));
  TrainingFolderLayout layout;
  layout.timeout_seconds = static_cast<int>(absl::ToInt64Seconds(options.timeout));
  layout.threads = threads;
  RETURN_IF_ERROR(WriteTextTrainingFolder(dp->dir_, o, train, validation, layout));
  RETURN_IF_ERROR(dp->Launch(world_size, threads, extra_worker_args));
  return dp;
}

absl::Status LocalDataParallel::Launch(int world_size, int threads,
                                       const std::vector<std::string>& extra_args) {
  // The ranks meet through a file in the job's private folder: nothing
  // listens for the rendezvous, and Gloo's pairs use the loopback.
  distributed::Rendezvous r;
  r.store_file = dir_ + "/store";
  r.world_size = world_size;
  r.timeout = options_.timeout;
  absl::StatusOr<std::unique_ptr<distributed::Group>> group =
      distributed::Group::Join(r, [&](int) -> absl::Status {
        for (int rank = 1; rank < world_size; ++rank) {
          RETURN_IF_ERROR(StartWorker(rank, world_size, threads, extra_args));
        }
        return absl::OkStatus();
      });
  if (!group.ok()) {
    // A worker that failed before the group formed says why.
    const absl::Status workers = Reap(std::chrono::steady_clock::now() + std::chrono::seconds(1),
                                      /*kill_late_quietly=*/true);
    if (workers.ok()) return group.status();
    return absl::Status(group.status().code(),
                        absl::StrCat(group.status().message(), "; ", workers.message()));
  }
  group_ = *std::move(group);
  return absl::OkStatus();
}

std::string LocalDataParallel::Announcement(int world_size, int threads, int64_t global_batch) {
  return absl::StrFormat(
      "data parallel: %d processes (rank 0 in the server, %d kaizen-worker processes) with %d "
      "intra-op thread(s) each, Gloo on loopback; each global batch of %d is split between "
      "them and the gradients are summed once per step",
      world_size, world_size - 1, threads, global_batch);
}

absl::Status LocalDataParallel::Conclude(const absl::Status& trained, double seconds,
                                         const std::function<void(const std::string&)>& say) {
  const double in_collectives = group_->collective_seconds();
  const int64_t collectives = group_->collectives();
  if (!trained.ok()) {
    // The workers would wait in their next collective until the timeout. A
    // worker that failed first (the cause of rank 0's failed collective)
    // is named after rank 0's error; the error's cause payloads stay.
    const absl::Status workers = Abort();
    if (workers.ok()) return trained;
    absl::Status joined(trained.code(), absl::StrCat(trained.message(), "; ", workers.message()));
    trained.ForEachPayload(
        [&](absl::string_view url, const absl::Cord& payload) { joined.SetPayload(url, payload); });
    return joined;
  }
  if (const absl::Status workers = Finish(); !workers.ok()) {
    // Rank 0 finished and wrote every version: the job stands.
    say(absl::StrCat("warning: a data-parallel worker did not end cleanly after training: ",
                     workers.message()));
  }
  say(absl::StrFormat("data parallel: rank 0 spent %.1f s of %.1f s (%.0f%%) in %d collectives",
                      in_collectives, seconds, seconds > 0 ? 100 * in_collectives / seconds : 0.0,
                      collectives));
  return absl::OkStatus();
}

absl::Status LocalDataParallel::StartWorker(int rank, int world_size, int threads,
                                            const std::vector<std::string>& extra_args) {
  const std::string binary = options_.worker_path.empty()
                                 ? sandbox::BesideThisExecutable("kaizen-worker")
                                 : options_.worker_path;
  std::vector<std::string> args = {"--spec=" + dir_ + "/spec.json",
                                   "--store_file=" + dir_ + "/store", absl::StrCat("--rank=", rank),
                                   absl::StrCat("--world_size=", world_size),
                                   absl::StrCat("--parent_pid=", getpid())};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  // The server's environment, less what would point the worker elsewhere.
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const absl::string_view var(*e);
    bool drop = false;
    for (absl::string_view prefix :
         {"MASTER_ADDR=", "MASTER_PORT=", "WORLD_SIZE=", "RANK=", "GLOO_", "OMP_NUM_THREADS="}) {
      drop = drop || absl::StartsWith(var, prefix);
    }
    if (!drop) env.emplace_back(var);
  }
  env.push_back(absl::StrCat("OMP_NUM_THREADS=", threads));
  absl::StatusOr<pid_t> pid = sandbox::StartProcess(binary, args, env, LogPath(dir_, rank));
  if (!pid.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot start the data-parallel worker: ", pid.status().message(),
                     " (set --worker_binary)"));
  }
  workers_.push_back(*pid);
  return absl::OkStatus();
}

absl::Status LocalDataParallel::Finish() {
  return Reap(std::chrono::steady_clock::now() +
                  std::chrono::seconds(absl::ToInt64Seconds(options_.timeout)),
              /*kill_late_quietly=*/false);
}

absl::Status LocalDataParallel::Abort() {
  // Those that have ended, or are ending (a dead peer's sockets close
  // before its exit status can be collected), say how; the others, waiting
  // in a collective, are killed silently after a grace period.
  return Reap(std::chrono::steady_clock::now() + kAbortGrace, /*kill_late_quietly=*/true);
}

std::string LocalDataParallel::Describe(int rank, int status) const {
  if (WIFSIGNALED(status)) {
    return absl::StrFormat("rank %d was killed by signal %d", rank, WTERMSIG(status));
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
    return absl::StrFormat("rank %d exited with status %d: %s", rank, WEXITSTATUS(status),
                           LastLine(LogPath(dir_, rank)));
  }
  return "";
}

absl::Status LocalDataParallel::Reap(std::chrono::steady_clock::time_point deadline,
                                     bool kill_late_quietly) {
  std::vector<std::string> failures;
  for (size_t i = 0; i < workers_.size(); ++i) {
    if (workers_[i] <= 0) continue;
    const int rank = static_cast<int>(i) + 1;
    int status = 0;
    pid_t done = 0;
    while ((done = waitpid(workers_[i], &status, WNOHANG)) == 0 &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (done == 0) {
      kill(workers_[i], SIGKILL);
      waitpid(workers_[i], &status, 0);
      if (!kill_late_quietly) {
        failures.push_back(absl::StrFormat("rank %d did not exit in time and was killed", rank));
      }
    } else if (done < 0) {
      failures.push_back(absl::StrFormat("rank %d: %s", rank, strerror(errno)));
    } else if (std::string what = Describe(rank, status); !what.empty()) {
      failures.push_back(std::move(what));
    }
    workers_[i] = -1;
  }
  group_.reset();
  if (failures.empty()) return absl::OkStatus();
  return absl::UnavailableError(absl::StrJoin(failures, "; "));
}

LocalDataParallel::~LocalDataParallel() {
  (void)Abort();
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

}  // namespace kaizen::jobs
