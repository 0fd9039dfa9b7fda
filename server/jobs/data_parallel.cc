#include "server/jobs/data_parallel.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "server/common/atomic_file.h"
#include "server/common/status_macros.h"
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

std::string LogPath(const std::string& dir, int rank) {
  return absl::StrFormat("%s/rank-%d.log", dir, rank);
}

}  // namespace

std::string DataParallelRefusal(const kaizen::v1::StartFineTuneRequest& request, bool text) {
  if (text) return "text jobs train in one process";
  switch (request.strategy()) {
    case kaizen::v1::STRATEGY_FEATURE_EXTRACTION:
    case kaizen::v1::STRATEGY_FINE_TUNE:
    case kaizen::v1::STRATEGY_FULL:
    case kaizen::v1::STRATEGY_SCRATCH:
      break;
    default:
      return absl::StrCat(kaizen::v1::Strategy_Name(request.strategy()),
                          " trains in one process (FEATURE_EXTRACTION, FINE_TUNE, FULL and "
                          "SCRATCH run data parallel)");
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

absl::StatusOr<std::unique_ptr<LocalDataParallel>> LocalDataParallel::Start(
    const DataParallelOptions& options, const std::string& name, int world_size, int threads,
    const training::TrainerOptions& opts, const training::TrainingData& data,
    const std::vector<std::string>& extra_worker_args) {
  if (data.train_file == nullptr) {
    return absl::FailedPreconditionError(
        "a data-parallel job needs its datasets in record files (datasets stored in the old "
        ".kds format train in one process: set world_size 1)");
  }
  std::unique_ptr<LocalDataParallel> dp(new LocalDataParallel());
  dp->options_ = options;
  std::error_code ec;
  // Absolute: the workers resolve relative paths against the spec's folder.
  dp->dir_ = std::filesystem::absolute(absl::StrCat(options.scratch_dir, "/", name), ec).string();
  std::filesystem::remove_all(dp->dir_, ec);
  std::filesystem::create_directories(dp->dir_, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("cannot create ", dp->dir_, ": ", ec.message()));
  }
  kaizen::internal::TrainingWorkerSpec spec;
  spec.set_strategy(opts.strategy);
  *spec.mutable_hyperparameters() = opts.hyperparameters;
  RETURN_IF_ERROR(models::SaveModelFile(opts.base, opts.base_metadata, dp->dir_ + "/base.pt"));
  spec.set_base_model("base.pt");
  if (!opts.resume_state.empty()) {
    RETURN_IF_ERROR(common::WriteFileAtomically(dp->dir_ + "/resume", opts.resume_state));
    spec.set_resume_state("resume");
  }
  spec.set_train_records(std::filesystem::absolute(data.train_file->path(), ec).string());
  if (data.validation_file != nullptr) {
    spec.set_validation_records(
        std::filesystem::absolute(data.validation_file->path(), ec).string());
  }
  spec.set_output_dir(".");
  spec.set_timeout_seconds(static_cast<int32_t>(absl::ToInt64Seconds(options.timeout)));
  spec.set_threads(threads);
  spec.set_max_image_memory_bytes(opts.max_image_memory_bytes);
  spec.set_loader_threads(opts.loader_threads);
  RETURN_IF_ERROR(WriteTrainingWorkerSpec(spec, dp->dir_ + "/spec.json"));

  distributed::Rendezvous r;
  r.world_size = world_size;
  r.timeout = options.timeout;
  LocalDataParallel* self = dp.get();
  ASSIGN_OR_RETURN(
      dp->group_, distributed::Group::Join(r, [&](int port) -> absl::Status {
        for (int rank = 1; rank < world_size; ++rank) {
          RETURN_IF_ERROR(self->StartWorker(rank, port, world_size, threads, extra_worker_args));
        }
        return absl::OkStatus();
      }));
  return dp;
}

absl::Status LocalDataParallel::StartWorker(int rank, int port, int world_size, int threads,
                                            const std::vector<std::string>& extra_args) {
  const std::string binary = options_.worker_path.empty()
                                 ? sandbox::BesideThisExecutable("kaizen-worker")
                                 : options_.worker_path;
  std::vector<std::string> args = {binary, "--spec=" + dir_ + "/spec.json", "--exit_with_parent"};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const absl::string_view var(*e);
    if (absl::StartsWith(var, "MASTER_ADDR=") || absl::StartsWith(var, "MASTER_PORT=") ||
        absl::StartsWith(var, "WORLD_SIZE=") || absl::StartsWith(var, "RANK=") ||
        absl::StartsWith(var, "OMP_NUM_THREADS=")) {
      continue;
    }
    env.emplace_back(var);
  }
  env.push_back("MASTER_ADDR=127.0.0.1");
  env.push_back(absl::StrCat("MASTER_PORT=", port));
  env.push_back(absl::StrCat("WORLD_SIZE=", world_size));
  env.push_back(absl::StrCat("RANK=", rank));
  env.push_back(absl::StrCat("OMP_NUM_THREADS=", threads));
  std::vector<char*> argv, envp;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  const std::string log = LogPath(dir_, rank);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, log.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0600);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, binary.c_str(), &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    return absl::FailedPreconditionError(absl::StrCat("cannot start the data-parallel worker ",
                                                      binary, ": ", strerror(rc),
                                                      " (set --worker_binary)"));
  }
  workers_.push_back(pid);
  return absl::OkStatus();
}

absl::Status LocalDataParallel::Finish() {
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::seconds(absl::ToInt64Seconds(options_.timeout));
  std::vector<std::string> failures;
  for (size_t i = 0; i < workers_.size(); ++i) {
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
      failures.push_back(absl::StrFormat("rank %d did not exit within %s and was killed", rank,
                                         absl::FormatDuration(options_.timeout)));
    } else if (done < 0) {
      failures.push_back(absl::StrFormat("rank %d: %s", rank, strerror(errno)));
    } else if (WIFSIGNALED(status)) {
      failures.push_back(
          absl::StrFormat("rank %d was killed by signal %d", rank, WTERMSIG(status)));
    } else if (WEXITSTATUS(status) != 0) {
      failures.push_back(absl::StrFormat("rank %d exited with status %d: %s", rank,
                                         WEXITSTATUS(status), LastLine(LogPath(dir_, rank))));
    }
    workers_[i] = -1;
  }
  if (failures.empty()) return absl::OkStatus();
  return absl::UnavailableError(absl::StrJoin(failures, "; "));
}

LocalDataParallel::~LocalDataParallel() {
  for (pid_t pid : workers_) {
    if (pid <= 0) continue;
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
  }
  group_.reset();
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

}  // namespace kaizen::jobs
