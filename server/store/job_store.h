// Durable fine-tuning jobs and their event logs, in the catalogue's database
// (SQLite or PostgreSQL). The queue order (priority, then age) is a query over this table,
// so a restart loses nothing: jobs that were RUNNING are requeued and resume
// from their last checkpoint.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kaizen/v1/finetune_service.pb.h"
#include "server/store/database.h"

namespace kaizen::store {

// With `db`'s mutex held, in a write transaction: the active job (held,
// QUEUED, RUNNING or PAUSED, of any replica) whose output is model `name`,
// if any. JobStore::Insert and MetadataStore::InsertModel check it in the
// transaction that takes the name.
absl::StatusOr<std::optional<std::string>> ActiveJobWriting(Database* db, const std::string& name);

// With `db`'s mutex held, in a write transaction: whether `owner` holds a
// live lease on job `job_id` at `now_ms`. What fences a run's writes (its
// row, its events, its versions' rows).
absl::StatusOr<bool> LeaseIsLive(Database* db, const std::string& job_id, const std::string& owner,
                                 int64_t now_ms);

class JobStore {
 public:
  // Creates the tables if needed. `db` must outlive the store.
  static absl::StatusOr<std::unique_ptr<JobStore>> Open(Database* db);

  // ALREADY_EXISTS when the id or a non-empty request_id is taken, when
  // another active job (ActiveJobWriting) has the same output model, and,
  // unless `output_may_exist`, when a model of that name exists: checked in
  // the insertion's write transaction, so that across replicas a name goes
  // to one job, or to one upload (MetadataStore::InsertModel). A `held`
  // row is nobody's to claim (its state column is UNSPECIFIED) until the
  // first Update writes the job's state: a replica claiming between the
  // insertion and the job's QUEUED event would be overwritten by that event.
  absl::Status Insert(const kaizen::v1::Job& job, bool held = false, bool output_may_exist = false);
  // Replaces the stored job (state, progress, history...).
  absl::Status Update(const kaizen::v1::Job& job);
  // Update, in one write transaction, only while the stored state column is
  // `from`; false (nothing written) otherwise. For moves into a claimable
  // state: the row's state and proto change together, so a claim that
  // follows cannot be overwritten.
  absl::StatusOr<bool> UpdateIf(const kaizen::v1::Job& job, kaizen::v1::JobState from);
  // Update, in one write transaction, only while `owner` holds a live lease
  // on the job at `now_ms`; false (nothing written) once the lease expired or
  // another replica took it. A running job's row is written through here
  // (JobManager::Persist), so a replica that stalled past its lease cannot
  // overwrite the progress of the one that took the job over.
  absl::StatusOr<bool> UpdateIfLeased(const kaizen::v1::Job& job, const std::string& owner,
                                      int64_t now_ms);
  // Stores `event` and writes `job`'s row together, in one write
  // transaction, only while the row's state column is `from`; false (neither
  // written) otherwise. ALREADY_EXISTS when the event's sequence is taken.
  absl::StatusOr<bool> AppendEventIf(const kaizen::v1::JobEvent& event, const kaizen::v1::Job& job,
                                     kaizen::v1::JobState from);
  // Stores `event` and writes `job`'s row in one write transaction, only
  // while `owner` holds a live lease on the job at `now_ms`; false (neither
  // written) otherwise. ALREADY_EXISTS when the event's sequence is taken. A
  // run's epochs and checkpoints are recorded through here, so that a
  // replica that stalled past its lease right after renewing it cannot tell
  // watchers of a job another replica now runs.
  absl::StatusOr<bool> AppendEventIfLeased(const kaizen::v1::JobEvent& event,
                                           const kaizen::v1::Job& job, const std::string& owner,
                                           int64_t now_ms);
  // As AppendEventIfLeased, with no row to write: a message of the run
  // (what its trainer decided, early stopping), told only while the run
  // still holds the job.
  absl::StatusOr<bool> AppendEventWhileLeased(const kaizen::v1::JobEvent& event,
                                              const std::string& owner, int64_t now_ms);
  absl::StatusOr<kaizen::v1::Job> Get(const std::string& id);
  // The active job (held, QUEUED, RUNNING or PAUSED, of any replica) whose
  // output is model `name`, if any (ActiveJobWriting, oldest first).
  absl::StatusOr<std::optional<std::string>> ActiveWriterOf(const std::string& name);
  absl::StatusOr<std::optional<kaizen::v1::Job>> FindByRequestId(const std::string& request_id);
  // Jobs with their creation sequence (the page cursor), newest first;
  // `before_seq` 0 starts at the newest. Empty `states` means all.
  absl::StatusOr<std::vector<std::pair<int64_t, kaizen::v1::Job>>> List(
      const std::vector<kaizen::v1::JobState>& states, int64_t before_seq, int limit);
  // The next job to run: QUEUED, highest priority, then oldest.
  absl::StatusOr<std::optional<kaizen::v1::Job>> NextQueued();
  // Jobs in any of `states`, oldest first.
  absl::StatusOr<std::vector<kaizen::v1::Job>> InStates(
      const std::vector<kaizen::v1::JobState>& states);

  // How many jobs are in each state (states without jobs are absent), and
  // when the oldest QUEUED job was created.
  struct StateSummary {
    std::map<kaizen::v1::JobState, int64_t> jobs_by_state;
    std::optional<google::protobuf::Timestamp> oldest_queued_create_time;
  };
  absl::StatusOr<StateSummary> SummarizeStates();

  // Appends an event; its sequence must be the job's last plus one.
  absl::Status AppendEvent(const kaizen::v1::JobEvent& event);
  // Events of `job_id` with sequence > after, ascending.
  absl::StatusOr<std::vector<kaizen::v1::JobEvent>> Events(const std::string& job_id,
                                                           int64_t after);
  absl::StatusOr<int64_t> LastSequence(const std::string& job_id);

  // Leases, for several replicas on one database: the replica that claims a
  // job leases it until `now_ms + lease_ms` and renews the lease while it
  // runs the job; a job whose lease runs out (its replica died) is claimed by
  // another. Each claim is one write transaction, so a job is claimed once.
  //
  // The next QUEUED job (highest priority, then oldest), marked RUNNING and
  // leased to `owner`; the returned proto still says QUEUED.
  absl::StatusOr<std::optional<kaizen::v1::Job>> ClaimNext(const std::string& owner, int64_t now_ms,
                                                           int64_t lease_ms);
  // A RUNNING job whose lease expired before `now_ms` (or that has none),
  // other than those in `exclude` (the ones this replica still runs), leased
  // to `owner` instead; `previous_owner` gets the replica that held it. A
  // cancel or pause left on the old lease stays for the new holder. A PAUSED
  // job with an expired lease (its replica died between recording the pause
  // and releasing the lease, e.g. before requeueing a preempted job) is
  // claimed the same way and returned PAUSED, for the new holder to requeue
  // or leave paused and to release.
  absl::StatusOr<std::optional<kaizen::v1::Job>> ClaimExpired(
      const std::string& owner, int64_t now_ms, int64_t lease_ms,
      const std::vector<std::string>& exclude, std::string* previous_owner);
  struct LeaseState {
    bool held = false;    // false: another replica took the job over
    std::string request;  // "cancel" or "pause" asked through another replica
  };
  // Extends the leases `owner` holds on `job_ids` and reports each one's
  // state; a lease that has expired counts as lost (another replica may be
  // taking the job over), so its holder stops the job.
  absl::StatusOr<std::map<std::string, LeaseState>> RenewLeases(
      const std::string& owner, const std::vector<std::string>& job_ids, int64_t now_ms,
      int64_t lease_ms);
  // Moves the job's state column from `from` to `to` in one write
  // transaction; false (nothing changed) when it is not in `from`, e.g. a
  // QUEUED job another replica has just claimed.
  absl::StatusOr<bool> TransitionState(const std::string& job_id, kaizen::v1::JobState from,
                                       kaizen::v1::JobState to);
  // Gives up `owner`'s lease on a job that stopped running and returns the
  // request ("cancel", "pause" or "") left on it since the last renewal.
  absl::StatusOr<std::string> ReleaseLease(const std::string& job_id, const std::string& owner);
  // Leaves `request` for the replica holding a live lease on `job_id` and
  // returns that replica; nullopt when no live lease exists. A lease held by
  // `except_owner` (the asking replica, which applies the request to its own
  // run) is returned with nothing left on it.
  absl::StatusOr<std::optional<std::string>> RequestOfLeaseHolder(
      const std::string& job_id, const std::string& request, int64_t now_ms,
      const std::string& except_owner = "");
  // Leases a RUNNING job whose lease expired before `now_ms` (or that has
  // none: its replica died) to `owner` until `now_ms + lease_ms`, so that no
  // other replica takes it over while `owner` ends it; false (nothing
  // changed) when the job is not RUNNING or a live lease holds it, e.g. a
  // replica that has just taken it over.
  absl::StatusOr<bool> TakeLeaseOfDeadJob(const std::string& job_id, const std::string& owner,
                                          int64_t now_ms, int64_t lease_ms);
  // The database's clock, in Unix milliseconds: PostgreSQL's
  // clock_timestamp() on its server, SQLite's 'now' (this process's clock).
  // Replicas time their leases by it (JobManager), not by their own clocks,
  // so that replicas whose clocks disagree still agree on when a lease ends.
  absl::StatusOr<int64_t> DatabaseMillis();

 private:
  explicit JobStore(Database* db) : db_(db) {}
  // With the database's mutex held: writes the row's state, priority and
  // proto; stores an event; whether the row's state column is `state`.
  absl::Status WriteRow(const kaizen::v1::Job& job);
  absl::Status InsertEvent(const kaizen::v1::JobEvent& event);
  // AppendEventIfLeased, writing `job`'s row too unless it is null.
  absl::StatusOr<bool> AppendLeased(const kaizen::v1::JobEvent& event, const kaizen::v1::Job* job,
                                    const std::string& owner, int64_t now_ms);
  absl::StatusOr<bool> StateIs(const std::string& job_id, kaizen::v1::JobState state);
  Database* db_;
};

}  // namespace kaizen::store
