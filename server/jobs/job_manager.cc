#include "server/jobs/job_manager.h"

#include <ATen/Parallel.h>
#include <time.h>
#include <torch/cuda.h>
#include <torch/script.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <optional>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "google/protobuf/util/time_util.h"
#include "server/common/atomic_file.h"
#include "server/common/failure_cause.h"
#include "server/common/job_state.h"
#include "server/common/logging.h"
#include "server/common/names.h"
#include "server/common/paging.h"
#include "server/common/status_macros.h"
#include "server/common/steady_clock.h"
#include "server/common/text_limits.h"
#include "server/jobs/checkpoint_policy.h"
#include "server/jobs/export_folders.h"
#include "server/jobs/job_export.h"
#include "server/jobs/job_history.h"
#include "server/jobs/text_job.h"
#include "server/jobs/training_worker.h"
#include "server/models/builtin_models.h"
#include "server/models/model_metadata.h"
#include "server/models/text_encoder.h"
#include "server/training/evaluator.h"
#include "server/training/exemplar_memory.h"
#include "server/training/forward_latency.h"
#include "server/training/hyperparameters.h"
#include "server/training/resume_state.h"
#include "server/training/strategy.h"
#include "server/training/trainer.h"
#include "server/training/tuner.h"

namespace kaizen::jobs {

using kaizen::v1::Job;
using kaizen::v1::JobEvent;
using kaizen::v1::JobState;

namespace {

google::protobuf::Timestamp Now() {
  return google::protobuf::util::TimeUtil::MillisecondsToTimestamp(absl::ToUnixMillis(absl::Now()));
}

constexpr char kPausedByUser[] = "paused by a user";
constexpr char kCancelRequested[] = "cancellation requested; stopping after the current step";
// The lease Cancel takes to end a dead replica's job is owned by the
// replica's id plus this: not by the replica's runs, so that a stale run of
// the job there has its writes refused meanwhile.
constexpr absl::string_view kCancellingSuffix = " (cancelling)";
// How long an export waits for other replicas to count the exports (a
// directory listing): far beyond what a count needs.
constexpr absl::Duration kExportsLockWait = absl::Seconds(30);

bool IsCanceller(absl::string_view lease_owner) {
  return absl::EndsWith(lease_owner, kCancellingSuffix);
}

// The replica that owns a lease, for itself or for a cancel.
absl::string_view ReplicaOf(absl::string_view lease_owner) {
  if (IsCanceller(lease_owner)) lease_owner.remove_suffix(kCancellingSuffix.size());
  return lease_owner;
}

// A lease's owner in messages: "replica a", or "a cancel through replica a".
std::string LeaseOwnerName(absl::string_view lease_owner) {
  return absl::StrCat(IsCanceller(lease_owner) ? "a cancel through replica " : "replica ",
                      ReplicaOf(lease_owner));
}

}  // namespace

JobManager::JobManager(Options options, store::JobStore* jobs, store::DatasetStore* datasets,
                       store::ModelStore* models, JobEventHub* events)
    : options_(std::move(options)),
      jobs_(jobs),
      datasets_(datasets),
      models_(models),
      events_(events) {}

JobManager::~JobManager() { Stop(); }

namespace {

// Where a stopped job continues: its last checkpoint, or, stopped while
// tuning, the search with its finished trials.
std::string ResumePoint(const Job& job) {
  if (job.latest_version() > 0) return absl::StrCat("checkpoint version ", job.latest_version());
  if (job.tuning().trials_size() > 0) {
    return absl::StrCat("its tuning search, keeping the ", job.tuning().trials_size(),
                        " trial runs it finished");
  }
  return "its start";
}

}  // namespace

absl::Status JobManager::FailAfterAttempts(Job* job, absl::string_view what) {
  job->set_error(absl::StrCat(what, " ", job->attempts(),
                              " times while this job ran (a crash or a kill, not a graceful "
                              "shutdown); giving up after --max_job_attempts=",
                              options_.max_job_attempts));
  JobEvent e;
  e.set_error(job->error());
  events_->Publish(job->id(), std::move(e)).IgnoreError();
  RETURN_IF_ERROR(PublishState(job, kaizen::v1::JOB_STATE_FAILED));
  if (options_.metrics) {
    options_.metrics->JobRunEnded(
        *job, common::WithCause(absl::AbortedError(job->error()), common::kCauseAttemptsExhausted));
  }
  OutputEnded(*job);
  common::LogWarning("job failed after its attempts",
                     {{"job", job->id()}, {"error", job->error()}});
  return absl::OkStatus();
}

absl::Status JobManager::Start() {
  // A crash leaves RUNNING jobs behind: nothing runs them now, so they go back
  // to the queue and resume from their last checkpoint. PAUSED jobs stay
  // paused until ResumeJob. With a shared database, a RUNNING job may be
  // another replica's: it is taken over only once its lease runs out
  // (ClaimOrphan).
  if (!lease_clock_read_) RETURN_IF_ERROR(ReadLeaseClock());
  ASSIGN_OR_RETURN(std::vector<Job> active,
                   jobs_->InStates({kaizen::v1::JOB_STATE_QUEUED, kaizen::v1::JOB_STATE_RUNNING,
                                    kaizen::v1::JOB_STATE_PAUSED}));
  if (!options_.shared_database) {
    // A crash between a job's insertion and its QUEUED event leaves the row
    // held (JobStore::Insert): it joins the queue now.
    ASSIGN_OR_RETURN(std::vector<Job> held, jobs_->InStates({kaizen::v1::JOB_STATE_UNSPECIFIED}));
    for (Job& job : held) {
      // Conditional: a retry of its request may queue it first.
      ASSIGN_OR_RETURN(const bool queued, QueueIfHeld(&job));
      if (!queued) {
        ASSIGN_OR_RETURN(job, jobs_->Get(job.id()));
      }
      active.push_back(std::move(job));
    }
  }
  for (Job& job : active) {
    // Output names of jobs that will run again stay theirs.
    if (models_->ReserveName(job.request().output_model(), absl::StrCat("job ", job.id()), true)
            .ok()) {
      NoteReservedOutput(job);
    }
    if (options_.shared_database) continue;
    if (job.state() == kaizen::v1::JOB_STATE_RUNNING &&
        job.attempts() >= options_.max_job_attempts) {
      RETURN_IF_ERROR(FailAfterAttempts(&job, "the server stopped"));
      continue;
    }
    if (job.state() == kaizen::v1::JOB_STATE_RUNNING) {
      PublishMessage(job.id(), absl::StrCat("the server restarted while this job ran; requeued to "
                                            "resume from ",
                                            ResumePoint(job)));
      RETURN_IF_ERROR(PublishState(&job, kaizen::v1::JOB_STATE_QUEUED));
    }
    if (job.state() == kaizen::v1::JOB_STATE_PAUSED && !job.preempted_by().empty()) {
      // The server stopped between pausing a preempted job and requeueing it.
      PublishMessage(job.id(), absl::StrCat("requeued after a restart (", job.pause_reason(), ")"));
      RETURN_IF_ERROR(PublishState(&job, kaizen::v1::JOB_STATE_QUEUED));
    }
  }
  for (int i = 0; i < options_.workers; ++i) {
    workers_.emplace_back([this, i] { WorkerLoop(i); });
  }
  if (options_.shared_database) replica_thread_ = std::thread([this] { ReplicaLoop(); });
  common::LogInfo("job workers started",
                  {{"workers", options_.workers},
                   {"threads_per_worker", options_.threads_per_worker},
                   {"replica", options_.shared_database ? options_.replica_id : "lone server"},
                   {"requeued_or_queued", static_cast<int64_t>(active.size())}});
  return absl::OkStatus();
}

void JobManager::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
    wake_.SignalAll();
  }
  shutting_down_ = true;
  for (std::thread& t : workers_) t.join();
  workers_.clear();
  // Leases are renewed until the last job has checkpointed and gone back to
  // the queue: none is taken over while it winds down.
  {
    std::lock_guard<std::mutex> lock(replica_mu_);
    replica_stopping_ = true;
  }
  replica_wake_.notify_all();
  if (replica_thread_.joinable()) replica_thread_.join();
}

namespace {

// Leases are renewed by a clock that no step of the wall clock moves. (A
// replica that wakes from a pause of its virtual machine still reports
// progress until its next renewal; its writes are fenced by the lease's
// owner.)
using common::SteadyNow;

}  // namespace

void JobManager::ReplicaLoop() {
  // Renewing three times per lease leaves two renewals of slack; other
  // replicas' events reach this one's watchers within a second. Scheduled
  // by the monotonic clock: a step of the wall clock neither delays a
  // renewal nor brings one forward.
  const absl::Duration renew_every = std::max(absl::Milliseconds(100), options_.job_lease / 3);
  const absl::Duration poll_every = std::min(absl::Seconds(1), renew_every);
  absl::Duration next_renewal = -absl::InfiniteDuration();
  std::unique_lock<std::mutex> lock(replica_mu_);
  while (!replica_stopping_) {
    const bool renew = SteadyNow() >= next_renewal;
    if (renew) next_renewal = SteadyNow() + renew_every;
    lock.unlock();
    ReplicaTick(renew);
    lock.lock();
    replica_wake_.wait_for(lock, absl::ToChronoMilliseconds(poll_every),
                           [this] { return replica_stopping_; });
  }
}

void JobManager::ApplyLeaseRequest(const std::string& id, Running* running,
                                   const std::string& request) {
  if (request == "cancel" && !running->cancel.exchange(true)) {
    PublishMessage(id, kCancelRequested);
  } else if (request == "pause") {
    RequestPause(running);
  }
}

void JobManager::ApplyLateRequest(Job* job, const std::string& request) {
  if (request != "cancel" && request != "pause") return;
  const std::string id = job->id();
  const bool cancel = request == "cancel";
  // A few tries: a resume or a cancel through another replica may move the
  // job between reading it and changing it.
  for (int attempt = 0; attempt < 3; ++attempt) {
    if (attempt > 0) {
      absl::StatusOr<Job> now = jobs_->Get(id);
      if (!now.ok()) break;
      *job = *std::move(now);
    }
    if (common::IsTerminal(job->state())) {
      PublishMessage(id, absl::StrCat("the ", request,
                                      " asked through another replica came after the job had "
                                      "ended ",
                                      kaizen::v1::JobState_Name(job->state())));
      return;
    }
    if (!cancel && job->state() == kaizen::v1::JOB_STATE_PAUSED && job->preempted_by().empty()) {
      return;  // already paused by a user
    }
    const JobState to = cancel ? kaizen::v1::JOB_STATE_CANCELLED : kaizen::v1::JOB_STATE_PAUSED;
    bool moved = false;
    if (job->state() != kaizen::v1::JOB_STATE_RUNNING) {
      absl::StatusOr<bool> changed = jobs_->TransitionState(id, job->state(), to);
      if (!changed.ok()) break;
      moved = *changed;
    }
    if (!moved) {
      // Claimed by a replica since (a claim leases the job in the same
      // transaction that marks it RUNNING): the request waits on its lease.
      absl::StatusOr<std::optional<std::string>> holder =
          jobs_->RequestOfLeaseHolder(id, request, LeaseNowMs());
      if (holder.ok() && holder->has_value()) return;
      continue;
    }
    if (!cancel) {
      job->set_pause_reason(kPausedByUser);
      job->clear_preempted_by();
      job->set_pause_count(job->pause_count() + 1);
    }
    PublishMessage(id, absl::StrCat("the ", cancel ? "cancellation" : "pause",
                                    " asked through another replica reached the job as its run "
                                    "ended; ",
                                    cancel ? "cancelled" : "it continues after ResumeJob"));
    if (absl::Status st = PublishState(job, to); !st.ok()) {
      common::LogError("cannot record job state", {{"job", id}, {"error", st.ToString()}});
    }
    return;
  }
  common::LogWarning("a request through another replica could not be applied",
                     {{"job", id}, {"request", request}});
}

void JobManager::ReplicaTick(bool renew) {
  if (renew) {
    if (absl::Status read = RefreshLeaseClock(); !read.ok()) {
      common::LogWarning("the database's clock was not read; leases follow the last reading",
                         {{"error", read.ToString()}});
    }
    std::vector<std::string> ids;
    {
      absl::MutexLock lock(&mu_);
      for (const auto& [id, running] : running_) ids.push_back(id);
    }
    // Not under mu_: the database may be slow or away, and every API call
    // and claim takes mu_.
    if (options_.before_lease_renewal) options_.before_lease_renewal();
    const int64_t now = LeaseNowMs();
    const int64_t lease = absl::ToInt64Milliseconds(options_.job_lease);
    absl::StatusOr<std::map<std::string, store::JobStore::LeaseState>> leases =
        jobs_->RenewLeases(options_.replica_id, ids, now, lease);
    absl::MutexLock lock(&mu_);
    if (!leases.ok()) {
      common::LogError("cannot renew job leases", {{"error", leases.status().ToString()}});
    } else {
      for (const auto& [id, state] : *leases) {
        auto it = running_.find(id);
        if (it == running_.end()) continue;
        Running* running = it->second;
        if (!state.held) {
          MarkLost(id);
        } else {
          LeaseHeld(running, now, lease);
          ApplyLeaseRequest(id, running, state.request);
        }
      }
    }
  }
  if (renew) {
    QueueAbandonedSubmissions();
    ReleaseOutputsOfJobsEndedElsewhere();
  }
  if (absl::Status st = events_->PollStore(); !st.ok()) {
    common::LogError("cannot read other replicas' job events", {{"error", st.ToString()}});
  }
  if (renew && options_.on_replica_tick) options_.on_replica_tick();
}

void JobManager::QueueAbandonedSubmissions() {
  absl::StatusOr<std::vector<Job>> held = jobs_->InStates({kaizen::v1::JOB_STATE_UNSPECIFIED});
  if (!held.ok()) {
    common::LogError("cannot read held jobs", {{"error", held.status().ToString()}});
    return;
  }
  const absl::Duration now = SteadyNow();
  absl::flat_hash_map<std::string, absl::Duration> seen;
  for (const Job& job : *held) {
    auto it = held_since_.find(job.id());
    seen[job.id()] = it == held_since_.end() ? now : it->second;
  }
  held_since_ = std::move(seen);
  for (Job& job : *held) {
    if (now - held_since_[job.id()] < options_.abandoned_submission) continue;
    absl::StatusOr<bool> queued = QueueIfHeld(&job);
    if (!queued.ok()) {
      common::LogError("cannot queue an abandoned submission",
                       {{"job", job.id()}, {"error", queued.status().ToString()}});
      continue;
    }
    if (!*queued) continue;  // its Submit, or another replica, queued it meanwhile
    PublishMessage(job.id(), absl::StrCat("the submission of this job stopped before queueing it "
                                          "(its replica died or lost the database); replica ",
                                          options_.replica_id, " queued it"));
    wake_.Signal();
  }
}

void JobManager::MarkLost(const std::string& job_id) {
  auto it = running_.find(job_id);
  if (it == running_.end() || it->second->lost.exchange(true)) return;
  common::LogWarning("another replica took this job over; stopping it here",
                     {{"job", job_id}, {"replica", options_.replica_id}});
}

bool JobManager::RunLost(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  auto it = running_.find(job_id);
  return it != running_.end() && it->second->lost;
}

int64_t JobManager::LeaseNowMs() const {
  // The base is stored before the flag is set.
  if (!lease_clock_read_) return absl::ToUnixMillis(options_.clock());
  return absl::ToInt64Milliseconds(SteadyNow()) + lease_clock_base_ms_;
}

absl::Status JobManager::RefreshLeaseClock() {
  if (!options_.shared_database) return absl::OkStatus();
  const absl::Duration sent = SteadyNow();
  const absl::Time wall_sent = options_.clock();
  absl::StatusOr<int64_t> database = jobs_->DatabaseMillis();
  const absl::Duration round_trip = SteadyNow() - sent;
  if (!database.ok()) return database.status();
  if (round_trip > absl::Seconds(1)) {
    return absl::UnavailableError(absl::StrCat("reading the database's clock took ",
                                               absl::FormatDuration(round_trip),
                                               " (over 1s): too uncertain to keep"));
  }
  lease_clock_base_ms_ = *database - absl::ToInt64Milliseconds(sent + round_trip / 2);
  lease_clock_read_ = true;
  const int64_t offset = *database - absl::ToUnixMillis(wall_sent + round_trip / 2);
  const int64_t previous = wall_clock_offset_ms_.exchange(offset);
  if (std::abs(offset - previous) > 1000) {
    common::LogWarning(
        "this replica's clock disagrees with the database's; leases follow the "
        "database's",
        {{"replica", options_.replica_id}, {"offset_ms", offset}});
  }
  return absl::OkStatus();
}

absl::Status JobManager::ReadLeaseClock() {
  absl::Status read = RefreshLeaseClock();
  for (int attempt = 1; attempt < 5 && !read.ok(); ++attempt) {
    absl::SleepFor(absl::Milliseconds(200));
    read = RefreshLeaseClock();
  }
  if (read.ok()) return read;
  return absl::UnavailableError(
      absl::StrCat("cannot read the database's clock, which times job leases: ", read.message()));
}

bool JobManager::Reports(const Running& running) const {
  return !running.lost && LeaseNowMs() < running.leased_until_ms;
}

void JobManager::LeaseHeld(Running* running, int64_t now_ms, int64_t lease_ms) {
  // Renewals that cross (a tick's and a fenced write's) never shorten it.
  const int64_t until = now_ms + lease_ms;
  int64_t seen = running->leased_until_ms;
  while (until > seen && !running->leased_until_ms.compare_exchange_weak(seen, until)) {
  }
}

void JobManager::WithdrawUnrecordedVersions(const Job& job) {
  const std::string& name = job.request().output_model();
  absl::StatusOr<kaizen::v1::Model> model = models_->Get(name, 0);
  if (!model.ok()) return;  // none written yet, or said by the run itself
  if (model->version() <= job.latest_version()) {
    return;  // the usual case: nothing newer than what the job records
  }
  const std::vector<int64_t> versions =
      model->versions().empty()
          ? std::vector<int64_t>{model->version()}
          : std::vector<int64_t>(model->versions().begin(), model->versions().end());
  // What the row records, if another replica recorded more meanwhile.
  absl::StatusOr<Job> stored = jobs_->Get(job.id());
  if (!stored.ok()) return;
  const int64_t recorded = std::max(job.latest_version(), stored->latest_version());
  // The job's own versions among the newer ones (an INCREMENTAL job may
  // write into its base's model, whose other versions are not its own).
  std::vector<kaizen::v1::Model> candidates;
  for (const int64_t v : versions) {
    if (v <= recorded) continue;
    absl::StatusOr<kaizen::v1::Model> version = models_->Get(name, v);
    if (version.ok() && version->job_id() == job.id()) candidates.push_back(*std::move(version));
  }
  if (candidates.empty()) return;
  // Exclusive, as when pruning: no submission pins a version meanwhile.
  absl::WriterMutexLock references(&references_mu_);
  absl::StatusOr<std::vector<int64_t>> pinned = PinnedVersionsInUse(name);
  if (!pinned.ok()) return;
  for (const kaizen::v1::Model& version : candidates) {
    const int64_t v = version.version();
    if (std::find(pinned->begin(), pinned->end(), v) != pinned->end()) continue;
    absl::Status removed = models_->RemoveVersion(name, v, version.sha256());
    if (!removed.ok() && !absl::IsNotFound(removed)) {
      common::LogError(
          "cannot withdraw an unrecorded version",
          {{"job", job.id()}, {"model", name}, {"version", v}, {"error", removed.ToString()}});
      continue;
    }
    PublishMessage(job.id(), absl::StrCat("withdrew version ", v, " of ", name,
                                          ": an earlier run of this job wrote it and stopped "
                                          "before recording it"));
  }
}

absl::Status JobManager::Persist(Job* job) {
  ASSIGN_OR_RETURN(int64_t last, jobs_->LastSequence(job->id()));
  job->set_last_sequence(last);
  if (!options_.shared_database) return jobs_->Update(*job);
  ASSIGN_OR_RETURN(const bool held, jobs_->UpdateIfLeased(*job, options_.replica_id, LeaseNowMs()));
  if (held) return absl::OkStatus();
  absl::MutexLock lock(&mu_);
  MarkLost(job->id());
  return absl::AbortedError(
      absl::StrCat("job ", job->id(), " is no longer leased to this replica: not recorded"));
}

absl::Status JobManager::FenceRun(const std::string& job_id) {
  if (!options_.shared_database) return absl::OkStatus();
  const int64_t now = LeaseNowMs();
  const int64_t lease = absl::ToInt64Milliseconds(options_.job_lease);
  ASSIGN_OR_RETURN(auto leases, jobs_->RenewLeases(options_.replica_id, {job_id}, now, lease));
  const store::JobStore::LeaseState& state = leases[job_id];
  absl::MutexLock lock(&mu_);
  if (!state.held) {
    MarkLost(job_id);
    return absl::AbortedError(
        absl::StrCat("job ", job_id, " is no longer leased to this replica: not recorded"));
  }
  if (auto it = running_.find(job_id); it != running_.end()) {
    LeaseHeld(it->second, now, lease);
    ApplyLeaseRequest(job_id, it->second, state.request);
  }
  return absl::OkStatus();
}

absl::Status JobManager::PublishLeased(Job* job, JobEvent event) {
  if (options_.shared_database && options_.before_leased_event) {
    options_.before_leased_event(job->id(), event);
  }
  Job next = *job;
  ASSIGN_OR_RETURN(std::optional<JobEvent> stored,
                   events_->PublishIf(
                       job->id(), std::move(event), [&](const JobEvent& e) -> absl::StatusOr<bool> {
                         next.set_last_sequence(e.sequence());
                         // A lone server's run keeps its row RUNNING until
                         // it ends.
                         return options_.shared_database
                                    ? jobs_->AppendEventIfLeased(e, next, options_.replica_id,
                                                                 LeaseNowMs())
                                    : jobs_->AppendEventIf(e, next, kaizen::v1::JOB_STATE_RUNNING);
                       }));
  if (stored.has_value()) {
    job->set_last_sequence(stored->sequence());
    return absl::OkStatus();
  }
  if (!options_.shared_database) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", job->id(), " is no longer RUNNING: not recorded"));
  }
  absl::MutexLock lock(&mu_);
  MarkLost(job->id());
  return absl::AbortedError(
      absl::StrCat("job ", job->id(), " is no longer leased to this replica: not recorded"));
}

absl::Status JobManager::PublishState(Job* job, JobState state) {
  // A job that ends runs no more: its output keeps only what its row
  // records, and watchers hear of any withdrawal before the end, which
  // closes their streams.
  if (common::IsTerminal(state)) WithdrawUnrecordedVersions(*job);
  job->set_state(state);
  if (common::IsTerminal(state)) *job->mutable_end_time() = Now();
  JobEvent e;
  e.set_state(state);
  // The row takes the new state once its event is stored and before any
  // watcher is told: whoever reads the state (GetJob, or WatchJob deciding
  // whether a job has ended) finds its event stored, and a watch that ends
  // at a terminal state is followed by GetJob answering that state.
  absl::StatusOr<JobEvent> published =
      events_->Publish(job->id(), std::move(e), [&](const JobEvent& stored) {
        job->set_last_sequence(stored.sequence());
        return jobs_->Update(*job);
      });
  if (!published.ok()) {
    // Without its event, the row still records the state.
    jobs_->Update(*job).IgnoreError();
    return published.status();
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> JobManager::QueueIfHeld(Job* job) {
  return PublishStateIf(job, kaizen::v1::JOB_STATE_QUEUED, kaizen::v1::JOB_STATE_UNSPECIFIED);
}

absl::StatusOr<bool> JobManager::PublishStateIf(Job* job, JobState state, JobState from) {
  Job next = *job;
  next.set_state(state);
  JobEvent e;
  e.set_state(state);
  // As PublishState, with the event and the row written together and only
  // while the row is in `from`: a row another replica moved meanwhile gets
  // neither.
  ASSIGN_OR_RETURN(std::optional<JobEvent> stored,
                   events_->PublishIf(job->id(), std::move(e),
                                      [&](const JobEvent& event) -> absl::StatusOr<bool> {
                                        next.set_last_sequence(event.sequence());
                                        return jobs_->AppendEventIf(event, next, from);
                                      }));
  if (!stored.has_value()) return false;
  *job = std::move(next);
  return true;
}

void JobManager::PublishRunMessage(const std::string& job_id, const std::string& message) {
  if (!options_.shared_database) return PublishMessage(job_id, message);
  JobEvent e;
  e.set_message(message);
  if (options_.before_leased_event) options_.before_leased_event(job_id, e);
  absl::StatusOr<std::optional<JobEvent>> stored =
      events_->PublishIf(job_id, std::move(e), [&](const JobEvent& event) {
        return jobs_->AppendEventWhileLeased(event, options_.replica_id, LeaseNowMs());
      });
  if (!stored.ok()) {
    common::LogWarning("cannot publish job event",
                       {{"job", job_id}, {"error", stored.status().ToString()}});
  } else if (!stored->has_value()) {
    absl::MutexLock lock(&mu_);
    MarkLost(job_id);
  }
}

void JobManager::PublishMessage(const std::string& job_id, const std::string& message) {
  JobEvent e;
  e.set_message(message);
  if (absl::Status st = events_->Publish(job_id, std::move(e)).status(); !st.ok()) {
    common::LogWarning("cannot publish job event", {{"job", job_id}, {"error", st.ToString()}});
  }
}

namespace {

// Most entries in a repeated request field (ListJobs.states,
// previous_datasets), and the largest StartFineTuneRequest stored in a job.
constexpr int kMaxRepeatedRequestField = 16;
constexpr size_t kMaxStoredRequestBytes = 64 << 10;

// The request is stored in the job and sent back by GetJob and ListJobs, so
// its free-form parts are bounded before anything else looks at it.
absl::Status ValidateRequestText(const kaizen::v1::StartFineTuneRequest& request) {
  RETURN_IF_ERROR(
      common::ValidateToken("request_id", request.request_id(), common::kMaxTokenBytes));
  RETURN_IF_ERROR(common::ValidateToken("hyperparameters.early_stopping.metric",
                                        request.hyperparameters().early_stopping().metric(),
                                        common::kMaxTokenBytes));
  RETURN_IF_ERROR(common::ValidateCount("incremental.previous_datasets",
                                        request.incremental().previous_datasets_size(),
                                        kMaxRepeatedRequestField));
  if (request.ByteSizeLong() > kMaxStoredRequestBytes) {
    return absl::InvalidArgumentError(absl::StrCat("the request is ", request.ByteSizeLong(),
                                                   " bytes; at most ", kMaxStoredRequestBytes,
                                                   " are accepted"));
  }
  return absl::OkStatus();
}

absl::Status ValidateStates(const google::protobuf::RepeatedField<int>& states) {
  RETURN_IF_ERROR(common::ValidateCount("states", states.size(), kMaxRepeatedRequestField));
  for (int i = 0; i < states.size(); ++i) {
    if (!kaizen::v1::JobState_IsValid(states[i]) ||
        states[i] == kaizen::v1::JOB_STATE_UNSPECIFIED) {
      return absl::InvalidArgumentError(
          absl::StrCat("states[", i, "] is ", states[i],
                       "; use JOB_STATE_QUEUED, _RUNNING, _SUCCEEDED, "
                       "_FAILED, _CANCELLED or _PAUSED"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckOutputSettings(const kaizen::v1::StartFineTuneRequest& request) {
  // A preview (validate_only) may leave the output unnamed.
  if (!(request.validate_only() && request.output_model().empty())) {
    RETURN_IF_ERROR(common::ValidateName("output_model", request.output_model()));
  }
  if (models::IsBuiltinModel(request.output_model()) ||
      request.output_model() == models::kTransformerSmall) {
    return absl::AlreadyExistsError(
        absl::StrCat("output_model \"", request.output_model(), "\" is a built-in model"));
  }
  if (request.keep_checkpoints() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("keep_checkpoints is ", request.keep_checkpoints(), "; it must be >= 0"));
  }
  return absl::OkStatus();
}

Job NewQueuedJob(const kaizen::v1::StartFineTuneRequest& request,
                 const kaizen::v1::Hyperparameters& resolved, int world_size) {
  Job job;
  job.set_world_size(world_size);
  job.set_id(absl::StrCat("ft-", common::RandomHex(6)));
  *job.mutable_request() = request;
  *job.mutable_resolved_hyperparameters() = resolved;
  job.set_state(kaizen::v1::JOB_STATE_QUEUED);
  *job.mutable_create_time() = Now();
  job.set_total_epochs(resolved.epochs());
  return job;
}

// The request checks an image job makes before its references: a strategy
// this build trains, tuning, distillation and incremental options.
absl::Status CheckImageRequest(const kaizen::v1::StartFineTuneRequest& request) {
  RETURN_IF_ERROR(training::CheckStrategyAvailable(request.strategy()));
  RETURN_IF_ERROR(training::ValidateTuningRequest(request.strategy(), request.hyperparameters(),
                                                  request.tuning()));
  RETURN_IF_ERROR(
      training::ResolveDistillation(request.strategy(), request.distillation()).status());
  RETURN_IF_ERROR(
      training::ResolveIncremental(request.strategy(), request.incremental(), 1).status());
  if (request.strategy() == kaizen::v1::STRATEGY_INCREMENTAL && request.tuning().max_trials() > 0) {
    return absl::InvalidArgumentError(
        "tuning.max_trials is set but STRATEGY_INCREMENTAL does not tune: its trials would be "
        "scored on the new classes alone; set the hyperparameters, or tune a FINE_TUNE job");
  }
  if (request.hyperparameters().has_text()) {
    return absl::InvalidArgumentError(
        "hyperparameters.text is set but the dataset is not a text dataset");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::optional<Job>> JobManager::RetriedSubmission(
    const kaizen::v1::StartFineTuneRequest& request) {
  if (request.request_id().empty() || request.validate_only()) return std::nullopt;
  ASSIGN_OR_RETURN(std::optional<Job> existing, jobs_->FindByRequestId(request.request_id()));
  if (!existing) return std::nullopt;
  // Held (its first Submit stopped before queueing it): the retry queues
  // it. Conditional, so a job queued or claimed meanwhile is not written
  // again.
  ASSIGN_OR_RETURN(const bool queued, QueueIfHeld(&*existing));
  if (queued) wake_.Signal();
  return existing;
}

absl::StatusOr<Job> JobManager::Submit(const kaizen::v1::StartFineTuneRequest& request) {
  RETURN_IF_ERROR(ValidateRequestText(request));
  {
    ASSIGN_OR_RETURN(std::optional<Job> retried, RetriedSubmission(request));
    if (retried) return *std::move(retried);
  }
  // A text dataset takes the text path (text_job.h); anything else, a
  // missing dataset included, the image path, which says what is wrong.
  std::optional<kaizen::v1::Dataset> text_dataset;
  if (absl::StatusOr<kaizen::v1::Dataset> d = datasets_->Get(request.dataset());
      d.ok() && store::IsTextDataset(*d)) {
    text_dataset = *std::move(d);
  }
  if (!text_dataset) RETURN_IF_ERROR(CheckImageRequest(request));
  // Workers claim under mu_: none may take the job (nor Pause or Cancel
  // change it) between its insertion and its QUEUED event.
  absl::MutexLock lock(&mu_);
  {
    // Again under mu_: a concurrent Submit of the same request_id (a
    // client's retry while the first was checked) has inserted and queued
    // it meanwhile, and its output name is reserved; the retry gets that
    // job, not a refusal of the name.
    ASSIGN_OR_RETURN(std::optional<Job> retried, RetriedSubmission(request));
    if (retried) return *std::move(retried);
  }
  ASSIGN_OR_RETURN(Job job, text_dataset ? CheckTextReferencesAndInsert(request, *text_dataset)
                                         : CheckReferencesAndInsert(request));
  if (request.validate_only()) return job;
  // Only from held: the winner of a request_id race that its own Submit has
  // queued (and a replica may have claimed), or a row another replica
  // queued as abandoned (QueueAbandonedSubmissions), is not written again.
  ASSIGN_OR_RETURN(const bool queued, QueueIfHeld(&job));
  if (!queued) return jobs_->Get(job.id());
  common::LogInfo("job queued", {{"job", job.id()},
                                 {"strategy", kaizen::v1::Strategy_Name(request.strategy())},
                                 {"base", request.base_model()},
                                 {"dataset", request.dataset()},
                                 {"output", request.output_model()}});
  if (job.has_distillation() &&
      job.distillation().student_parameter_count() > job.distillation().teacher_parameter_count()) {
    const kaizen::v1::DistillationResult& d = job.distillation();
    PublishMessage(job.id(), absl::StrFormat("warning: the student %s has %d parameters, more than "
                                             "its teacher %s:%d (%d); distillation usually makes "
                                             "a smaller model, but the job runs as asked",
                                             request.base_model(), d.student_parameter_count(),
                                             d.teacher_model(), d.teacher_version(),
                                             d.teacher_parameter_count()));
  }
  wake_.Signal();
  PreemptForQueue();
  return job;
}

absl::Status JobManager::CheckBaseModel(const kaizen::v1::StartFineTuneRequest& request) {
  std::string base;
  int64_t base_version = 0;
  if (request.base_model().empty()) return absl::InvalidArgumentError("base_model is empty");
  RETURN_IF_ERROR(common::ParseModelRef(request.base_model(), &base, &base_version));
  absl::StatusOr<kaizen::v1::Model> base_model = models_->Get(base, base_version);
  if (!base_model.ok()) {
    return absl::Status(base_model.status().code(),
                        absl::StrCat("base_model: ", base_model.status().message()));
  }
  return absl::OkStatus();
}

namespace {

// The student's parameters with a new head for `classes` classes: a
// built-in as the trainer creates it for the dataset, a stored model with its
// linear head resized.
absl::StatusOr<int64_t> StudentParameters(const kaizen::v1::StartFineTuneRequest& request,
                                          const kaizen::v1::Dataset& dataset,
                                          store::ModelStore* models) {
  std::string base;
  int64_t version = 0;
  RETURN_IF_ERROR(common::ParseModelRef(request.base_model(), &base, &version));
  const int64_t classes = dataset.classes_size();
  if (models::IsBuiltinModel(base)) {
    models::BuiltinOptions bo;
    bo.in_channels = dataset.input_shape(0);
    bo.input_size = std::max(dataset.input_shape(1), dataset.input_shape(2));
    bo.num_classes = classes;
    ASSIGN_OR_RETURN(const kaizen::v1::Model described, models::DescribeBuiltinModel(base, bo));
    return described.parameter_count();
  }
  ASSIGN_OR_RETURN(const kaizen::v1::Model model, models->Get(base, version));
  const kaizen::v1::ModelHead& head = model.head();
  int64_t count = model.parameter_count();
  if (head.kind() != kaizen::v1::HEAD_KIND_MLP && head.in_features() > 0) {
    count += (classes - head.out_features()) * (head.in_features() + 1);
  }
  return count;
}

}  // namespace

absl::StatusOr<kaizen::v1::Model> JobManager::TrainedModel(absl::string_view field,
                                                           const std::string& ref,
                                                           absl::string_view builtin_advice) {
  std::string name;
  int64_t version = 0;
  if (absl::Status st = common::ParseModelRef(ref, &name, &version); !st.ok()) {
    return absl::Status(st.code(), absl::StrCat(field, ": ", st.message()));
  }
  if (models::IsBuiltinModel(name)) {
    return absl::FailedPreconditionError(absl::StrCat(
        field, " \"", ref, "\" is a built-in architecture with random weights", builtin_advice));
  }
  absl::StatusOr<kaizen::v1::Model> model = models_->Get(name, version);
  if (!model.ok()) {
    return absl::Status(model.status().code(), absl::StrCat(field, ": ", model.status().message()));
  }
  if (!model->quarantine_reason().empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(field, " \"", name, ":", model->version(),
                     "\" is quarantined: ", model->quarantine_reason()));
  }
  return model;
}

absl::StatusOr<kaizen::v1::DistillationResult> JobManager::CheckTeacher(
    const kaizen::v1::StartFineTuneRequest& request, const kaizen::v1::Dataset& dataset) {
  ASSIGN_OR_RETURN(const kaizen::v1::DistillationOptions options,
                   training::ResolveDistillation(request.strategy(), request.distillation()));
  ASSIGN_OR_RETURN(const kaizen::v1::Model teacher,
                   TrainedModel("distillation.teacher_model", options.teacher_model(),
                                "; a teacher must be a trained model (train one, e.g. with "
                                "STRATEGY_SCRATCH, first)"));
  const std::string& name = teacher.name();
  const bool text = store::IsTextDataset(dataset);
  if (teacher.has_text_input() != text) {
    return absl::InvalidArgumentError(
        absl::StrCat("distillation.teacher_model \"", name, "\" is ", text ? "an image" : "a text",
                     " model; it cannot teach from ", text ? "texts" : "images", " (dataset \"",
                     request.dataset(), "\")"));
  }
  std::vector<std::string> dataset_classes;
  for (const auto& c : dataset.classes()) dataset_classes.push_back(c.class_name());
  const std::vector<std::string> teacher_classes(teacher.class_names().begin(),
                                                 teacher.class_names().end());
  if (teacher_classes != dataset_classes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "distillation.teacher_model \"", name, ":", teacher.version(), "\" predicts the classes [",
        absl::StrJoin(teacher_classes, ", "), "] but dataset \"", request.dataset(), "\" has [",
        absl::StrJoin(dataset_classes, ", "),
        "]; a teacher needs the dataset's class names in the same order"));
  }
  kaizen::v1::DistillationResult d;
  d.set_teacher_model(name);
  d.set_teacher_version(teacher.version());
  d.set_temperature(options.temperature());
  d.set_alpha(options.alpha());
  d.set_teacher_parameter_count(teacher.parameter_count());
  // A new text encoder's size depends on the tokenizer the job trains: it
  // is counted when training ends.
  if (text && BuildsNewTextEncoder(request)) return d;
  absl::StatusOr<int64_t> student = StudentParameters(request, dataset, models_);
  if (!student.ok()) {
    return absl::Status(student.status().code(),
                        absl::StrCat("base_model: ", student.status().message()));
  }
  d.set_student_parameter_count(*student);
  return d;
}

absl::Status JobManager::CheckTestDataset(const kaizen::v1::StartFineTuneRequest& request,
                                          const std::vector<std::string>& train_classes) {
  const std::string& test = request.test_dataset();
  if (test.empty()) return absl::OkStatus();
  if (options_.evaluator == nullptr) {
    return absl::UnimplementedError("test_dataset: this server runs no evaluations");
  }
  if (test == request.dataset() || test == request.hyperparameters().validation().dataset()) {
    return absl::InvalidArgumentError(
        absl::StrCat("test_dataset \"", test, "\" is the job's ",
                     test == request.dataset() ? "training" : "validation",
                     " dataset; a test set must be data the job never trains on or chooses with"));
  }
  absl::StatusOr<kaizen::v1::Dataset> info = datasets_->Get(test);
  if (!info.ok()) {
    return absl::Status(info.status().code(),
                        absl::StrCat("test_dataset: ", info.status().message()));
  }
  RETURN_IF_ERROR(store::RequireImageDataset(*info, "test_dataset"));
  if (absl::Status size = options_.evaluator->CheckSize(test, info->num_examples()); !size.ok()) {
    return absl::Status(size.code(), absl::StrCat("test_dataset: ", size.message()));
  }
  std::vector<std::string> test_classes;
  for (const auto& c : info->classes()) test_classes.push_back(c.class_name());
  if (absl::Status mapped = training::MapClasses(test_classes, train_classes,
                                                 static_cast<int64_t>(train_classes.size()))
                                .status();
      !mapped.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("test_dataset \"", test, "\": ", mapped.message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<kaizen::v1::Dataset> JobManager::CheckDatasets(
    const kaizen::v1::StartFineTuneRequest& request, const std::vector<std::string>& old_classes) {
  if (request.dataset().empty()) return absl::InvalidArgumentError("dataset is empty");
  absl::StatusOr<kaizen::v1::Dataset> dataset = datasets_->Get(request.dataset());
  if (!dataset.ok()) {
    return absl::Status(dataset.status().code(),
                        absl::StrCat("dataset: ", dataset.status().message()));
  }
  RETURN_IF_ERROR(store::RequireImageDataset(*dataset, "dataset"));
  std::vector<std::string> dataset_classes;
  for (const auto& c : dataset->classes()) dataset_classes.push_back(c.class_name());
  RETURN_IF_ERROR(CheckTestDataset(
      request, old_classes.empty() ? dataset_classes
                                   : training::MergeClassNames(old_classes, dataset_classes)));
  const auto& validation = request.hyperparameters().validation();
  if (validation.source_case() != kaizen::v1::ValidationOptions::kDataset) return dataset;
  absl::StatusOr<kaizen::v1::Dataset> val = datasets_->Get(validation.dataset());
  if (!val.ok()) {
    return absl::Status(val.status().code(), absl::StrCat("hyperparameters.validation.dataset: ",
                                                          val.status().message()));
  }
  RETURN_IF_ERROR(store::RequireImageDataset(*val, "hyperparameters.validation.dataset"));
  std::vector<std::string> a, b;
  for (const auto& c : dataset->classes()) a.push_back(c.class_name());
  for (const auto& c : val->classes()) b.push_back(c.class_name());
  if (a != b) {
    return absl::InvalidArgumentError(
        absl::StrCat("validation dataset \"", validation.dataset(), "\" has other classes than \"",
                     request.dataset(), "\"; both need the same class names in the same order"));
  }
  return dataset;
}

absl::StatusOr<Job> JobManager::ReserveAndInsert(Job job) {
  const kaizen::v1::StartFineTuneRequest& request = job.request();
  // One name registry for uploads and job outputs: neither can take a name
  // the other holds or that exists. The insertion checks it again in its
  // transaction, against other replicas' uploads and jobs.
  const bool may_exist =
      job.has_incremental() && job.incremental().base_model() == request.output_model();
  if (absl::Status st =
          models_->ReserveName(request.output_model(), absl::StrCat("job ", job.id()), may_exist);
      !st.ok()) {
    return absl::Status(st.code(), absl::StrCat("output_model: ", st.message()));
  }
  NoteReservedOutput(job);
  if (options_.after_references_checked) options_.after_references_checked();
  // Held until Submit's QUEUED event writes the row's state: no replica may
  // claim it in between (JobStore::Insert).
  if (absl::Status st = jobs_->Insert(job, /*held=*/true, /*output_may_exist=*/may_exist);
      !st.ok()) {
    OutputEnded(job, /*ran=*/false);
    if (absl::IsAlreadyExists(st) && !request.request_id().empty()) {
      // Lost a race with the same request_id: answer with the winner.
      ASSIGN_OR_RETURN(std::optional<Job> existing, jobs_->FindByRequestId(request.request_id()));
      if (existing) return *existing;
    }
    return st;
  }
  return job;
}

absl::StatusOr<Job> JobManager::CheckReferencesAndInsert(
    const kaizen::v1::StartFineTuneRequest& request) {
  // A dataset or model deleted after this point would leave a queued job
  // pointing at nothing: deletions wait for this hold to end.
  absl::ReaderMutexLock references(&references_mu_);
  if (BuildsNewTextEncoder(request)) {
    return absl::InvalidArgumentError(absl::StrCat("base_model ", models::kTransformerSmall,
                                                   " is a text encoder and dataset \"",
                                                   request.dataset(), "\" is not a text dataset"));
  }
  RETURN_IF_ERROR(CheckBaseModel(request));
  std::string base_name;
  int64_t base_version = 0;
  if (common::ParseModelRef(request.base_model(), &base_name, &base_version).ok()) {
    if (absl::StatusOr<kaizen::v1::Model> base = models_->Get(base_name, base_version);
        base.ok() && base->has_text_input()) {
      return absl::InvalidArgumentError(absl::StrCat("base_model \"", request.base_model(),
                                                     "\" is a text model and dataset \"",
                                                     request.dataset(), "\" holds images"));
    }
  }
  const bool incremental = request.strategy() == kaizen::v1::STRATEGY_INCREMENTAL;
  kaizen::v1::IncrementalResult inc;
  std::vector<std::string> previous_datasets;
  if (incremental) {
    ASSIGN_OR_RETURN(inc, CheckIncrementalBase(request, 1, &previous_datasets));
  }
  ASSIGN_OR_RETURN(const kaizen::v1::Dataset dataset,
                   CheckDatasets(request, std::vector<std::string>(inc.old_classes().begin(),
                                                                   inc.old_classes().end())));
  RETURN_IF_ERROR(CheckOutputSettings(request));
  kaizen::v1::DistillationResult distillation;
  if (request.strategy() == kaizen::v1::STRATEGY_DISTILL) {
    ASSIGN_OR_RETURN(distillation, CheckTeacher(request, dataset));
  }
  ASSIGN_OR_RETURN(kaizen::v1::Hyperparameters resolved,
                   training::ResolveHyperparameters(request.strategy(), request.hyperparameters(),
                                                    dataset.num_examples()));
  ASSIGN_OR_RETURN(const int world_size,
                   ResolveWorldSize(request, /*text=*/false, options_.data_parallel));
  Job job = NewQueuedJob(request, resolved, world_size);
  // The teacher version is fixed here: a resumed job loads this one even if
  // a newer version appears meanwhile.
  if (request.strategy() == kaizen::v1::STRATEGY_DISTILL) {
    *job.mutable_distillation() = std::move(distillation);
  }
  // Likewise the base version of an INCREMENTAL job.
  if (incremental) {
    RETURN_IF_ERROR(
        RecordIncremental(std::move(inc), dataset, previous_datasets, /*text=*/false, &job));
  }
  if (request.validate_only()) return Preview(std::move(job));
  return ReserveAndInsert(std::move(job));
}

absl::Status JobManager::RecordIncremental(kaizen::v1::IncrementalResult inc,
                                           const kaizen::v1::Dataset& dataset,
                                           const std::vector<std::string>& previous_datasets,
                                           bool text, Job* job) {
  const kaizen::v1::StartFineTuneRequest& request = job->request();
  ASSIGN_OR_RETURN(const kaizen::v1::IncrementalOptions o,
                   training::ResolveIncremental(request.strategy(), request.incremental(),
                                                job->resolved_hyperparameters().seed()));
  inc.set_rehearsal(!o.disable_rehearsal());
  inc.set_distillation(!o.disable_distillation());
  inc.set_temperature(o.temperature());
  inc.set_distillation_weight(o.distillation_weight());
  inc.set_exemplars_per_class(o.exemplars_per_class());
  inc.set_max_exemplars(o.max_exemplars());
  // Text exemplars are chosen at random (CheckTextJob refuses herding).
  inc.set_selection(text ? kaizen::v1::EXEMPLAR_SELECTION_RANDOM : o.selection());
  const std::vector<std::string> old(inc.old_classes().begin(), inc.old_classes().end());
  std::vector<std::string> dataset_classes;
  for (const auto& c : dataset.classes()) dataset_classes.push_back(c.class_name());
  const std::vector<std::string> merged = training::MergeClassNames(old, dataset_classes);
  for (size_t i = old.size(); i < merged.size(); ++i) inc.add_new_classes(merged[i]);
  *job->mutable_incremental() = std::move(inc);
  // The datasets the exemplars come from, when found through the base's
  // job, are written into the request: deleting them waits for the job
  // (DatasetInUse), and a restarted job reads the same ones.
  auto* named = job->mutable_request()->mutable_incremental()->mutable_previous_datasets();
  if (named->empty()) named->Assign(previous_datasets.begin(), previous_datasets.end());
  return absl::OkStatus();
}

absl::Status JobManager::CheckTextDataset(absl::string_view field, const std::string& name,
                                          const std::vector<std::string>& classes,
                                          bool same_order) {
  absl::StatusOr<kaizen::v1::Dataset> info = datasets_->Get(name);
  if (!info.ok()) {
    return absl::Status(info.status().code(), absl::StrCat(field, ": ", info.status().message()));
  }
  if (!store::IsTextDataset(*info)) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, " \"", name, "\" holds images; a text job validates and tests on text datasets"));
  }
  std::vector<std::string> own;
  for (const auto& c : info->classes()) own.push_back(c.class_name());
  if (same_order ? own != classes
                 : !training::MapClasses(own, classes, static_cast<int64_t>(classes.size())).ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " \"", name, "\" has classes [", absl::StrJoin(own, ", "),
                     "]; the job's are [", absl::StrJoin(classes, ", "), "]",
                     same_order ? " (the same names in the same order are needed)" : ""));
  }
  return absl::OkStatus();
}

absl::StatusOr<Job> JobManager::CheckTextReferencesAndInsert(
    const kaizen::v1::StartFineTuneRequest& request, const kaizen::v1::Dataset& dataset) {
  absl::ReaderMutexLock references(&references_mu_);
  // Read again under the hold: the dataset may have been deleted (or
  // replaced by images) since Submit looked.
  absl::StatusOr<kaizen::v1::Dataset> now = datasets_->Get(request.dataset());
  if (!now.ok()) {
    return absl::Status(now.status().code(), absl::StrCat("dataset: ", now.status().message()));
  }
  if (!store::IsTextDataset(*now) ||
      now->create_time().seconds() != dataset.create_time().seconds() ||
      now->create_time().nanos() != dataset.create_time().nanos()) {
    return absl::AbortedError(absl::StrCat("dataset \"", request.dataset(),
                                           "\" changed while the job was submitted; "
                                           "submit it again"));
  }
  std::optional<kaizen::v1::Model> base;
  if (!BuildsNewTextEncoder(request)) {
    RETURN_IF_ERROR(CheckBaseModel(request));
    std::string name;
    int64_t version = 0;
    RETURN_IF_ERROR(common::ParseModelRef(request.base_model(), &name, &version));
    if (models::IsBuiltinModel(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("base_model ", name, " is an image architecture and dataset \"",
                       request.dataset(), "\" holds text; use ", models::kTransformerSmall,
                       " (SCRATCH or MASKED_LM) or a stored text model"));
    }
    ASSIGN_OR_RETURN(base, TrainedModel("base_model", request.base_model(),
                                        "; text jobs start from a stored text model, or from "
                                        "transformer-small with SCRATCH or MASKED_LM"));
  }
  RETURN_IF_ERROR(CheckTextJob(request, base ? &*base : nullptr));
  std::vector<std::string> classes;
  for (const auto& c : dataset.classes()) classes.push_back(c.class_name());
  const bool incremental = request.strategy() == kaizen::v1::STRATEGY_INCREMENTAL;
  kaizen::v1::IncrementalResult inc;
  std::vector<std::string> previous_datasets;
  // What a test set is matched against: the dataset's classes, or an
  // INCREMENTAL job's merged ones.
  std::vector<std::string> tested = classes;
  if (incremental) {
    ASSIGN_OR_RETURN(inc, CheckIncrementalBase(request, 1, &previous_datasets, /*text=*/true));
    tested = training::MergeClassNames(
        std::vector<std::string>(inc.old_classes().begin(), inc.old_classes().end()), classes);
  }
  const std::string& validation = request.hyperparameters().validation().dataset();
  const std::string& test = request.test_dataset();
  if (!validation.empty()) {
    if (validation == request.dataset()) {
      return absl::InvalidArgumentError(absl::StrCat("hyperparameters.validation.dataset \"",
                                                     validation, "\" is the training dataset"));
    }
    RETURN_IF_ERROR(
        CheckTextDataset("hyperparameters.validation.dataset", validation, classes, true));
  }
  if (!test.empty()) {
    if (request.strategy() == kaizen::v1::STRATEGY_MASKED_LM) {
      return absl::InvalidArgumentError(
          "test_dataset is set but STRATEGY_MASKED_LM trains no classifier to test; measure its "
          "encoder by fine-tuning it");
    }
    if (test == request.dataset() || test == validation) {
      return absl::InvalidArgumentError(absl::StrCat(
          "test_dataset \"", test, "\" is the job's ",
          test == request.dataset() ? "training" : "validation",
          " dataset; a test set must be data the job never trains on or chooses with"));
    }
    RETURN_IF_ERROR(CheckTextDataset("test_dataset", test, tested, false));
  }
  RETURN_IF_ERROR(CheckOutputSettings(request));
  kaizen::v1::DistillationResult distillation;
  if (request.strategy() == kaizen::v1::STRATEGY_DISTILL) {
    ASSIGN_OR_RETURN(distillation, CheckTeacher(request, dataset));
  }
  ASSIGN_OR_RETURN(const int world_size,
                   ResolveWorldSize(request, /*text=*/true, options_.data_parallel));
  Job job = NewQueuedJob(request, ResolveTextHyperparameters(request, base ? &*base : nullptr),
                         world_size);
  // The teacher version is fixed here, as for images, and an INCREMENTAL
  // job's base version.
  if (request.strategy() == kaizen::v1::STRATEGY_DISTILL) {
    *job.mutable_distillation() = std::move(distillation);
  }
  if (incremental) {
    RETURN_IF_ERROR(
        RecordIncremental(std::move(inc), dataset, previous_datasets, /*text=*/true, &job));
  }
  if (request.validate_only()) return Preview(std::move(job));
  return ReserveAndInsert(std::move(job));
}

absl::StatusOr<Job> JobManager::Preview(Job job) {
  const std::string& output = job.request().output_model();
  // Whether a stored model has the name already. Not by reserving it, which
  // would make a real start or upload of that name fail meanwhile; a name
  // held by an upload or job in progress is found by the real start.
  if (!output.empty() && !(job.has_incremental() && job.incremental().base_model() == output)) {
    absl::StatusOr<kaizen::v1::Model> existing = models_->Get(output, 0);
    if (existing.ok()) {
      return absl::AlreadyExistsError(
          absl::StrCat("output_model: model \"", output, "\" already exists"));
    }
    if (!absl::IsNotFound(existing.status())) return existing.status();
  }
  job.clear_id();
  job.clear_state();
  job.clear_create_time();
  return job;
}

absl::StatusOr<Job> JobManager::Get(const std::string& id) {
  ASSIGN_OR_RETURN(Job job, jobs_->Get(id));
  absl::MutexLock lock(&mu_);
  OverlayProgress(&job);
  return job;
}

void JobManager::OverlayProgress(Job* job) {
  if (job->state() != kaizen::v1::JOB_STATE_RUNNING) return;
  const auto it = running_.find(job->id());
  if (it == running_.end()) return;
  const kaizen::v1::StepProgress& p = it->second->progress;
  // Nothing yet in this run, or a stored row that is newer (an epoch end
  // written after the step).
  if (p.total_steps() == 0 || p.step() < job->step()) return;
  job->set_step(p.step());
  job->set_total_steps(p.total_steps());
  job->set_epoch(p.epoch());
}

absl::StatusOr<kaizen::v1::ListJobsResponse> JobManager::List(
    const kaizen::v1::ListJobsRequest& request) {
  RETURN_IF_ERROR(ValidateStates(request.states()));
  ASSIGN_OR_RETURN(const common::PageRequest page,
                   common::ResolvePageRequest(request.page_size(), request.page_token()));
  int64_t before = 0;
  if (!page.after_key.empty() && !absl::SimpleAtoi(page.after_key, &before)) {
    return absl::InvalidArgumentError("page_token is malformed");
  }
  std::vector<JobState> states;
  for (int s : request.states()) states.push_back(static_cast<JobState>(s));
  // One extra row tells whether another page exists.
  ASSIGN_OR_RETURN(auto rows, jobs_->List(states, before, page.limit + 1));
  using Row = std::pair<int64_t, Job>;
  {
    absl::MutexLock lock(&mu_);
    for (Row& row : rows) OverlayProgress(&row.second);
  }
  kaizen::v1::ListJobsResponse out;
  ASSIGN_OR_RETURN(*out.mutable_next_page_token(),
                   common::FillPage(
                       rows, page.limit,
                       [&](Row& row) {
                         const size_t bytes = row.second.ByteSizeLong();
                         *out.add_jobs() = std::move(row.second);
                         return bytes;
                       },
                       [](const Row& row) { return absl::StrCat(row.first); }));
  return out;
}

absl::StatusOr<Job> JobManager::Cancel(const std::string& id) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Job job, jobs_->Get(id));
  if (common::IsTerminal(job.state())) {
    return absl::FailedPreconditionError(absl::StrCat("job ", id, " already ended in state ",
                                                      kaizen::v1::JobState_Name(job.state())));
  }
  const auto it = running_.find(id);
  const bool runs_here = it != running_.end();
  // The trainer checks this before every step and writes a final checkpoint.
  if (runs_here) it->second->cancel = true;
  if (runs_here && !options_.shared_database) {
    PublishMessage(id, kCancelRequested);
    return job;
  }
  // With replicas, a run here may be stale (this replica stalled past its
  // lease, and another runs the job now or will take it over), so the
  // cancel goes where the stored job and its lease say.
  bool leased_here = false;
  const std::string canceller = absl::StrCat(options_.replica_id, kCancellingSuffix);
  if (job.state() == kaizen::v1::JOB_STATE_RUNNING && options_.shared_database) {
    // The request waits on the live lease, this replica's own included: it
    // outlives a stall of this replica past its lease, for whichever replica
    // takes the job over. A job whose replica died (no live lease) is leased
    // here first, so that no replica takes it over while it is cancelled;
    // one that did just before gets the request instead.
    for (int attempt = 0; attempt < 3 && !leased_here; ++attempt) {
      ASSIGN_OR_RETURN(std::optional<std::string> holder,
                       jobs_->RequestOfLeaseHolder(id, "cancel", LeaseNowMs()));
      if (holder && runs_here && *holder == options_.replica_id) {
        PublishMessage(id, kCancelRequested);  // the usual case: this replica's live run
        return job;
      }
      if (holder) {
        if (runs_here) MarkLost(id);  // another holds the lease: the run here is stale
        PublishMessage(
            id, absl::StrCat("cancellation requested through replica ", options_.replica_id, "; ",
                             LeaseOwnerName(*holder),
                             IsCanceller(*holder) ? " is ending the job already"
                                                  : " stops the job after its current step"));
        return job;
      }
      if (options_.before_taking_a_dead_replicas_job) {
        options_.before_taking_a_dead_replicas_job(id);
      }
      ASSIGN_OR_RETURN(leased_here,
                       jobs_->TakeLeaseOfDeadJob(id, canceller, LeaseNowMs(),
                                                 absl::ToInt64Milliseconds(options_.job_lease)));
    }
    if (!leased_here) {
      return absl::UnavailableError(
          absl::StrCat("job ", id, " changed hands while being cancelled; try again"));
    }
    if (runs_here) MarkLost(id);  // its lease ran out: nothing it does counts now
    if (options_.after_taking_a_dead_replicas_job) options_.after_taking_a_dead_replicas_job(id);
    // The row as the dead replica left it, now that nobody else writes it.
    ASSIGN_OR_RETURN(job, jobs_->Get(id));
  }
  if (job.state() == kaizen::v1::JOB_STATE_QUEUED || job.state() == kaizen::v1::JOB_STATE_PAUSED) {
    // Atomically, so that another replica's claim either came first (the
    // job runs there: ask again) or cannot follow.
    ASSIGN_OR_RETURN(const bool moved,
                     jobs_->TransitionState(id, job.state(), kaizen::v1::JOB_STATE_CANCELLED));
    if (!moved) {
      return absl::UnavailableError(
          absl::StrCat("job ", id, " was claimed by a replica while being cancelled; try again"));
    }
  }
  if (leased_here) {
    // Still held right before the end is written (nothing renews it
    // meanwhile: no run holds it).
    ASSIGN_OR_RETURN(auto leases,
                     jobs_->RenewLeases(canceller, {id}, LeaseNowMs(),
                                        absl::ToInt64Milliseconds(options_.job_lease)));
    if (!leases[id].held) {
      return absl::UnavailableError(
          absl::StrCat("job ", id, " changed hands while being cancelled; try again"));
    }
  }
  const absl::Status ended = PublishState(&job, kaizen::v1::JOB_STATE_CANCELLED);
  if (leased_here && !ended.ok()) {
    // Not ended: the lease runs out with the cancel on it, for whichever
    // replica takes the job over next, rather than freeing it to run on.
    (void)jobs_->RequestOfLeaseHolder(id, "cancel", LeaseNowMs());
  } else if (leased_here) {
    if (absl::StatusOr<std::string> released = jobs_->ReleaseLease(id, canceller); !released.ok()) {
      // It runs out on its own; the job has ended and nobody claims it.
      common::LogWarning("cannot release a cancelled job's lease",
                         {{"job", id}, {"error", released.status().ToString()}});
    }
  }
  RETURN_IF_ERROR(ended);
  OutputEnded(job);
  return job;
}

absl::StatusOr<Job> JobManager::Pause(const std::string& id) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Job job, jobs_->Get(id));
  if (common::IsTerminal(job.state())) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", id, " already ended in state ", kaizen::v1::JobState_Name(job.state()),
                     "; only a queued or running job can be paused"));
  }
  if (job.state() == kaizen::v1::JOB_STATE_PAUSED && !job.preempted_by().empty()) {
    // Between its preemption and its requeue (a moment, or until a lease
    // runs out if its replica died): the requeue would undo a pause now.
    return absl::UnavailableError(
        absl::StrCat("job ", id, " was preempted and is being requeued; try again"));
  }
  if (job.state() == kaizen::v1::JOB_STATE_PAUSED) return job;
  const auto it = running_.find(id);
  const bool runs_here = it != running_.end();
  if (runs_here && !options_.shared_database) {
    RequestPause(it->second);
    job.set_pause_reason(kPausedByUser);
    return job;
  }
  if (job.state() == kaizen::v1::JOB_STATE_RUNNING && options_.shared_database) {
    // A run here may be stale (see Cancel): the lease says who runs the job.
    // This replica's own live lease gets no request: its run pauses, and a
    // ResumeJob before the pause takes effect undoes it here alone.
    ASSIGN_OR_RETURN(std::optional<std::string> holder,
                     jobs_->RequestOfLeaseHolder(id, "pause", LeaseNowMs(),
                                                 runs_here ? options_.replica_id : std::string()));
    if (holder && runs_here && *holder == options_.replica_id) {
      RequestPause(it->second);
      job.set_pause_reason(kPausedByUser);
      return job;
    }
    if (holder && IsCanceller(*holder)) {
      return absl::UnavailableError(
          absl::StrCat("job ", id, " is being ended by ", LeaseOwnerName(*holder)));
    }
    if (holder) {
      if (runs_here) MarkLost(id);  // another holds the lease: the run here is stale
      PublishMessage(
          id, absl::StrCat("pause requested through replica ", options_.replica_id, "; replica ",
                           *holder, " pauses the job after its current step"));
      job.set_pause_reason(kPausedByUser);
      return job;
    }
  }
  if (job.state() != kaizen::v1::JOB_STATE_QUEUED) {
    // Claims and ends of jobs happen under mu_, so with one server a stored
    // RUNNING job is always in running_ once Start() has requeued what a
    // crash left; with replicas, one whose lease ran out waits for a
    // replica to take it over.
    return absl::UnavailableError(absl::StrCat("job ", id, " is ",
                                               kaizen::v1::JobState_Name(job.state()),
                                               " but no worker holds it yet; try again"));
  }
  ASSIGN_OR_RETURN(const bool moved, jobs_->TransitionState(id, kaizen::v1::JOB_STATE_QUEUED,
                                                            kaizen::v1::JOB_STATE_PAUSED));
  if (!moved) {
    return absl::UnavailableError(
        absl::StrCat("job ", id, " was claimed by a replica while being paused; try again"));
  }
  job.set_pause_reason(kPausedByUser);
  job.clear_preempted_by();
  job.set_pause_count(job.pause_count() + 1);
  PublishMessage(id, absl::StrCat(kPausedByUser, " while queued"));
  RETURN_IF_ERROR(PublishState(&job, kaizen::v1::JOB_STATE_PAUSED));
  return job;
}

void JobManager::RequestPause(Running* running) {
  const bool requested = running->pause.load() && running->preempted_by.empty();
  // A user's pause outlasts a preemption: the job stays PAUSED.
  running->preempted_by.clear();
  // The trainer checks this before every step and writes a checkpoint.
  running->pause = true;
  if (!requested) {
    PublishMessage(running->job_id,
                   "pause requested; the job pauses after the current step, once its "
                   "checkpoint is written");
  }
}

absl::StatusOr<Job> JobManager::Resume(const std::string& id) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Job job, jobs_->Get(id));
  if (common::IsTerminal(job.state())) {
    return absl::FailedPreconditionError(absl::StrCat("job ", id, " already ended in state ",
                                                      kaizen::v1::JobState_Name(job.state()),
                                                      "; only a paused job can be resumed"));
  }
  if (job.state() != kaizen::v1::JOB_STATE_PAUSED) {
    auto it = running_.find(id);
    if (it != running_.end() && it->second->pause.load() && it->second->preempted_by.empty()) {
      // Not taken effect yet: the job keeps running (or, if its trainer has
      // already stopped, goes back to the queue; see RunJob).
      it->second->pause = false;
      PublishMessage(id, "resumed before the requested pause took effect");
    }
    return job;
  }
  PublishMessage(
      id, absl::StrCat("resumed by a user; back in the queue to continue from ", ResumePoint(job)));
  // Conditional: a cancel through another replica may have come first.
  ASSIGN_OR_RETURN(const bool moved, PublishStateIf(&job, kaizen::v1::JOB_STATE_QUEUED,
                                                    kaizen::v1::JOB_STATE_PAUSED));
  if (!moved) {
    return absl::UnavailableError(
        absl::StrCat("job ", id, " changed state while being resumed; try again"));
  }
  wake_.Signal();
  PreemptForQueue();
  return job;
}

absl::StatusOr<kaizen::v1::ExportJobResponse> JobManager::Export(
    const kaizen::v1::ExportJobRequest& request) {
  if (options_.export_dir.empty()) {
    return absl::FailedPreconditionError("this server has no folder for exports");
  }
  // The id names folders: the stored job's, not the request's.
  ASSIGN_OR_RETURN(const Job stored, jobs_->Get(request.id()));
  // The request's own fields are checked first: a wrong one is named even
  // when the exports are at their bound.
  RETURN_IF_ERROR(ResolvePyTorchJobShape(request, stored.world_size()).status());
  // A folder of its own, staged in the scratch folder and then renamed into
  // place: pods still running from an earlier export keep theirs. Its place
  // within --max_exports is held until it is there.
  std::string folder;
  absl::StatusOr<ExportReservation> place = absl::AlreadyExistsError("");
  // A name drawn twice (one in 16 million) draws another.
  for (int draw = 0; draw < 3 && absl::IsAlreadyExists(place.status()); ++draw) {
    folder = absl::StrCat(stored.id(), "-", common::RandomHex(3));
    place = ExportReservation::Reserve(options_.export_dir, folder, options_.max_exports,
                                       kExportsLockWait);
  }
  RETURN_IF_ERROR(place.status());
  const std::string staging = absl::StrCat(options_.data_parallel.scratch_dir, "/export-", folder);
  std::error_code ec;
  absl::StatusOr<kaizen::v1::ExportJobResponse> exported = ExportInto(request, folder, staging);
  if (!exported.ok()) std::filesystem::remove_all(staging, ec);
  return exported;
}

absl::StatusOr<kaizen::v1::ListExportsResponse> JobManager::ListExports(
    const kaizen::v1::ListExportsRequest& request) {
  kaizen::v1::ListExportsResponse response;
  if (options_.export_dir.empty()) return response;
  ASSIGN_OR_RETURN(
      const std::vector<ExportFolder> folders,
      ListExportFolders(options_.export_dir, request.job_id(), options_.max_export_list_entries));
  for (const ExportFolder& f : folders) {
    kaizen::v1::Export* e = response.add_exports();
    e->set_directory(absl::StrCat("exports/", f.folder));
    e->set_job_id(f.job_id);
    *e->mutable_create_time() = google::protobuf::util::TimeUtil::MillisecondsToTimestamp(
        absl::ToUnixMillis(f.create_time));
    e->set_size_bytes(f.size_bytes);
    e->set_size_incomplete(f.size_incomplete);
  }
  return response;
}

absl::Status JobManager::DeleteExport(const kaizen::v1::DeleteExportRequest& request) {
  if (options_.export_dir.empty()) {
    return absl::FailedPreconditionError("this server has no folder for exports");
  }
  RETURN_IF_ERROR(DeleteExportFolder(options_.export_dir, options_.data_parallel.scratch_dir,
                                     request.directory()));
  common::LogInfo("export deleted", {{"directory", request.directory()}});
  return absl::OkStatus();
}

absl::Status JobManager::LoadCheckpoint(const Job& job, training::TrainerOptions* opts) {
  const std::string& out = job.request().output_model();
  ASSIGN_OR_RETURN(opts->base_metadata, models_->Get(out, job.latest_version()));
  ASSIGN_OR_RETURN(opts->base, models_->LoadModule(out, job.latest_version()));
  ASSIGN_OR_RETURN(opts->resume_state, models_->ReadResumeState(out, job.latest_version()));
  return absl::OkStatus();
}

absl::StatusOr<kaizen::v1::ExportJobResponse> JobManager::ExportInto(
    const kaizen::v1::ExportJobRequest& request, const std::string& folder,
    const std::string& staging) {
  training::TrainerOptions opts;
  TrainingFolderLayout layout;
  Job job;
  PyTorchJobShape shape;
  std::string starts_from;
  {
    // What the export reads is read, and its record files linked, while
    // no dataset or model can be deleted here; the slow writes come after.
    absl::ReaderMutexLock references(&references_mu_);
    ASSIGN_OR_RETURN(job, jobs_->Get(request.id()));
    ASSIGN_OR_RETURN(shape, ResolvePyTorchJobShape(request, job.world_size()));
    const kaizen::v1::StartFineTuneRequest& req = job.request();
    const auto refused = [&](absl::string_view why) {
      return absl::FailedPreconditionError(
          absl::StrCat("job ", job.id(), " cannot be exported to a PyTorchJob: ", why));
    };
    absl::StatusOr<kaizen::v1::Dataset> dataset = datasets_->Get(req.dataset());
    if (absl::IsNotFound(dataset.status())) {
      return refused(absl::StrCat("its dataset \"", req.dataset(), "\" no longer exists"));
    }
    RETURN_IF_ERROR(dataset.status());
    // A job whose tuning is done trains with the hyperparameters it chose.
    kaizen::v1::StartFineTuneRequest as_run = req;
    if (job.tuning().done()) as_run.clear_tuning();
    if (const std::string why = DataParallelRefusal(as_run, store::IsTextDataset(*dataset));
        !why.empty()) {
      return refused(as_run.tuning().max_trials() > 0 && DataParallelRefusal(req, false) == why
                         ? absl::StrCat(why, " (export it once its trials are done)")
                         : why);
    }
    if (store::IsTextDataset(*dataset)) {
      return refused(
          "a text job's rank 0 is the server (it writes the versions with their tokenizer), so "
          "pods cannot train it alone; run it with world_size in the server");
    }
    if (req.strategy() == kaizen::v1::STRATEGY_INCREMENTAL) {
      return refused(
          "an INCREMENTAL job's rank 0 is the server (it chooses the exemplars to replay from the "
          "previous version's memory and stores the next memory with each version), so pods "
          "cannot train it alone; run it with world_size in the server");
    }
    training::TrainingData data;
    ASSIGN_OR_RETURN(data.train_file, datasets_->OpenRecordFile(req.dataset()));
    const std::string& validation_name = req.hyperparameters().validation().dataset();
    if (data.train_file != nullptr && !validation_name.empty()) {
      absl::StatusOr<std::shared_ptr<const datasets::RecordFile>> validation =
          datasets_->OpenRecordFile(validation_name);
      if (absl::IsNotFound(validation.status())) {
        return refused(
            absl::StrCat("its validation dataset \"", validation_name, "\" no longer exists"));
      }
      RETURN_IF_ERROR(validation.status());
      data.validation_file = *std::move(validation);
      if (data.validation_file == nullptr) data.train_file = nullptr;
    }
    if (data.train_file == nullptr) {
      return refused(
          "its datasets are stored in the old .kds format, not in record files (upload them "
          "again)");
    }
    // The pods train on CPUs (Gloo); a job not yet run has no device.
    job.set_device("cpu");
    opts = TrainerOptionsOf(job);
    // The teacher the job resolved at submission goes into the folder, if
    // it still exists and still fits the dataset's records.
    if (req.strategy() == kaizen::v1::STRATEGY_DISTILL) {
      absl::Status teacher = LoadTeacher(job, &opts, /*announce=*/false);
      if (teacher.ok()) {
        teacher = CheckTeacherClasses(opts.distillation->teacher_metadata,
                                      data.train_file->class_names());
      }
      if (!teacher.ok()) return refused(teacher.message());
    }
    if (request.from_checkpoint()) {
      if (job.latest_version() == 0) {
        return absl::FailedPreconditionError(
            absl::StrCat("from_checkpoint: job ", job.id(), " has written no checkpoint yet"));
      }
      const std::string& out = req.output_model();
      starts_from = absl::StrCat(out, ":", job.latest_version());
      absl::Status loaded = LoadCheckpoint(job, &opts);
      if (absl::IsNotFound(loaded)) {
        // Replaced by a newer checkpoint of the job's run (on another
        // replica) since the row was read, or deleted with its model.
        ASSIGN_OR_RETURN(const Job now, jobs_->Get(job.id()));
        if (now.latest_version() != job.latest_version()) {
          return absl::AbortedError(absl::StrCat("from_checkpoint: checkpoint ", starts_from,
                                                 " was replaced meanwhile; export again"));
        }
        return absl::FailedPreconditionError(absl::StrCat(
            "from_checkpoint: checkpoint ", starts_from, " no longer exists: ", loaded.message()));
      }
      RETURN_IF_ERROR(loaded);
    } else {
      absl::Status loaded = LoadBaseModel(job, *dataset, &opts);
      if (absl::IsNotFound(loaded)) {
        return refused(absl::StrCat("its base model ", req.base_model(), " no longer exists"));
      }
      RETURN_IF_ERROR(loaded);
      // Unpinned, the base is its newest version now, as for a run that
      // starts now: say which.
      starts_from =
          models::IsBuiltinModel(req.base_model())
              ? req.base_model()
              : absl::StrCat(opts.base_metadata.name(), ":", opts.base_metadata.version());
    }
    std::error_code ec;
    std::filesystem::create_directories(staging + "/out", ec);
    if (ec) return absl::InternalError(absl::StrCat("cannot create ", staging, ": ", ec.message()));
    ASSIGN_OR_RETURN(layout.train_records,
                     LinkIntoFolder(staging, data.train_file->path(), "train"));
    if (data.validation_file != nullptr) {
      ASSIGN_OR_RETURN(layout.validation_records,
                       LinkIntoFolder(staging, data.validation_file->path(), "validation"));
    }
  }
  if (shape.memory_mb == 0) {
    const auto bytes_of = [](const torch::jit::Module& module) {
      int64_t bytes = 0;
      for (const at::Tensor& p : module.parameters()) {
        bytes += p.numel() * static_cast<int64_t>(p.element_size());
      }
      return bytes;
    };
    // Only FINE_TUNE keeps a frozen-prefix cache; a DISTILL teacher is held
    // beside the student, without gradients.
    shape.memory_mb = ExportMemoryMb(
        opts.max_image_memory_bytes,
        opts.strategy == kaizen::v1::STRATEGY_FINE_TUNE ? opts.max_prefix_cache_bytes : 0,
        bytes_of(opts.base), opts.distillation ? bytes_of(opts.distillation->teacher) : 0);
  }
  layout.timeout_seconds = static_cast<int>(absl::ToInt64Seconds(options_.data_parallel.timeout));
  layout.threads = shape.threads;
  layout.output_dir = "out";
  RETURN_IF_ERROR(WriteTrainingFolder(staging, opts, layout));
  std::error_code ec;
  std::filesystem::create_directories(options_.export_dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot create ", options_.export_dir, ": ", ec.message()));
  }
  RETURN_IF_ERROR(common::DurableRename(staging, absl::StrCat(options_.export_dir, "/", folder)));

  const kaizen::v1::StartFineTuneRequest& req = job.request();
  PyTorchJobSubject subject;
  subject.job_id = job.id();
  subject.folder = folder;
  subject.strategy = kaizen::v1::Strategy_Name(req.strategy());
  subject.starts_from = starts_from;
  subject.max_restarts = std::max(0, options_.max_job_attempts - 1);
  kaizen::v1::ExportJobResponse response;
  response.set_directory("exports/" + folder);
  response.set_manifest(PyTorchJobManifest(shape, subject));
  auto* plan = response.mutable_plan();
  plan->set_strategy(req.strategy());
  *plan->mutable_hyperparameters() = opts.hyperparameters;
  plan->set_world_size(shape.world_size);
  plan->set_starts_from(starts_from);
  plan->set_output_folder(absl::StrCat("exports/", folder, "/out"));
  common::LogInfo("job exported", {{"job", job.id()}, {"directory", response.directory()}});
  return response;
}

void JobManager::PreemptForQueue() {
  // A shutdown stops every job anyway; they resume at the next start.
  if (!options_.preempt || shutting_down_) return;
  // Running jobs that keep their worker; the others (cancelled, pausing) are
  // about to free theirs.
  std::vector<Running*> victims;
  for (const auto& [id, running] : running_) {
    if (!running->cancel.load() && !running->pause.load()) victims.push_back(running);
  }
  int free_workers = options_.workers - static_cast<int>(victims.size());
  // The lowest priority goes first; among equals the youngest job.
  std::sort(victims.begin(), victims.end(), [](const Running* a, const Running* b) {
    if (a->priority != b->priority) return a->priority < b->priority;
    if (a->create_millis != b->create_millis) return a->create_millis > b->create_millis;
    return a->job_id > b->job_id;
  });
  absl::StatusOr<std::vector<Job>> queued = jobs_->InStates({kaizen::v1::JOB_STATE_QUEUED});
  if (!queued.ok()) {
    common::LogError("cannot read the queue to preempt", {{"error", queued.status().ToString()}});
    return;
  }
  // Queue order: priority, then age (InStates lists by age).
  std::stable_sort(queued->begin(), queued->end(), [](const Job& a, const Job& b) {
    return a.request().priority() > b.request().priority();
  });
  size_t next = 0;
  for (const Job& job : *queued) {
    if (free_workers > 0) {
      --free_workers;  // a free worker takes it
      continue;
    }
    if (next == victims.size() || job.request().priority() <= victims[next]->priority) break;
    Running* victim = victims[next++];
    victim->preempted_by = job.id();
    victim->pause = true;
    PublishMessage(victim->job_id,
                   absl::StrCat("preempted by job ", job.id(), " (priority ",
                                job.request().priority(), " over ", victim->priority,
                                "); pausing after the current step, then back in the queue"));
    common::LogInfo("job preempted", {{"job", victim->job_id}, {"by", job.id()}});
  }
}

absl::StatusOr<std::vector<Job>> JobManager::ActiveJobs() {
  return jobs_->InStates({kaizen::v1::JOB_STATE_UNSPECIFIED,  // held, being submitted
                          kaizen::v1::JOB_STATE_QUEUED, kaizen::v1::JOB_STATE_RUNNING,
                          kaizen::v1::JOB_STATE_PAUSED});
}

absl::StatusOr<bool> JobManager::DatasetInUse(const std::string& name) {
  ASSIGN_OR_RETURN(std::vector<Job> active, ActiveJobs());
  for (const Job& j : active) {
    if (j.request().dataset() == name || j.request().test_dataset() == name ||
        j.request().hyperparameters().validation().dataset() == name) {
      return true;
    }
    for (const std::string& previous : j.request().incremental().previous_datasets()) {
      if (previous == name) return true;
    }
  }
  return false;
}

absl::StatusOr<bool> JobManager::ModelInUse(const std::string& name) {
  ASSIGN_OR_RETURN(std::vector<Job> active, ActiveJobs());
  for (const Job& j : active) {
    std::string base;
    int64_t v = 0;
    if (common::ParseModelRef(j.request().base_model(), &base, &v).ok() && base == name)
      return true;
    if (j.request().output_model() == name) return true;
    // A DISTILL job reloads its teacher whenever it (re)starts.
    if (j.has_distillation() && j.distillation().teacher_model() == name) return true;
  }
  return false;
}

absl::StatusOr<std::optional<std::string>> JobManager::JobWritingModel(const std::string& name) {
  return jobs_->ActiveWriterOf(name);
}

absl::StatusOr<std::vector<int64_t>> JobManager::PinnedVersionsInUse(const std::string& name) {
  ASSIGN_OR_RETURN(std::vector<Job> active, ActiveJobs());
  std::vector<int64_t> versions;
  for (const Job& j : active) {
    if (j.has_distillation() && j.distillation().teacher_model() == name) {
      versions.push_back(j.distillation().teacher_version());
    }
    // An INCREMENTAL job reloads its base version whenever it (re)starts, and
    // may write its versions to the very model the base belongs to.
    if (j.has_incremental() && j.incremental().base_model() == name) {
      versions.push_back(j.incremental().base_version());
    }
    // Any job loads the version its base_model names when it (re)starts.
    std::string base;
    int64_t version = 0;
    if (common::ParseModelRef(j.request().base_model(), &base, &version).ok() && base == name &&
        version > 0) {
      versions.push_back(version);
    }
  }
  return versions;
}

absl::StatusOr<std::optional<Job>> JobManager::ClaimOrphan() {
  std::string previous;
  std::vector<std::string> mine;
  for (const auto& [id, running] : running_) mine.push_back(id);
  ASSIGN_OR_RETURN(
      std::optional<Job> orphan,
      jobs_->ClaimExpired(options_.replica_id, LeaseNowMs(),
                          absl::ToInt64Milliseconds(options_.job_lease), mine, &previous));
  if (!orphan) return orphan;
  if (orphan->state() == kaizen::v1::JOB_STATE_PAUSED) {
    // Its replica died between recording the pause and releasing the lease:
    // a preempted job goes back to the queue (unless it was cancelled
    // meanwhile), one a user paused stays paused; a request left on the
    // lease applies either way.
    if (!orphan->preempted_by().empty()) {
      const std::string reason = orphan->pause_reason();
      ASSIGN_OR_RETURN(const bool moved, PublishStateIf(&*orphan, kaizen::v1::JOB_STATE_QUEUED,
                                                        kaizen::v1::JOB_STATE_PAUSED));
      if (moved) {
        PublishMessage(
            orphan->id(),
            absl::StrCat("replica ", previous.empty() ? "(unknown)" : previous,
                         " stopped between pausing this job (", reason,
                         ") and requeueing it; replica ", options_.replica_id, " requeued it"));
      } else {
        ASSIGN_OR_RETURN(*orphan, jobs_->Get(orphan->id()));
      }
    }
    ASSIGN_OR_RETURN(const std::string late,
                     jobs_->ReleaseLease(orphan->id(), options_.replica_id));
    ApplyLateRequest(&*orphan, late);
    if (common::IsTerminal(orphan->state())) OutputEnded(*orphan);
    return std::optional<Job>();
  }
  if (orphan->attempts() >= options_.max_job_attempts) {
    RETURN_IF_ERROR(FailAfterAttempts(
        &*orphan, absl::StrCat("replicas (lastly ", ReplicaOf(previous), ") stopped")));
    jobs_->ReleaseLease(orphan->id(), options_.replica_id).status().IgnoreError();
    return std::optional<Job>();
  }
  PublishMessage(orphan->id(),
                 absl::StrCat(previous.empty() ? "replica (unknown)" : LeaseOwnerName(previous),
                              " stopped renewing its lease on this job; replica ",
                              options_.replica_id, " takes it over from ", ResumePoint(*orphan)));
  return orphan;
}

absl::StatusOr<std::optional<Job>> JobManager::Claim(const std::string& device) {
  const int64_t now = LeaseNowMs();
  std::optional<Job> next;
  if (options_.shared_database) {
    ASSIGN_OR_RETURN(next, ClaimOrphan());
  }
  if (!next) {
    ASSIGN_OR_RETURN(next, jobs_->ClaimNext(options_.replica_id, now,
                                            absl::ToInt64Milliseconds(options_.job_lease)));
  }
  if (!next) return next;
  if (options_.shared_database) {
    PublishMessage(next->id(), absl::StrCat("replica ", options_.replica_id, " runs this job"));
  }
  next->set_attempts(next->attempts() + 1);
  if (!next->has_start_time()) *next->mutable_start_time() = Now();
  next->set_device(device);
  RETURN_IF_ERROR(PublishState(&*next, kaizen::v1::JOB_STATE_RUNNING));
  return next;
}

void JobManager::WorkerLoop(int worker_index) {
  std::string device = "cpu";
  if (torch::cuda::is_available()) {
    device = absl::StrCat("cuda:", worker_index % static_cast<int>(torch::cuda::device_count()));
  }
  at::set_num_threads(std::max(1, options_.threads_per_worker));
  while (true) {
    Running running;
    std::optional<Job> job;
    {
      absl::MutexLock lock(&mu_);
      while (!stopping_) {
        // No later than the claim's own clock: the lease it takes lasts at
        // least job_lease from here.
        const int64_t claim_ms = LeaseNowMs();
        absl::StatusOr<std::optional<Job>> claimed = Claim(device);
        if (!claimed.ok()) {
          common::LogError("cannot claim a job", {{"error", claimed.status().ToString()}});
        } else if (*claimed) {
          job = std::move(**claimed);
          running.job_id = job->id();
          running.priority = job->request().priority();
          running.create_millis =
              google::protobuf::util::TimeUtil::TimestampToMilliseconds(job->create_time());
          if (options_.shared_database) {
            // The first bound (a lone server's runs have none).
            running.leased_until_ms = claim_ms + absl::ToInt64Milliseconds(options_.job_lease);
          }
          running_[job->id()] = &running;
          break;
        }
        wake_.WaitWithTimeout(&mu_, absl::Seconds(2));
      }
      if (stopping_ && !job) return;
    }
    RunJob(std::move(*job), &running);
  }
}

JobManager::RunEnd JobManager::DecideEnd(const absl::Status& st, bool stopped,
                                         const Running& running, Job* job) {
  if (!st.ok()) {
    job->set_error(std::string(st.message()));
    JobEvent e;
    e.set_error(job->error());
    events_->Publish(job->id(), std::move(e)).IgnoreError();
    return {kaizen::v1::JOB_STATE_FAILED, false};
  }
  if (stopped && !running.cancel) return StoppedEnd(running, job);
  if (running.cancel) return {kaizen::v1::JOB_STATE_CANCELLED, false};
  return {kaizen::v1::JOB_STATE_SUCCEEDED, false};
}

JobManager::RunEnd JobManager::StoppedEnd(const Running& running, Job* job) {
  // A pause or a graceful shutdown is not the job's fault: it does not use
  // up one of its --max_job_attempts.
  job->set_attempts(std::max(0, job->attempts() - 1));
  const std::string checkpoint = ResumePoint(*job);
  if (!running.pause) {
    PublishMessage(job->id(), shutting_down_
                                  ? absl::StrCat("the server is shutting down; the job will "
                                                 "resume from ",
                                                 checkpoint)
                                  : absl::StrCat("the pause was withdrawn after the job had "
                                                 "stopped; requeued to resume from ",
                                                 checkpoint));
    return {kaizen::v1::JOB_STATE_QUEUED, false};
  }
  const bool requeue = !running.preempted_by.empty();
  job->set_preempted_by(running.preempted_by);
  job->set_pause_reason(requeue ? absl::StrCat("preempted by job ", running.preempted_by)
                                : std::string(kPausedByUser));
  job->set_pause_count(job->pause_count() + 1);
  // Text jobs report epochs, not steps.
  const std::string where =
      job->total_steps() > 0 ? absl::StrCat(" after step ", job->step(), "/", job->total_steps())
      : job->request().tuning().max_trials() > 0
          ? std::string(" while tuning")
          : absl::StrCat(" after epoch ", job->epoch(), "/", job->total_epochs());
  PublishMessage(job->id(),
                 absl::StrCat(job->pause_reason(), where, "; it continues from ", checkpoint,
                              requeue ? " once a worker is free" : " after ResumeJob"));
  return {kaizen::v1::JOB_STATE_PAUSED, requeue};
}

void JobManager::NoteReservedOutput(const Job& job) {
  absl::MutexLock lock(&outputs_mu_);
  reserved_outputs_[job.id()] = job.request().output_model();
}

void JobManager::OutputEnded(const Job& job, bool ran) {
  models_->ReleaseName(job.request().output_model());
  {
    absl::MutexLock lock(&outputs_mu_);
    reserved_outputs_.erase(job.id());
  }
  if (ran && options_.output_done) options_.output_done(job.request().output_model());
}

void JobManager::ReleaseOutputsOfJobsEndedElsewhere() {
  std::vector<std::string> ids;
  {
    absl::MutexLock lock(&outputs_mu_);
    for (const auto& [id, name] : reserved_outputs_) ids.push_back(id);
  }
  for (const std::string& id : ids) {
    {
      absl::MutexLock lock(&mu_);
      if (running_.contains(id)) continue;
    }
    absl::StatusOr<Job> job = jobs_->Get(id);
    if (!job.ok() || !common::IsTerminal(job->state())) continue;
    OutputEnded(*job);
  }
}

void JobManager::RunJob(Job job, Running* running) {
  const absl::Time start = absl::Now();
  if (options_.metrics) options_.metrics->JobRunStarted(job);
  bool stopped = false;
  std::string left_request;
  absl::Status st;
  // Only while this replica holds the job: one that stalled since claiming
  // it must not touch what the job's new holder writes.
  if (FenceRun(job.id()).ok() && !RunLost(job.id())) WithdrawUnrecordedVersions(job);
  try {
    st = Execute(&job, running, &stopped);
  } catch (const std::exception& e) {
    st = absl::InternalError(absl::StrCat("unexpected error: ", e.what()));
  }
  // The end state is decided and stored under mu_, so that Cancel, Pause and
  // Resume see either the running job or its stored end, never a mix.
  absl::MutexLock lock(&mu_);
  if (options_.shared_database && !running->lost) {
    // Fenced: the end is recorded only while this replica still holds the
    // job's lease and nobody ended the job meanwhile (a cancel through a
    // replica that found the lease expired).
    absl::StatusOr<std::map<std::string, store::JobStore::LeaseState>> lease =
        jobs_->RenewLeases(options_.replica_id, {job.id()}, LeaseNowMs(),
                           absl::ToInt64Milliseconds(options_.job_lease));
    absl::StatusOr<Job> stored = jobs_->Get(job.id());
    if (!lease.ok()) {
      // Unconfirmed, so nothing is recorded: the lease runs out and a
      // replica (this one too) takes the job over from its last checkpoint.
      common::LogError(
          "cannot confirm the job's lease at the end of its run; it will be taken "
          "over from its last checkpoint",
          {{"job", job.id()}, {"error", lease.status().ToString()}});
      running->lost = true;
    } else {
      const store::JobStore::LeaseState& state = (*lease)[job.id()];
      if (!state.held) running->lost = true;
      // A request left since the last renewal reaches a run that stopped as
      // if it had come before; one that reaches a run that finished or
      // failed comes too late (ApplyLateRequest says so).
      if (state.held && stopped) ApplyLeaseRequest(job.id(), running, state.request);
      if (state.held && !stopped) left_request = state.request;
    }
    if (stored.ok() && common::IsTerminal(stored->state())) running->lost = true;
  }
  if (running->lost) {
    // The replica that took the job over records its progress from now on.
    common::LogWarning("job stopped: another replica holds it now", {{"job", job.id()}});
    running_.erase(job.id());
    wake_.SignalAll();
    return;
  }
  const RunEnd ended = DecideEnd(st, stopped, *running, &job);
  const JobState end = ended.state;
  const bool requeue = ended.requeue;
  if (absl::Status ps = PublishState(&job, end); !ps.ok()) {
    common::LogError("cannot record job state", {{"job", job.id()}, {"error", ps.ToString()}});
  }
  if (options_.metrics) options_.metrics->JobRunEnded(job, st);
  if (options_.before_lease_release) options_.before_lease_release(job.id());
  // A preempted job is paused, not lost: it goes back to its place in the
  // queue at once, unless another replica cancelled the PAUSED job meanwhile.
  bool keep_lease = false;
  if (requeue) {
    absl::StatusOr<bool> moved =
        PublishStateIf(&job, kaizen::v1::JOB_STATE_QUEUED, kaizen::v1::JOB_STATE_PAUSED);
    if (!moved.ok()) {
      // The lease stays and runs out: another replica (or this one) finds
      // the job PAUSED under an expired lease and requeues it then.
      common::LogError("cannot requeue a preempted job",
                       {{"job", job.id()}, {"error", moved.status().ToString()}});
      keep_lease = true;
    } else if (!*moved) {
      if (absl::StatusOr<Job> now = jobs_->Get(job.id()); now.ok()) job = *std::move(now);
      PublishMessage(job.id(), absl::StrCat("not requeued: the job became ",
                                            kaizen::v1::JobState_Name(job.state()),
                                            " through another replica"));
    }
  }
  // Only now that its row no longer says RUNNING: a RUNNING job without a
  // lease is another replica's to take over. A request another replica left
  // on the lease after the end was decided applies to the job as it is now.
  if (!keep_lease) {
    absl::StatusOr<std::string> late = jobs_->ReleaseLease(job.id(), options_.replica_id);
    if (late.ok() && *late == "cancel") left_request = *late;
    if (late.ok() && left_request.empty()) left_request = *late;
    // A cancel through this replica is left on its own lease too: one the
    // run had seen is no late request.
    if (left_request == "cancel" && running->cancel) left_request.clear();
    if (options_.shared_database) ApplyLateRequest(&job, left_request);
  }
  common::Log(st.ok() ? common::LogLevel::kInfo : common::LogLevel::kWarning, "job ended",
              {{"job", job.id()},
               {"state", kaizen::v1::JobState_Name(end)},
               {"seconds", absl::ToDoubleSeconds(absl::Now() - start)},
               {"error", job.error()}});
  if (common::IsTerminal(job.state())) OutputEnded(job);
  running_.erase(job.id());
  wake_.SignalAll();
  if (requeue || end == kaizen::v1::JOB_STATE_QUEUED) PreemptForQueue();
}

absl::Status JobManager::LoadCheckpointToResume(Job* job, training::TrainerOptions* opts) {
  // The last checkpoint is both the model and the optimiser state.
  RETURN_IF_ERROR(LoadCheckpoint(*job, opts));
  // Epochs after the checkpoint will run again: forget what they reported.
  const auto epoch_it = opts->base_metadata.metrics().find("epoch");
  const int checkpoint_epoch =
      epoch_it == opts->base_metadata.metrics().end() ? 0 : static_cast<int>(epoch_it->second);
  auto* history = job->mutable_history();
  while (!history->empty() && history->rbegin()->epoch() > checkpoint_epoch) {
    history->RemoveLast();
  }
  job->set_epoch(checkpoint_epoch);
  // A checkpoint written by a pause, cancel or shutdown stands between two
  // steps of an epoch, and the trainer continues at that step.
  absl::StatusOr<training::ResumeState> state = training::DecodeResumeState(opts->resume_state);
  const int64_t step_in_epoch = state.ok() ? state->position.step : 0;
  PublishRunMessage(
      job->id(), absl::StrCat("resuming from checkpoint version ", job->latest_version(),
                              " (epoch ", job->epoch(),
                              step_in_epoch > 0 ? absl::StrCat(" and ", step_in_epoch,
                                                               " steps of epoch ", job->epoch() + 1)
                                                : std::string(),
                              ")"));
  return absl::OkStatus();
}

absl::Status JobManager::LoadBaseModel(const Job& job, const kaizen::v1::Dataset& dataset_info,
                                       training::TrainerOptions* opts) {
  std::string base;
  int64_t version = 0;
  RETURN_IF_ERROR(common::ParseModelRef(job.request().base_model(), &base, &version));
  if (!models::IsBuiltinModel(base)) {
    // The version first: an unpinned base uploaded to meanwhile must not
    // pair one version's weights with the next one's metadata.
    ASSIGN_OR_RETURN(opts->base_metadata, models_->Get(base, version));
    ASSIGN_OR_RETURN(opts->base, models_->LoadModule(base, opts->base_metadata.version()));
    return absl::OkStatus();
  }
  models::BuiltinOptions bo;
  bo.in_channels = dataset_info.input_shape(0);
  bo.input_size = std::max(dataset_info.input_shape(1), dataset_info.input_shape(2));
  bo.num_classes = dataset_info.classes_size();
  bo.seed = opts->hyperparameters.seed();
  ASSIGN_OR_RETURN(opts->base, models::CreateBuiltinModel(base, bo));
  ASSIGN_OR_RETURN(opts->base_metadata, models::DescribeBuiltinModel(base, bo));
  opts->base_metadata.set_name(base);
  return absl::OkStatus();
}

absl::Status JobManager::LoadPinned(absl::string_view role, const std::string& name,
                                    int64_t version, torch::jit::Module* module,
                                    kaizen::v1::Model* metadata) {
  absl::StatusOr<torch::jit::Module> loaded = models_->LoadModule(name, version);
  absl::StatusOr<kaizen::v1::Model> got = models_->Get(name, version);
  const absl::Status st = loaded.ok() ? got.status() : loaded.status();
  if (!st.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the ", role, " ", name, ":", version, " cannot be loaded: ", st.message()));
  }
  *module = std::move(*loaded);
  *metadata = std::move(*got);
  return absl::OkStatus();
}

absl::Status JobManager::LoadTeacher(const Job& job, training::TrainerOptions* opts,
                                     bool announce) {
  const kaizen::v1::DistillationResult& d = job.distillation();
  if (d.teacher_model().empty() || d.teacher_version() <= 0) {
    return absl::FailedPreconditionError(
        "this DISTILL job has no resolved teacher version (it was stored before distillation "
        "was available); submit it again");
  }
  const std::string teacher = absl::StrCat(d.teacher_model(), ":", d.teacher_version());
  training::TrainerOptions::Distillation distillation;
  RETURN_IF_ERROR(LoadPinned("teacher", d.teacher_model(), d.teacher_version(),
                             &distillation.teacher, &distillation.teacher_metadata));
  distillation.temperature = d.temperature();
  distillation.alpha = d.alpha();
  opts->distillation = std::move(distillation);
  if (!announce) return absl::OkStatus();
  PublishRunMessage(
      job.id(),
      absl::StrFormat("distilling from teacher %s (%d parameters) into %s (%d "
                      "parameters) at temperature %g, alpha %g%s",
                      teacher, d.teacher_parameter_count(), job.request().base_model(),
                      d.student_parameter_count(), d.temperature(), d.alpha(),
                      job.latest_version() > 0 ? "; the teacher was reloaded to resume" : ""));
  return absl::OkStatus();
}

namespace {

// A DISTILL job's report: teacher against student, on the validation
// `examples` ("images", "texts"), in size, and (rounds > 0) in the time of
// one forward pass, or why that was not measured.
std::string DistillationLine(const Job& job, absl::string_view examples, int rounds,
                             absl::string_view latency_note) {
  const kaizen::v1::DistillationResult& d = job.distillation();
  std::string line =
      absl::StrCat("distillation: teacher ", d.teacher_model(), ":", d.teacher_version(),
                   " vs student ", job.request().output_model(), ":", job.latest_version());
  if (d.validation_examples() > 0) {
    absl::StrAppendFormat(&line, ": validation accuracy %.1f%% vs %.1f%% on %d %s",
                          100 * d.teacher_val_accuracy(), 100 * d.student_val_accuracy(),
                          d.validation_examples(), examples);
  }
  absl::StrAppendFormat(&line, "; %d vs %d parameters (%.2fx)", d.teacher_parameter_count(),
                        d.student_parameter_count(),
                        d.student_parameter_count() > 0
                            ? static_cast<double>(d.teacher_parameter_count()) /
                                  static_cast<double>(d.student_parameter_count())
                            : 0.0);
  if (rounds > 0) {
    absl::StrAppendFormat(&line,
                          "; one %s forward %.2f ms vs %.2f ms (median of %d, side by side on "
                          "%s%s)",
                          examples == "images" ? "image" : "text", d.teacher_latency_ms(),
                          d.student_latency_ms(), rounds, job.device(), latency_note);
  } else {
    absl::StrAppend(&line, "; latency not measured: ", latency_note);
  }
  return line;
}

}  // namespace

void JobManager::PublishDistillation(Job* job, const std::string& line) {
  // The report and the row that records the result, together.
  JobEvent e;
  e.set_message(line);
  if (absl::Status st = PublishLeased(job, std::move(e)); !st.ok()) {
    common::LogWarning("cannot record the distillation result",
                       {{"job", job->id()}, {"error", st.ToString()}});
  }
}

void JobManager::ReportDistillation(Job* job, const training::TrainerOptions& opts,
                                    const training::TrainResult& result) {
  kaizen::v1::DistillationResult* d = job->mutable_distillation();
  const std::string& out = job->request().output_model();
  if (result.validation_examples > 0) {
    d->set_teacher_val_accuracy(result.teacher_val_accuracy);
    d->set_student_val_accuracy(result.last.val_accuracy());
    d->set_validation_examples(result.validation_examples);
  }
  absl::StatusOr<kaizen::v1::Model> student = models_->Get(out, job->latest_version());
  absl::StatusOr<torch::jit::Module> student_module =
      models_->LoadModule(out, job->latest_version());
  if (student.ok()) d->set_student_parameter_count(student->parameter_count());
  absl::StatusOr<training::LatencyComparison> latency =
      student.ok() && student_module.ok()
          ? training::CompareForwardLatency(
                opts.distillation->teacher.clone(),
                {opts.distillation->teacher_metadata.input_shape().begin(),
                 opts.distillation->teacher_metadata.input_shape().end()},
                *student_module, {student->input_shape().begin(), student->input_shape().end()},
                opts.device)
          : absl::StatusOr<training::LatencyComparison>(student.ok() ? student_module.status()
                                                                     : student.status());
  if (latency.ok()) {
    d->set_teacher_latency_ms(latency->first_ms);
    d->set_student_latency_ms(latency->second_ms);
  }
  PublishDistillation(job, DistillationLine(*job, "images", latency.ok() ? latency->rounds : 0,
                                            latency.ok() ? "" : latency.status().message()));
}

void JobManager::ExplainIneffectiveSettings(const Job& job, const training::TrainerOptions& opts) {
  // Say so when a setting cannot have its effect, instead of ignoring it.
  const kaizen::v1::Hyperparameters& hp = opts.hyperparameters;
  if (!opts.device.is_cuda() && (hp.mixed_precision() == kaizen::v1::MIXED_PRECISION_BF16 ||
                                 hp.mixed_precision() == kaizen::v1::MIXED_PRECISION_FP16)) {
    PublishRunMessage(job.id(),
                      "mixed precision applies on a GPU only; this job trains in float32 "
                      "on the CPU");
  }
  const kaizen::v1::Strategy strategy = job.request().strategy();
  if (job.latest_version() == 0 && models::IsBuiltinModel(opts.base_metadata.name()) &&
      strategy != kaizen::v1::STRATEGY_SCRATCH && strategy != kaizen::v1::STRATEGY_DISTILL) {
    PublishRunMessage(job.id(), absl::StrCat("base model ", opts.base_metadata.name(),
                                             " is a randomly initialised built-in: ",
                                             kaizen::v1::Strategy_Name(strategy),
                                             " transfers nothing from it; pretrain it with "
                                             "STRATEGY_SCRATCH first"));
  }
}

void JobManager::OnStep(Job* job, Running* running, const kaizen::v1::StepProgress& p,
                        ProgressThrottle* throttle) {
  job->set_step(p.step());
  job->set_total_steps(p.total_steps());
  job->set_epoch(p.epoch());
  if (Reports(*running)) {
    absl::MutexLock lock(&mu_);
    running->progress = p;
  }
  if (options_.after_step) options_.after_step(job->id(), p.step());
  if (throttle->first_step < 0) throttle->first_step = p.step();
  if (options_.metrics) options_.metrics->TrainingStep(*job, p);
  // A run another replica took over, or one whose lease ran out while its
  // replica stalled (it is taken over, or will be), reports nothing more.
  if (!Reports(*running)) return;
  const absl::Time now = absl::Now();
  if (now - throttle->last_published < options_.progress_interval && p.step() != p.total_steps()) {
    return;
  }
  throttle->last_published = now;
  JobEvent e;
  *e.mutable_progress() = p;
  if (p.eta_seconds() <= 0 && p.step() > throttle->first_step) {
    const double per_step =
        absl::ToDoubleSeconds(now - throttle->started) / (p.step() - throttle->first_step);
    e.mutable_progress()->set_eta_seconds(per_step * (p.total_steps() - p.step()));
  }
  events_->Publish(job->id(), std::move(e)).IgnoreError();
}

void JobManager::OnEpoch(Job* job, const kaizen::v1::EpochMetrics& m) {
  // A replica that lost the job reports no more epochs, nor records this
  // one: its event and the row are stored together, fenced by the lease
  // (PublishLeased), which catches a stall after this renewal.
  FenceRun(job->id()).IgnoreError();
  if (RunLost(job->id())) return;
  job->set_epoch(m.epoch());
  AppendEpochToHistory(m, job);
  JobEvent e;
  *e.mutable_epoch_summary() = m;
  if (absl::Status told = PublishLeased(job, std::move(e)); !told.ok()) {
    // A lost run was logged by MarkLost; the replica that took it over
    // counts the epoch.
    if (!RunLost(job->id())) {
      common::LogWarning("cannot record an epoch",
                         {{"job", job->id()}, {"error", told.ToString()}});
    }
    return;
  }
  if (options_.metrics) options_.metrics->EpochCompleted(*job);
}

absl::Status JobManager::OnCheckpoint(Job* job, const training::Checkpoint& ckpt) {
  const kaizen::v1::StartFineTuneRequest& req = job->request();
  kaizen::v1::Model meta = ckpt.metadata;
  meta.set_job_id(job->id());
  (*meta.mutable_metrics())["epoch"] = ckpt.epoch;
  meta.set_description(absl::StrCat(kaizen::v1::Strategy_Name(req.strategy()), " of ",
                                    req.base_model(), " on ", req.dataset(), ", epoch ",
                                    ckpt.epoch));
  // A replica that stalled past its lease writes no version: the one that
  // took the job over writes them now. The renewal gives the write a whole
  // lease; the version's row, stored only while the lease is live, and the
  // job's fenced row below catch a stall longer than that, so nobody sees a
  // version of a run that lost the job.
  RETURN_IF_ERROR(FenceRun(job->id()));
  if (options_.before_version_written) options_.before_version_written(job->id());
  const absl::Time write_start = absl::Now();
  const store::JobLease lease{job->id(), options_.replica_id, [this] { return LeaseNowMs(); }};
  absl::StatusOr<kaizen::v1::Model> written = models_->AddVersion(
      req.output_model(), ckpt.module, meta, ckpt.resume_state, ckpt.exemplars.get(),
      ckpt.tokenizer, options_.shared_database ? &lease : nullptr);
  if (absl::IsAborted(written.status()) && options_.shared_database) {
    absl::MutexLock lock(&mu_);
    MarkLost(job->id());
  }
  ASSIGN_OR_RETURN(kaizen::v1::Model stored, std::move(written));
  if (options_.after_version_written) options_.after_version_written(job->id(), stored.version());
  if (options_.metrics) {
    options_.metrics->CheckpointWritten(*job, absl::ToDoubleSeconds(absl::Now() - write_start));
  }
  job->set_latest_version(stored.version());
  const CheckpointMetric metric = CheckpointMetricOf(stored.metrics());
  if (BecomesBestVersion(ckpt.is_best, job->best_version())) {
    job->set_best_version(stored.version());
    job->set_best_metric(metric.value);
  }
  std::vector<int64_t> versions =
      stored.versions().empty()
          ? std::vector<int64_t>{stored.version()}
          : std::vector<int64_t>(stored.versions().begin(), stored.versions().end());
  // An INCREMENTAL job may continue its base's own model: retention applies
  // to the versions this job wrote, never to those of earlier jobs.
  std::vector<int64_t> others;
  if (req.strategy() == kaizen::v1::STRATEGY_INCREMENTAL) {
    std::vector<int64_t> own;
    for (int64_t v : versions) {
      absl::StatusOr<kaizen::v1::Model> m = v == stored.version()
                                                ? absl::StatusOr<kaizen::v1::Model>(stored)
                                                : models_->Get(req.output_model(), v);
      if (!m.ok() && !absl::IsNotFound(m.status())) return m.status();
      (m.ok() && m->job_id() != job->id() ? others : own).push_back(v);
    }
    versions = std::move(own);
  }
  std::vector<int64_t> keep = VersionsToKeep(
      std::move(versions), RetentionFor(req.keep_checkpoints(), job->best_version()));
  keep.insert(keep.end(), others.begin(), others.end());
  // The row that points at the new version is saved before older ones go:
  // a crash in between must not leave the job resuming from a deleted one.
  // Watchers are told in the same transaction, fenced by the lease: a
  // checkpoint the row records is told, one it does not is not.
  JobEvent e;
  auto* c = e.mutable_checkpoint();
  c->set_version(stored.version());
  c->set_epoch(ckpt.epoch);
  c->set_metric_name(metric.name);
  c->set_metric(metric.value);
  c->set_is_best(ckpt.is_best);
  if (absl::Status persisted = PublishLeased(job, std::move(e)); !persisted.ok()) {
    if (RunLost(job->id())) {
      // Lost meanwhile: the version is withdrawn, the taker's stay. (Were
      // this replica killed first, the taker's next run withdraws it:
      // WithdrawUnrecordedVersions.)
      if (absl::Status removed =
              models_->RemoveVersion(req.output_model(), stored.version(), stored.sha256());
          !removed.ok() && !absl::IsNotFound(removed)) {
        common::LogError("cannot withdraw the version of a job taken over",
                         {{"job", job->id()}, {"error", removed.ToString()}});
      }
    }
    return persisted;
  }
  {
    // A DISTILL job reloads the teacher version it resolved at submission
    // whenever it (re)starts, an INCREMENTAL job its base version: versions
    // of this model that active jobs teach from or continue stay. Exclusive, so that no submission
    // resolves a version between the query and the pruning.
    absl::WriterMutexLock references(&references_mu_);
    ASSIGN_OR_RETURN(const std::vector<int64_t> pinned, PinnedVersionsInUse(req.output_model()));
    keep.insert(keep.end(), pinned.begin(), pinned.end());
    RETURN_IF_ERROR(models_->PruneVersions(req.output_model(), keep, stored.version()));
  }
  return absl::OkStatus();
}

absl::StatusOr<training::TrainResult> JobManager::TrainOnWorldSize(
    const Job& job, training::TrainerOptions opts, const training::TrainingData& data,
    const training::Callbacks& cb) {
  const int world_size = std::max(1, job.world_size());
  if (world_size == 1) return training::Train(opts, data, cb);
  // --default_world_size applies where the job can run data parallel; a
  // job that asked for it is told why not (LocalDataParallel::Start).
  if (job.request().world_size() == 0) {
    if (const absl::Status fits = CheckDataParallelData(opts, data); !fits.ok()) {
      PublishRunMessage(job.id(), DefaultWorldSizeDoesNotApply(world_size, fits));
      return training::Train(opts, data, cb);
    }
  }
  absl::StatusOr<std::unique_ptr<LocalDataParallel>> started =
      LocalDataParallel::Start(options_.data_parallel, absl::StrCat("dp-", job.id()), world_size,
                               options_.threads_per_worker, opts, data);
  if (absl::IsResourceExhausted(started.status()) && job.request().world_size() == 0) {
    PublishRunMessage(job.id(), DefaultWorldSizeDoesNotApply(world_size, started.status()));
    return training::Train(opts, data, cb);
  }
  ASSIGN_OR_RETURN(std::unique_ptr<LocalDataParallel> dp, std::move(started));
  PublishRunMessage(job.id(),
                    LocalDataParallel::Announcement(world_size, options_.threads_per_worker,
                                                    opts.hyperparameters.batch_size()));
  opts.group = dp->group();
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<training::TrainResult> result = training::Train(opts, data, cb);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  RETURN_IF_ERROR(dp->Conclude(result.status(), seconds, [&](const std::string& message) {
    PublishRunMessage(job.id(), message);
  }));
  return result;
}

training::TrainerOptions JobManager::TrainerOptionsOf(const Job& job) const {
  training::TrainerOptions opts;
  opts.strategy = job.request().strategy();
  opts.hyperparameters = job.resolved_hyperparameters();
  opts.device = torch::Device(job.device());
  opts.max_image_memory_bytes = options_.data.max_image_memory_bytes;
  opts.loader_threads = options_.data.loader_threads;
  opts.prefetch_batches = options_.data.prefetch_batches;
  opts.max_prefix_cache_bytes = options_.data.max_prefix_cache_bytes;
  opts.channels_last = options_.data.channels_last;
  // Stored records were decoded once under the upload limits; each is held
  // to its index entry's pixel count, and a scan limit lowered since must
  // not make stored data unreadable (as DatasetStore::Load).
  opts.decode_limits.max_pixels = std::numeric_limits<int64_t>::max();
  opts.decode_limits.max_jpeg_scans = std::numeric_limits<int>::max();
  return opts;
}

absl::Status JobManager::Execute(Job* job, Running* running, bool* stopped) {
  const kaizen::v1::StartFineTuneRequest& req = job->request();
  ASSIGN_OR_RETURN(const kaizen::v1::Dataset dataset, datasets_->Get(req.dataset()));
  if (store::IsTextDataset(dataset)) return ExecuteText(job, running, stopped);
  const bool incremental = req.strategy() == kaizen::v1::STRATEGY_INCREMENTAL;
  const std::string& validation_name = req.hyperparameters().validation().dataset();
  // Tuning comes before the first checkpoint: a job with a version has
  // finished it.
  const bool tuning =
      req.tuning().max_trials() > 0 && !job->tuning().done() && job->latest_version() == 0;
  // Record files are read by the trainer itself, in memory or streamed (see
  // JobDataOptions). INCREMENTAL (which merges class lists and memories) and
  // tuning trials take decoded datasets, as do .kds data directories.
  training::TrainingData data;
  if (!incremental && !tuning) {
    ASSIGN_OR_RETURN(data.train_file, datasets_->OpenRecordFile(req.dataset()));
    if (data.train_file != nullptr && !validation_name.empty()) {
      ASSIGN_OR_RETURN(data.validation_file, datasets_->OpenRecordFile(validation_name));
      if (data.validation_file == nullptr) data.train_file = nullptr;
    }
  }
  datasets::DecodedDataset train;
  std::optional<datasets::DecodedDataset> validation;
  if (data.train_file == nullptr) {
    ASSIGN_OR_RETURN(train, datasets_->Load(req.dataset()));
    if (!validation_name.empty()) {
      ASSIGN_OR_RETURN(validation, datasets_->Load(validation_name));
    }
  }
  const kaizen::v1::Dataset& dataset_info = dataset;

  training::TrainerOptions opts = TrainerOptionsOf(*job);
  if (job->latest_version() > 0) {
    RETURN_IF_ERROR(LoadCheckpointToResume(job, &opts));
  } else if (incremental) {
    job->clear_history();
    job->set_epoch(0);
    job->set_step(0);
  } else {
    // A job that died before its first checkpoint (without validation one
    // comes every tenth of the run) starts over: the epochs it reported will
    // run again.
    job->clear_history();
    job->set_epoch(0);
    job->set_step(0);
    RETURN_IF_ERROR(LoadBaseModel(*job, dataset_info, &opts));
  }
  if (req.strategy() == kaizen::v1::STRATEGY_DISTILL) RETURN_IF_ERROR(LoadTeacher(*job, &opts));
  IncrementalData memories;
  if (incremental) {
    RETURN_IF_ERROR(
        LoadIncremental(job, job->latest_version() > 0, &opts, &train, &validation, &memories));
  }
  if (data.train_file == nullptr) {
    data.train = &train;
    data.validation = validation ? &*validation : nullptr;
  }
  training::Callbacks cb;
  cb.should_stop = [&] {
    return running->cancel.load() || running->pause.load() || running->lost.load() ||
           shutting_down_.load();
  };
  if (tuning) {
    ASSIGN_OR_RETURN(const bool tuned,
                     TuneJob(job, *running, opts, train, data.validation, cb.should_stop));
    if (!tuned) {
      *stopped = true;
      return absl::OkStatus();
    }
    opts.hyperparameters = job->resolved_hyperparameters();
  }
  ExplainIneffectiveSettings(*job, opts);

  ProgressThrottle throttle;
  throttle.started = absl::Now();
  cb.on_step = [&](const kaizen::v1::StepProgress& p) { OnStep(job, running, p, &throttle); };
  cb.on_epoch = [&](const kaizen::v1::EpochMetrics& m) { OnEpoch(job, m); };
  cb.on_checkpoint = [&](const training::Checkpoint& c) { return OnCheckpoint(job, c); };
  // What the trainer decided (a validation split dropped on tiny data, the
  // head's standardised input, BatchNorm statistics recomputed) is part of
  // the job's story.
  cb.on_message = [&](const std::string& m) {
    if (Reports(*running)) PublishRunMessage(job->id(), m);
  };

  ASSIGN_OR_RETURN(training::TrainResult result, TrainOnWorldSize(*job, opts, data, cb));
  *stopped = result.cancelled;
  if (result.stopped_early) {
    PublishRunMessage(
        job->id(),
        absl::StrFormat("early stopping after epoch %d: best %s at epoch %d",
                        result.epochs_completed, result.best_metric_name, result.best_epoch));
  }
  if (*stopped) return absl::OkStatus();
  if (opts.distillation) ReportDistillation(job, opts, result);
  if (incremental) ReportIncremental(job, result);
  if (req.test_dataset().empty()) return absl::OkStatus();
  absl::Status evaluated = EvaluateOnTestDataset(job, cb.should_stop);
  // Stopped by a cancel, pause or shutdown: ends like a stop during
  // training; a resumed job has no epoch left and evaluates again.
  if (absl::IsCancelled(evaluated)) {
    *stopped = true;
    return absl::OkStatus();
  }
  return evaluated;
}

absl::Status JobManager::ExecuteText(Job* job, Running* running, bool* stopped) {
  const kaizen::v1::StartFineTuneRequest& req = job->request();
  const std::function<bool()> should_stop = [&] {
    return running->cancel.load() || running->pause.load() || running->lost.load() ||
           shutting_down_.load();
  };
  TextJobInputs in;
  // A text job writes a version after each epoch, with what it needs to
  // continue from there. A job whose training is over stopped at its test
  // evaluation and does only that.
  bool trained = false;
  if (job->latest_version() > 0) {
    RETURN_IF_ERROR(LoadTextCheckpointToResume(job, &in, &trained));
  } else {
    job->clear_history();
    job->set_epoch(0);
    job->set_step(0);
  }
  if (!trained) {
    in.strategy = req.strategy();
    in.hyperparameters = job->resolved_hyperparameters();
    in.device = torch::Device(job->device());
    in.tokenizer_sandbox = options_.tokenizer_sandbox;
    in.world_size = std::max(1, job->world_size());
    in.world_size_is_default = req.world_size() == 0;
    if (in.world_size > 1 && in.world_size_is_default && !in.device.is_cpu()) {
      PublishRunMessage(
          job->id(),
          DefaultWorldSizeDoesNotApply(
              in.world_size, absl::FailedPreconditionError("data-parallel jobs train on CPUs")));
      in.world_size = 1;
    }
    in.data_parallel = options_.data_parallel;
    in.threads_per_worker = options_.threads_per_worker;
    in.group_name = absl::StrCat("dp-", job->id());
    ASSIGN_OR_RETURN(std::shared_ptr<const datasets::RecordFile> train,
                     datasets_->OpenTextRecordFile(req.dataset()));
    ASSIGN_OR_RETURN(in.train, ReadTextRecords(*train));
    const std::string& validation_name = req.hyperparameters().validation().dataset();
    if (!validation_name.empty()) {
      ASSIGN_OR_RETURN(std::shared_ptr<const datasets::RecordFile> val,
                       datasets_->OpenTextRecordFile(validation_name));
      ASSIGN_OR_RETURN(in.validation, ReadTextRecords(*val));
    }
    if (job->has_incremental()) {
      RETURN_IF_ERROR(LoadTextIncremental(job, &in));
    } else if (!BuildsNewTextEncoder(req) && !in.resume.has_value()) {
      std::string base;
      int64_t version = 0;
      RETURN_IF_ERROR(common::ParseModelRef(req.base_model(), &base, &version));
      ASSIGN_OR_RETURN(in.base_metadata, models_->Get(base, version));
      ASSIGN_OR_RETURN(in.base, models_->LoadModule(base, in.base_metadata.version()));
      ASSIGN_OR_RETURN(in.base_tokenizer, models_->ReadTokenizer(base, in.base_metadata.version()));
    }
    if (req.strategy() == kaizen::v1::STRATEGY_DISTILL) {
      RETURN_IF_ERROR(LoadTextTeacher(*job, &in));
    }
    in.should_stop = should_stop;
    in.on_epoch = [&](const kaizen::v1::EpochMetrics& m) { OnEpoch(job, m); };
    in.on_message = [&](const std::string& m) {
      if (Reports(*running)) PublishRunMessage(job->id(), m);
    };
    in.on_checkpoint = [&](const TextJobCheckpoint& c) {
      training::Checkpoint ckpt;
      ckpt.module = c.module;
      ckpt.metadata = c.metadata;
      ckpt.metadata.set_source(kaizen::v1::MODEL_SOURCE_FINE_TUNED);
      ckpt.epoch = c.epoch;
      ckpt.is_best = c.is_best;
      ckpt.tokenizer = *c.tokenizer;
      ckpt.resume_state = c.resume_state;
      return OnCheckpoint(job, ckpt);
    };
    ASSIGN_OR_RETURN(TextJobOutput out, RunTextJob(in));
    *stopped = out.stopped;
    if (*stopped) return absl::OkStatus();
    if (job->has_distillation()) ReportTextDistillation(job, out);
    if (job->has_incremental()) ReportTextIncremental(job, in, out, should_stop);
  }
  if (req.test_dataset().empty()) return absl::OkStatus();
  absl::Status evaluated = EvaluateTextOnTestDataset(job, should_stop);
  if (absl::IsCancelled(evaluated)) {
    *stopped = true;
    return absl::OkStatus();
  }
  return evaluated;
}

namespace {

// `texts` relabelled to `classes` by name (each of its classes is one of
// them), with `classes` as its class list.
absl::Status RelabelTexts(const std::vector<std::string>& classes, absl::string_view what,
                          LabelledTexts* texts) {
  std::vector<int64_t> index;
  for (const std::string& name : texts->class_names) {
    const auto it = std::find(classes.begin(), classes.end(), name);
    if (it == classes.end()) {
      return absl::FailedPreconditionError(absl::StrCat(what, " class \"", name,
                                                        "\" is not one of the job's classes [",
                                                        absl::StrJoin(classes, ", "), "]"));
    }
    index.push_back(it - classes.begin());
  }
  for (int64_t& label : texts->labels) label = index[static_cast<size_t>(label)];
  texts->class_names = classes;
  return absl::OkStatus();
}

}  // namespace

absl::Status JobManager::LoadTextIncremental(Job* job, TextJobInputs* in) {
  const kaizen::v1::IncrementalResult& inc = job->incremental();
  const std::string ref = absl::StrCat(inc.base_model(), ":", inc.base_version());
  TextJobInputs::Incremental previous;
  ASSIGN_OR_RETURN(previous.previous_metadata, models_->Get(inc.base_model(), inc.base_version()));
  ASSIGN_OR_RETURN(previous.previous, models_->LoadModule(inc.base_model(), inc.base_version()));
  ASSIGN_OR_RETURN(previous.previous_tokenizer,
                   models_->ReadTokenizer(inc.base_model(), inc.base_version()));
  previous.temperature = inc.temperature();
  previous.weight = inc.distillation() ? inc.distillation_weight() : 0.0;
  if (!in->resume.has_value()) {
    in->base = previous.previous;
    in->base_metadata = previous.previous_metadata;
    in->base_tokenizer = previous.previous_tokenizer;
  }
  std::vector<std::string> merged(inc.old_classes().begin(), inc.old_classes().end());
  merged.insert(merged.end(), inc.new_classes().begin(), inc.new_classes().end());
  RETURN_IF_ERROR(RelabelTexts(merged, "dataset", &in->train));
  if (in->validation.has_value()) {
    RETURN_IF_ERROR(RelabelTexts(merged, "validation dataset", &*in->validation));
  }
  in->incremental = std::move(previous);
  const size_t new_texts = in->train.texts.size();
  std::string replayed = "no rehearsal";
  if (inc.rehearsal()) {
    // Each old class's exemplars: up to `per_class` of its texts in the
    // previous datasets, a seeded random choice (the same at every run of
    // the job, so nothing needs storing).
    ASSIGN_OR_RETURN(
        const kaizen::v1::IncrementalOptions o,
        training::ResolveIncremental(job->request().strategy(), job->request().incremental(),
                                     job->resolved_hyperparameters().seed()));
    const int64_t per_class = training::ExemplarsPerClass(
        inc.exemplars_per_class(), inc.max_exemplars(), static_cast<int64_t>(merged.size()));
    std::vector<std::vector<std::string>> pool(static_cast<size_t>(inc.old_classes_size()));
    for (const std::string& name : job->request().incremental().previous_datasets()) {
      ASSIGN_OR_RETURN(std::shared_ptr<const datasets::RecordFile> file,
                       datasets_->OpenTextRecordFile(name));
      ASSIGN_OR_RETURN(LabelledTexts previous_texts, ReadTextRecords(*file));
      for (size_t i = 0; i < previous_texts.texts.size(); ++i) {
        const std::string& cls =
            previous_texts.class_names[static_cast<size_t>(previous_texts.labels[i])];
        const auto it = std::find(inc.old_classes().begin(), inc.old_classes().end(), cls);
        if (it == inc.old_classes().end()) continue;
        pool[static_cast<size_t>(it - inc.old_classes().begin())].push_back(
            std::move(previous_texts.texts[i]));
      }
    }
    // Class-balanced replay: each old class's exemplars repeated in turn up
    // to the mean number of new texts per class the dataset brings, all old
    // classes together at most as many as the new texts.
    const int64_t new_classes_present = static_cast<int64_t>(
        std::set<int64_t>(in->train.labels.begin(), in->train.labels.end()).size());
    int64_t with_exemplars = 0;
    for (const auto& p : pool) with_exemplars += p.empty() ? 0 : 1;
    const int64_t quota =
        with_exemplars == 0
            ? 0
            : std::max<int64_t>(
                  1, std::min<int64_t>(static_cast<int64_t>(new_texts) /
                                           std::max<int64_t>(1, new_classes_present),
                                       static_cast<int64_t>(new_texts) / with_exemplars));
    int64_t exemplars = 0;
    std::vector<std::string> without;
    for (size_t c = 0; c < pool.size(); ++c) {
      if (pool[c].empty()) {
        without.push_back(inc.old_classes(static_cast<int>(c)));
        continue;
      }
      const std::vector<int64_t> chosen = training::RandomOrder(
          static_cast<int64_t>(pool[c].size()), per_class, o.seed() + static_cast<uint64_t>(c));
      exemplars += static_cast<int64_t>(chosen.size());
      for (int64_t r = 0; r < quota; ++r) {
        in->train.texts.push_back(
            pool[c][static_cast<size_t>(chosen[static_cast<size_t>(r) % chosen.size()])]);
        in->train.labels.push_back(static_cast<int64_t>(c));
      }
    }
    replayed = absl::StrFormat(
        "%d exemplars of %d old classes chosen at random from %s, replayed as %d texts per epoch",
        exemplars, with_exemplars,
        absl::StrJoin(job->request().incremental().previous_datasets(), ", "),
        in->train.texts.size() - new_texts);
    if (!without.empty()) {
      absl::StrAppend(&replayed, "; no exemplars of [", absl::StrJoin(without, ", "),
                      "] (only distillation protects them)");
    }
  }
  PublishRunMessage(
      job->id(), absl::StrFormat("incremental: continuing %s (%d classes) with %d new classes "
                                 "[%s] on %d new texts; %s; distillation %s",
                                 ref, inc.old_classes_size(), inc.new_classes_size(),
                                 absl::StrJoin(inc.new_classes(), ", "), new_texts, replayed,
                                 inc.distillation()
                                     ? absl::StrFormat("weight %g at temperature %g",
                                                       inc.distillation_weight(), inc.temperature())
                                     : std::string("off")));
  return absl::OkStatus();
}

void JobManager::ReportTextIncremental(Job* job, const TextJobInputs& in, const TextJobOutput& out,
                                       const std::function<bool()>& should_stop) {
  kaizen::v1::IncrementalResult* r = job->mutable_incremental();
  const std::vector<std::string> old(r->old_classes().begin(), r->old_classes().end());
  // The test dataset when the job names one (its classes may be any of the
  // merged ones), else the validation texts.
  std::optional<LabelledTexts> texts;
  std::string on;
  if (!job->request().test_dataset().empty()) {
    absl::StatusOr<std::shared_ptr<const datasets::RecordFile>> file =
        datasets_->OpenTextRecordFile(job->request().test_dataset());
    absl::StatusOr<LabelledTexts> read =
        file.ok() ? ReadTextRecords(**file) : absl::StatusOr<LabelledTexts>(file.status());
    if (!read.ok()) {
      PublishRunMessage(job->id(), absl::StrCat("incremental: cannot read the test dataset: ",
                                                read.status().message()));
      return;
    }
    texts = *std::move(read);
    on = absl::StrCat("test dataset ", job->request().test_dataset());
  } else if (in.validation.has_value()) {
    texts = *in.validation;
    on = "validation texts";
  } else {
    return;
  }
  const int64_t batch = job->resolved_hyperparameters().batch_size();
  torch::jit::Module before_module = in.incremental->previous;  // a handle: the same module
  absl::StatusOr<OldAndNewAccuracy> before = ClassifierOldAndNewAccuracy(
      before_module, in.incremental->previous_metadata, in.incremental->previous_tokenizer, *texts,
      old, batch, should_stop);
  torch::jit::Module after_module = out.module;
  absl::StatusOr<OldAndNewAccuracy> after = ClassifierOldAndNewAccuracy(
      after_module, out.metadata, out.tokenizer, *texts, old, batch, should_stop);
  if (!before.ok() || !after.ok()) {
    PublishRunMessage(job->id(),
                      absl::StrCat("incremental: cannot measure old- and new-class accuracy: ",
                                   (!before.ok() ? before.status() : after.status()).message()));
    return;
  }
  r->set_evaluated_on(on);
  r->set_old_examples(after->old_examples);
  r->set_new_examples(after->new_examples);
  r->set_old_accuracy_before(before->old_accuracy);
  r->set_new_accuracy_before(before->new_accuracy);
  r->set_all_accuracy_before(before->all_accuracy);
  r->set_old_accuracy_after(after->old_accuracy);
  r->set_new_accuracy_after(after->new_accuracy);
  r->set_all_accuracy_after(after->all_accuracy);
  r->set_forgetting(after->old_examples > 0 ? before->old_accuracy - after->old_accuracy : 0);
  PublishRunMessage(
      job->id(),
      absl::StrFormat(
          "incremental: on the %s, %s:%d before -> version %d after: old classes %s, new classes "
          "%.1f%% -> %.1f%% (%d texts), all %.1f%% -> %.1f%%",
          on, r->base_model(), r->base_version(), job->latest_version(),
          after->old_examples > 0
              ? absl::StrFormat("%.1f%% -> %.1f%% (%d texts, forgetting %.1f points)",
                                100 * r->old_accuracy_before(), 100 * r->old_accuracy_after(),
                                after->old_examples, 100 * r->forgetting())
              : std::string("unmeasured (none of their texts; name a test_dataset)"),
          100 * r->new_accuracy_before(), 100 * r->new_accuracy_after(), after->new_examples,
          100 * r->all_accuracy_before(), 100 * r->all_accuracy_after()));
  if (absl::Status st = Persist(job); !st.ok()) {
    common::LogWarning("cannot record the incremental result",
                       {{"job", job->id()}, {"error", st.ToString()}});
  }
}

absl::Status JobManager::LoadTextCheckpointToResume(Job* job, TextJobInputs* in, bool* trained) {
  const std::string& out = job->request().output_model();
  const int64_t version = job->latest_version();
  absl::StatusOr<std::string> bytes = models_->ReadResumeState(out, version);
  // No state, or an empty one: the version was written when training ended,
  // by a server before per-epoch checkpoints (a MASKED_LM job's until
  // resume state version 4).
  if (absl::IsNotFound(bytes.status()) || (bytes.ok() && bytes->empty())) {
    *trained = true;
    return absl::OkStatus();
  }
  RETURN_IF_ERROR(bytes.status());
  ASSIGN_OR_RETURN(const training::ResumeState state, training::DecodeResumeState(*bytes));
  if (state.epochs_completed >= job->resolved_hyperparameters().epochs()) {
    *trained = true;
    return absl::OkStatus();
  }
  TextJobInputs::Resume resume;
  ASSIGN_OR_RETURN(resume.module, models_->LoadModule(out, version));
  ASSIGN_OR_RETURN(resume.metadata, models_->Get(out, version));
  ASSIGN_OR_RETURN(resume.tokenizer, models_->ReadTokenizer(out, version));
  resume.state = *std::move(bytes);
  in->resume = std::move(resume);
  // Epochs after the checkpoint will run again: forget what they reported.
  auto* history = job->mutable_history();
  while (!history->empty() && history->rbegin()->epoch() > state.epochs_completed) {
    history->RemoveLast();
  }
  job->set_epoch(state.epochs_completed);
  PublishRunMessage(job->id(), absl::StrCat("resuming from checkpoint version ", version,
                                            " (epoch ", state.epochs_completed, ")"));
  return absl::OkStatus();
}

absl::Status JobManager::EvaluateTextOnTestDataset(Job* job,
                                                   const std::function<bool()>& should_stop) {
  const kaizen::v1::StartFineTuneRequest& req = job->request();
  const int64_t version = job->latest_version();
  // The training succeeded and its version is stored: a test set that cannot
  // be read or evaluated is said, not turned into a failed job.
  const auto evaluate = [&]() -> absl::StatusOr<kaizen::v1::Evaluation> {
    ASSIGN_OR_RETURN(const kaizen::v1::Model model, models_->Get(req.output_model(), version));
    ASSIGN_OR_RETURN(torch::jit::Module module, models_->LoadModule(req.output_model(), version));
    ASSIGN_OR_RETURN(const std::string tokenizer,
                     models_->ReadTokenizer(req.output_model(), version));
    ASSIGN_OR_RETURN(std::shared_ptr<const datasets::RecordFile> file,
                     datasets_->OpenTextRecordFile(req.test_dataset()));
    ASSIGN_OR_RETURN(const LabelledTexts test, ReadTextRecords(*file));
    module.to(torch::Device(job->device()));
    return EvaluateTextClassifier(module, model, tokenizer, test,
                                  job->resolved_hyperparameters().batch_size(), should_stop);
  };
  absl::StatusOr<kaizen::v1::Evaluation> e = evaluate();
  if (absl::IsCancelled(e.status())) return e.status();
  if (e.ok()) {
    e->set_dataset(req.test_dataset());
    *e->mutable_create_time() = Now();
  }
  const absl::StatusOr<std::string> stored =
      e.ok() ? StoreTestEvaluation(*job, version, *e) : e.status();
  if (!stored.ok()) {
    if (RunLost(job->id())) return stored.status();
    PublishRunMessage(job->id(),
                      absl::StrCat("test dataset ", req.test_dataset(), ": version ", version,
                                   " was not evaluated: ", stored.status().message()));
    return absl::OkStatus();
  }
  const std::string& stored_as = *stored;
  PublishRunMessage(
      job->id(),
      absl::StrFormat("test dataset %s: version %d %.1f%% accuracy, top-%d %.1f%%, "
                      "mean loss %.4f on %d texts%s",
                      req.test_dataset(), version, 100 * e->accuracy(), e->top_k(),
                      100 * e->top_k_accuracy(), e->mean_loss(), e->examples(), stored_as));
  if (!job->has_distillation()) return absl::OkStatus();
  return EvaluateTeacherOnTestDataset(job, *e, should_stop, "texts");
}

absl::Status JobManager::LoadTextTeacher(const Job& job, TextJobInputs* in) {
  const kaizen::v1::DistillationResult& d = job.distillation();
  if (d.teacher_model().empty() || d.teacher_version() <= 0) {
    return absl::FailedPreconditionError(
        "this DISTILL job has no resolved teacher version; submit it again");
  }
  TextJobInputs::Teacher teacher;
  RETURN_IF_ERROR(LoadPinned("teacher", d.teacher_model(), d.teacher_version(), &teacher.module,
                             &teacher.metadata));
  absl::StatusOr<std::string> tokenizer =
      models_->ReadTokenizer(d.teacher_model(), d.teacher_version());
  if (!tokenizer.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the teacher ", d.teacher_model(), ":", d.teacher_version(),
                     "'s tokenizer cannot be read: ", tokenizer.status().message()));
  }
  teacher.tokenizer = *std::move(tokenizer);
  teacher.temperature = d.temperature();
  teacher.alpha = d.alpha();
  in->teacher = std::move(teacher);
  PublishRunMessage(
      job.id(), absl::StrFormat("distilling from teacher %s:%d (%d parameters) into %s at "
                                "temperature %g, alpha %g; the teacher's logits on the training "
                                "texts are computed once, with its own tokenizer",
                                d.teacher_model(), d.teacher_version(), d.teacher_parameter_count(),
                                job.request().base_model(), d.temperature(), d.alpha()));
  return absl::OkStatus();
}

void JobManager::ReportTextDistillation(Job* job, const TextJobOutput& out) {
  kaizen::v1::DistillationResult* d = job->mutable_distillation();
  d->set_student_parameter_count(out.metadata.parameter_count());
  d->set_teacher_val_accuracy(out.teacher_val_accuracy);
  d->set_student_val_accuracy(out.student_val_accuracy);
  d->set_validation_examples(out.validation_examples);
  d->set_teacher_latency_ms(out.teacher_latency_ms);
  d->set_student_latency_ms(out.student_latency_ms);
  PublishDistillation(
      job, DistillationLine(*job, "texts", out.latency_rounds,
                            out.latency_rounds > 0
                                ? absl::StrCat(", a text of ", out.teacher_latency_tokens, " vs ",
                                               out.student_latency_tokens, " tokens")
                                : out.latency_error));
}

absl::StatusOr<bool> JobManager::TuneJob(Job* job, const Running& running,
                                         const training::TrainerOptions& opts,
                                         const datasets::DecodedDataset& train,
                                         const datasets::DecodedDataset* validation,
                                         const std::function<bool()>& should_stop) {
  training::TunerOptions t;
  t.strategy = opts.strategy;
  t.requested = job->request().hyperparameters();
  t.resolved = job->resolved_hyperparameters();
  t.tuning = job->request().tuning();
  t.base = opts.base;
  t.base_metadata = opts.base_metadata;
  t.device = opts.device;
  t.distillation = opts.distillation;
  t.max_prefix_cache_bytes = opts.max_prefix_cache_bytes;
  t.channels_last = opts.channels_last;
  t.done.assign(job->tuning().trials().begin(), job->tuning().trials().end());
  t.spent = absl::Seconds(job->tuning().seconds());
  if (!t.done.empty() && Reports(running)) {
    PublishRunMessage(job->id(), absl::StrCat("tuning continues; the ", t.done.size(),
                                              " trial runs finished before the stop are kept"));
  }
  training::TunerCallbacks cb;
  cb.should_stop = should_stop;
  cb.on_plan = [&](const kaizen::v1::TuningResult& plan) {
    job->mutable_tuning()->set_scoring(plan.scoring());
    *job->mutable_tuning()->mutable_searched() = plan.searched();
  };
  cb.on_trial = [&](const kaizen::v1::TuningTrial& trial, absl::Duration elapsed) {
    job->mutable_tuning()->set_seconds(absl::ToDoubleSeconds(elapsed));
    RecordTrial(job, running, trial);
  };
  cb.on_message = [&](const std::string& m) {
    if (Reports(running)) PublishRunMessage(job->id(), m);
  };
  ASSIGN_OR_RETURN(training::TuneOutcome out, training::Tune(t, train, validation, cb));
  if (out.stopped) {
    // The finished trials are in job->tuning already; the time counts.
    job->mutable_tuning()->set_seconds(out.result.seconds());
    RETURN_IF_ERROR(Persist(job));
    return false;
  }
  *job->mutable_tuning() = std::move(out.result);
  *job->mutable_resolved_hyperparameters() = out.winner;
  job->set_total_epochs(out.winner.epochs());
  RETURN_IF_ERROR(Persist(job));
  return true;
}

void JobManager::RecordTrial(Job* job, const Running& running,
                             const kaizen::v1::TuningTrial& trial) {
  kaizen::v1::TuningResult* tuning = job->mutable_tuning();
  kaizen::v1::TuningTrial* slot = nullptr;
  for (kaizen::v1::TuningTrial& t : *tuning->mutable_trials()) {
    if (t.trial() == trial.trial() && t.round() == trial.round()) slot = &t;
  }
  const bool is_new = slot == nullptr;
  if (is_new) slot = tuning->add_trials();
  *slot = trial;
  // GetJob shows the trial at once; a failed write is retried with the next.
  // A new result is also a line in the job's story, stored with the row,
  // unless the run's lease has run out (nothing of it is recorded then).
  absl::Status recorded;
  if (!is_new || !Reports(running)) {
    recorded = Persist(job);
  } else {
    JobEvent e;
    e.set_message(absl::StrFormat(
        "tuning trial %d (round %d): %s: %s", trial.trial(), trial.round(),
        training::DescribeTrial(trial, *tuning),
        trial.outcome().empty()
            ? absl::StrFormat("validation accuracy %.1f%%, loss %.4f (best at epoch %d), %.1f s",
                              100 * trial.val_accuracy(), trial.val_loss(), trial.best_epoch(),
                              trial.seconds())
            : trial.outcome()));
    recorded = PublishLeased(job, std::move(e));
  }
  if (!recorded.ok()) {
    common::LogWarning("cannot record a tuning trial",
                       {{"job", job->id()}, {"error", recorded.ToString()}});
  }
}

absl::Status JobManager::EvaluateOnTestDataset(Job* job_ptr,
                                               const std::function<bool()>& should_stop) {
  const Job& job = *job_ptr;
  const kaizen::v1::StartFineTuneRequest& req = job.request();
  // DISTILL: the student's latest version's accuracy, beside the teacher's.
  std::optional<kaizen::v1::Evaluation> student_latest;
  std::vector<int64_t> versions = {job.latest_version()};
  if (job.best_version() > 0 && job.best_version() != job.latest_version()) {
    versions.push_back(job.best_version());
  }
  for (int64_t version : versions) {
    kaizen::v1::EvaluateModelRequest r;
    r.set_name(req.output_model());
    r.set_version(version);
    r.set_dataset(req.test_dataset());
    // A job waits for its turn rather than fail for a busy evaluator, and
    // runs on its own device.
    absl::StatusOr<kaizen::v1::Evaluation> e = options_.evaluator->Evaluate(
        r, should_stop, /*wait_for_turn=*/true, torch::Device(job.device()));
    if (absl::IsCancelled(e.status())) return e.status();
    // The training succeeded and its versions are stored: a test set that
    // cannot be evaluated is said, not turned into a failed job.
    const absl::StatusOr<std::string> stored =
        e.ok() ? StoreTestEvaluation(job, version, *e) : e.status();
    if (!stored.ok()) {
      if (RunLost(job.id())) return stored.status();
      PublishRunMessage(job.id(),
                        absl::StrCat("test dataset ", req.test_dataset(), ": version ", version,
                                     " was not evaluated: ", stored.status().message()));
      continue;
    }
    const std::string& stored_as = *stored;
    if (version == job.latest_version()) student_latest = *e;
    const char* which = version == job.latest_version()
                            ? (version == job.best_version() ? "latest and best" : "latest")
                            : "best";
    PublishRunMessage(
        job.id(),
        absl::StrFormat("test dataset %s: version %d (%s) %.1f%% accuracy, "
                        "top-%d %.1f%%, mean loss %.4f on %d images%s",
                        req.test_dataset(), version, which, 100 * e->accuracy(), e->top_k(),
                        100 * e->top_k_accuracy(), e->mean_loss(), e->examples(), stored_as));
  }
  if (!student_latest) return absl::OkStatus();
  if (job.has_incremental()) {
    return EvaluateIncrementalOnTestDataset(job_ptr, *student_latest, should_stop);
  }
  if (!job.has_distillation()) return absl::OkStatus();
  return EvaluateTeacherOnTestDataset(job_ptr, *student_latest, should_stop);
}

absl::Status JobManager::EvaluateTeacherOnTestDataset(Job* job,
                                                      const kaizen::v1::Evaluation& student,
                                                      const std::function<bool()>& should_stop,
                                                      absl::string_view examples) {
  kaizen::v1::DistillationResult* d = job->mutable_distillation();
  const std::string& test = job->request().test_dataset();
  kaizen::v1::EvaluateModelRequest r;
  r.set_name(d->teacher_model());
  r.set_version(d->teacher_version());
  r.set_dataset(test);
  absl::StatusOr<kaizen::v1::Evaluation> e = options_.evaluator->Evaluate(
      r, should_stop, /*wait_for_turn=*/true, torch::Device(job->device()));
  if (absl::IsCancelled(e.status())) return e.status();
  if (!e.ok()) {
    PublishRunMessage(job->id(), absl::StrCat("test dataset ", test, ": the teacher ",
                                              d->teacher_model(), ":", d->teacher_version(),
                                              " was not evaluated: ", e.status().message()));
    return absl::OkStatus();
  }
  d->set_teacher_test_accuracy(e->accuracy());
  d->set_student_test_accuracy(student.accuracy());
  d->set_test_examples(student.examples());
  PublishMessage(job->id(), absl::StrFormat(
                                "distillation: test dataset %s: teacher %s:%d %.1f%% vs student "
                                "%s:%d %.1f%% accuracy on %d %s",
                                test, d->teacher_model(), d->teacher_version(), 100 * e->accuracy(),
                                job->request().output_model(), job->latest_version(),
                                100 * student.accuracy(), student.examples(), examples));
  return Persist(job);
}

absl::StatusOr<std::string> JobManager::StoreTestEvaluation(const Job& job, int64_t version,
                                                            kaizen::v1::Evaluation e) {
  if (options_.before_test_evaluation_stored) {
    options_.before_test_evaluation_stored(job.id(), version);
  }
  RETURN_IF_ERROR(FenceRun(job.id()));
  const std::string& model = job.request().output_model();
  // A record holds at most common::kMaxRecordBytes: with many classes the
  // confusion matrix, then the per-class rows, give way to the summary.
  const bool had_confusion = e.confusion_size() > 0;
  absl::Status st = models_->SetTestEvaluation(model, version, e);
  if (st.ok()) {
    return had_confusion ? std::string()
                         : std::string("; without a confusion matrix (too many classes)");
  }
  if (!absl::IsInvalidArgument(st) || (!had_confusion && e.classes_size() == 0)) return st;
  e.clear_confusion();
  e.clear_predicted_classes();
  st = models_->SetTestEvaluation(model, version, e);
  if (st.ok()) {
    return std::string("; stored without its confusion matrix (too large for the catalogue)");
  }
  if (!absl::IsInvalidArgument(st)) return st;
  e.clear_classes();
  RETURN_IF_ERROR(models_->SetTestEvaluation(model, version, e));
  return std::string(
      "; stored as a summary only (the per-class figures are too large for "
      "the catalogue)");
}

absl::StatusOr<std::vector<std::string>> JobManager::PreviousDatasets(
    const kaizen::v1::StartFineTuneRequest& request, const kaizen::v1::Model& base, bool text) {
  const auto& named = request.incremental().previous_datasets();
  if (!named.empty()) {
    for (const std::string& name : named) {
      absl::StatusOr<kaizen::v1::Dataset> info = datasets_->Get(name);
      if (!info.ok()) {
        return absl::Status(info.status().code(), absl::StrCat("incremental.previous_datasets: ",
                                                               info.status().message()));
      }
      if (text && !store::IsTextDataset(*info)) {
        return absl::InvalidArgumentError(absl::StrCat("incremental.previous_datasets: dataset \"",
                                                       name,
                                                       "\" holds images; a text job's exemplars "
                                                       "come from text datasets"));
      }
      if (!text) {
        RETURN_IF_ERROR(store::RequireImageDataset(*info, "incremental.previous_datasets"));
      }
    }
    return std::vector<std::string>(named.begin(), named.end());
  }
  if (base.job_id().empty()) {
    return absl::NotFoundError("no job that trained it is recorded");
  }
  absl::StatusOr<Job> trained_by = jobs_->Get(base.job_id());
  if (!trained_by.ok()) {
    return absl::NotFoundError(
        absl::StrCat("the job that trained it, ", base.job_id(), ", is no longer recorded"));
  }
  const std::string& dataset = trained_by->request().dataset();
  if (!datasets_->Get(dataset).ok()) {
    return absl::NotFoundError(
        absl::StrCat("the dataset it was trained on, \"", dataset, "\", is gone"));
  }
  return std::vector<std::string>{dataset};
}

absl::StatusOr<kaizen::v1::IncrementalResult> JobManager::CheckIncrementalBase(
    const kaizen::v1::StartFineTuneRequest& request, uint64_t seed,
    std::vector<std::string>* previous_datasets, bool text) {
  previous_datasets->clear();
  ASSIGN_OR_RETURN(const kaizen::v1::Model base,
                   TrainedModel("base_model", request.base_model(),
                                " and has no class names; STRATEGY_INCREMENTAL continues a "
                                "fine-tuned model, or one uploaded with class_names"));
  const std::string& name = base.name();
  const std::string ref = absl::StrCat(name, ":", base.version());
  if (base.class_names().empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "base_model \"", ref,
        "\" has no class names; STRATEGY_INCREMENTAL continues a model with a class list (a "
        "fine-tuned model, or one uploaded with class_names)"));
  }
  ASSIGN_OR_RETURN(const kaizen::v1::IncrementalOptions o,
                   training::ResolveIncremental(request.strategy(), request.incremental(), seed));
  kaizen::v1::IncrementalResult inc;
  inc.set_base_model(name);
  inc.set_base_version(base.version());
  *inc.mutable_old_classes() = base.class_names();
  if (o.disable_rehearsal()) {
    inc.set_memory_source("none (rehearsal off)");
    return inc;
  }
  // The memory keeps at least one exemplar of every class of the merged list.
  ASSIGN_OR_RETURN(const kaizen::v1::Dataset dataset, datasets_->Get(request.dataset()));
  std::set<std::string> merged(base.class_names().begin(), base.class_names().end());
  for (const kaizen::v1::ClassCount& c : dataset.classes()) merged.insert(c.class_name());
  if (o.max_exemplars() < static_cast<int64_t>(merged.size())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "incremental.max_exemplars ", o.max_exemplars(), " is fewer than the ", merged.size(),
        " classes of ", ref, " and dataset \"", request.dataset(),
        "\" together; the rehearsal memory keeps at least one exemplar of every class"));
  }
  if (!text) {
    ASSIGN_OR_RETURN(const bool has_memory, models_->HasExemplars(name, base.version()));
    if (has_memory) {
      inc.set_memory_source(absl::StrCat("the memory of ", ref));
      return inc;
    }
  }
  absl::StatusOr<std::vector<std::string>> previous = PreviousDatasets(request, base, text);
  if (absl::IsNotFound(previous.status()) && request.incremental().previous_datasets().empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "base_model \"", ref,
        text ? "\"'s training texts cannot be found: "
             : "\" has no rehearsal memory (no INCREMENTAL job wrote it) and its training images "
               "cannot be found: ",
        previous.status().message(),
        "; name the datasets it was trained on in incremental.previous_datasets, or set "
        "incremental.disable_rehearsal"));
  }
  if (!previous.ok()) return previous.status();
  for (const std::string& d : *previous) {
    const char* field = d == request.dataset()        ? "dataset"
                        : d == request.test_dataset() ? "test_dataset"
                                                      : nullptr;
    if (field == nullptr) continue;
    return absl::InvalidArgumentError(absl::StrCat(
        "the old classes' exemplars would be chosen from \"", d, "\", which is also the job's ",
        field, ": its ", text ? "texts" : "images", " would be replayed as training ",
        text ? "texts" : "images",
        std::string(field) == "dataset" && !text ? " and its validation images with them" : "",
        "; name the datasets ", ref, " was trained on in incremental.previous_datasets"));
  }
  inc.set_memory_source(absl::StrCat("datasets ", absl::StrJoin(*previous, ", ")));
  *previous_datasets = std::move(*previous);
  return inc;
}

absl::Status JobManager::LoadIncremental(Job* job, bool resuming, training::TrainerOptions* opts,
                                         datasets::DecodedDataset* train,
                                         std::optional<datasets::DecodedDataset>* validation,
                                         IncrementalData* memories) {
  const kaizen::v1::IncrementalResult& inc = job->incremental();
  const std::string ref = absl::StrCat(inc.base_model(), ":", inc.base_version());
  if (inc.base_model().empty() || inc.base_version() <= 0) {
    return absl::FailedPreconditionError(
        "this INCREMENTAL job has no resolved base version; submit it again");
  }
  training::TrainerOptions::Incremental o;
  RETURN_IF_ERROR(
      LoadPinned("base", inc.base_model(), inc.base_version(), &o.previous, &o.previous_metadata));
  if (!resuming) {
    opts->base = o.previous;
    opts->base_metadata = o.previous_metadata;
  }
  ASSIGN_OR_RETURN(o.options, training::ResolveIncremental(job->request().strategy(),
                                                           job->request().incremental(),
                                                           job->resolved_hyperparameters().seed()));
  const std::vector<std::string> old(inc.old_classes().begin(), inc.old_classes().end());
  const std::vector<std::string> merged = training::MergeClassNames(old, train->class_names);
  constexpr int64_t kAll = std::numeric_limits<int64_t>::max();
  *train = training::ShrinkMemory(*train, merged, kAll);
  if (*validation) **validation = training::ShrinkMemory(**validation, merged, kAll);
  if (!o.options.disable_rehearsal()) {
    absl::StatusOr<datasets::DecodedDataset> memory =
        models_->ReadExemplars(inc.base_model(), inc.base_version());
    if (memory.ok()) {
      memories->memory = std::move(*memory);
      o.memory = &*memories->memory;
    } else if (absl::IsNotFound(memory.status())) {
      absl::StatusOr<std::vector<std::string>> previous =
          PreviousDatasets(job->request(), o.previous_metadata, /*text=*/false);
      if (!previous.ok()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "the base ", ref, " has no rehearsal memory and its training images cannot be found: ",
            previous.status().message(),
            "; name them in incremental.previous_datasets, or set incremental.disable_rehearsal"));
      }
      datasets::DecodedDataset source;
      source.class_names = old;
      for (const std::string& name : *previous) {
        ASSIGN_OR_RETURN(const datasets::DecodedDataset d, datasets_->Load(name));
        training::AppendByName(d, kAll, &source);
      }
      memories->memory_source = std::move(source);
      o.memory_source = &*memories->memory_source;
    } else {
      return memory.status();
    }
    if (resuming) {
      absl::StatusOr<datasets::DecodedDataset> stored =
          models_->ReadExemplars(job->request().output_model(), job->latest_version());
      if (stored.ok()) {
        memories->resume_memory = std::move(*stored);
        o.resume_memory = &*memories->resume_memory;
      }
    }
  }
  PublishMessage(
      job->id(),
      absl::StrFormat(
          "incremental: continuing %s (%d classes) with %d new classes [%s]; "
          "rehearsal %s, distillation %s%s",
          ref, old.size(), merged.size() - old.size(),
          absl::StrJoin(merged.begin() + old.size(), merged.end(), ", "),
          o.options.disable_rehearsal()
              ? std::string("off")
              : absl::StrFormat(
                    "on (%d exemplars per class at most, %s; old classes "
                    "from %s)",
                    training::ExemplarsPerClass(o.options.exemplars_per_class(),
                                                o.options.max_exemplars(), merged.size()),
                    kaizen::v1::ExemplarSelection_Name(o.options.selection()), inc.memory_source()),
          o.options.disable_distillation()
              ? std::string("off")
              : absl::StrFormat("on (T %g, weight %g)", o.options.temperature(),
                                o.options.distillation_weight()),
          resuming ? "; the base was reloaded to resume" : ""));
  opts->incremental = std::move(o);
  return absl::OkStatus();
}

void JobManager::ReportIncremental(Job* job, const training::TrainResult& result) {
  kaizen::v1::IncrementalResult* r = job->mutable_incremental();
  const training::TrainResult::Incremental& t = result.incremental;
  r->set_memory_size(t.memory ? static_cast<int64_t>(t.memory->records.size()) : 0);
  if (t.old_examples + t.new_examples > 0) {
    r->set_evaluated_on("validation images");
    r->set_old_examples(t.old_examples);
    r->set_new_examples(t.new_examples);
    r->set_old_accuracy_before(t.old_accuracy_before);
    r->set_new_accuracy_before(t.new_accuracy_before);
    r->set_all_accuracy_before(t.all_accuracy_before);
    r->set_old_accuracy_after(result.last.old_class_accuracy());
    r->set_new_accuracy_after(result.last.new_class_accuracy());
    r->set_all_accuracy_after(result.last.val_accuracy());
    r->set_forgetting(t.old_examples > 0 ? r->old_accuracy_before() - r->old_accuracy_after() : 0);
    PublishMessage(
        job->id(),
        absl::StrFormat(
            "incremental: on the validation images, %s:%d before -> version %d after: "
            "old classes %s, new classes %.1f%% -> %.1f%% (%d), all %.1f%% -> %.1f%%; "
            "%d exemplars stored with each version",
            r->base_model(), r->base_version(), job->latest_version(),
            t.old_examples > 0
                ? absl::StrFormat("%.1f%% -> %.1f%% (%d images, forgetting %.1f "
                                  "points)",
                                  100 * r->old_accuracy_before(), 100 * r->old_accuracy_after(),
                                  t.old_examples, 100 * r->forgetting())
                : std::string("unmeasured (the new data has none of them; name a "
                              "test_dataset)"),
            100 * r->new_accuracy_before(), 100 * r->new_accuracy_after(), t.new_examples,
            100 * r->all_accuracy_before(), 100 * r->all_accuracy_after(), r->memory_size()));
  }
  if (absl::Status st = Persist(job); !st.ok()) {
    common::LogWarning("cannot record the incremental result",
                       {{"job", job->id()}, {"error", st.ToString()}});
  }
}

absl::Status JobManager::EvaluateIncrementalOnTestDataset(
    Job* job, const kaizen::v1::Evaluation& latest, const std::function<bool()>& should_stop) {
  kaizen::v1::IncrementalResult* r = job->mutable_incremental();
  const std::string& test = job->request().test_dataset();
  const std::vector<std::string> old(r->old_classes().begin(), r->old_classes().end());
  // The base predicts its own classes only: it is scored on the test images
  // of those (each counted wrong on the others, which it cannot name).
  absl::StatusOr<kaizen::v1::Evaluation> before = [&]() -> absl::StatusOr<kaizen::v1::Evaluation> {
    ASSIGN_OR_RETURN(const datasets::DecodedDataset data, datasets_->Load(test));
    const datasets::DecodedDataset old_images =
        training::ShrinkMemory(data, old, std::numeric_limits<int64_t>::max());
    if (old_images.records.empty()) {
      return absl::FailedPreconditionError("it has none of the base's classes");
    }
    ASSIGN_OR_RETURN(const torch::jit::Module module,
                     models_->LoadModule(r->base_model(), r->base_version()));
    ASSIGN_OR_RETURN(const kaizen::v1::Model metadata,
                     models_->Get(r->base_model(), r->base_version()));
    training::EvaluateOptions eo;
    eo.device = torch::Device(job->device());
    eo.should_stop = should_stop;
    return training::EvaluateClassifier(module, metadata, old_images, eo);
  }();
  if (absl::IsCancelled(before.status())) return before.status();
  if (!before.ok()) {
    PublishMessage(job->id(), absl::StrCat("incremental: test dataset ", test, ": the base ",
                                           r->base_model(), ":", r->base_version(),
                                           " was not evaluated: ", before.status().message()));
    return absl::OkStatus();
  }
  // The latest version, by class: recall * support images right.
  double correct[2] = {0, 0};
  int64_t seen[2] = {0, 0};
  for (const kaizen::v1::ClassEvaluation& c : latest.classes()) {
    const int which = std::find(old.begin(), old.end(), c.name()) != old.end() ? 0 : 1;
    seen[which] += c.support();
    correct[which] += std::round(c.recall() * static_cast<double>(c.support()));
  }
  auto ratio = [](double a, int64_t b) { return b > 0 ? a / static_cast<double>(b) : 0.0; };
  const double base_correct = before->accuracy() * static_cast<double>(before->examples());
  r->set_evaluated_on(absl::StrCat("test dataset ", test));
  r->set_old_examples(seen[0]);
  r->set_new_examples(seen[1]);
  r->set_old_accuracy_before(before->accuracy());
  r->set_new_accuracy_before(0);
  r->set_all_accuracy_before(ratio(base_correct, seen[0] + seen[1]));
  r->set_old_accuracy_after(ratio(correct[0], seen[0]));
  r->set_new_accuracy_after(ratio(correct[1], seen[1]));
  r->set_all_accuracy_after(latest.accuracy());
  r->set_forgetting(r->old_accuracy_before() - r->old_accuracy_after());
  PublishMessage(job->id(),
                 absl::StrFormat("incremental: test dataset %s: %s:%d before -> version %d after: "
                                 "old classes %.1f%% -> %.1f%% (%d images, forgetting %.1f "
                                 "points), new classes %.1f%% -> %.1f%% (%d), all %.1f%% -> %.1f%%",
                                 test, r->base_model(), r->base_version(), job->latest_version(),
                                 100 * r->old_accuracy_before(), 100 * r->old_accuracy_after(),
                                 seen[0], 100 * r->forgetting(), 100 * r->new_accuracy_before(),
                                 100 * r->new_accuracy_after(), seen[1],
                                 100 * r->all_accuracy_before(), 100 * r->all_accuracy_after()));
  return Persist(job);
}

}  // namespace kaizen::jobs
