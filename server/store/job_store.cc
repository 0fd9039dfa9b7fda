#include "server/store/job_store.h"

#include <algorithm>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/status_macros.h"

namespace kaizen::store {
namespace {

constexpr char kSchema[] = R"sql(
CREATE TABLE IF NOT EXISTS jobs (
  id         TEXT PRIMARY KEY,
  seq        INTEGER NOT NULL UNIQUE,
  state      INTEGER NOT NULL,
  priority   INTEGER NOT NULL,
  request_id TEXT,
  proto      BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_request_id ON jobs(request_id) WHERE request_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs(state, priority DESC, seq);
CREATE TABLE IF NOT EXISTS job_events (
  job_id   TEXT NOT NULL,
  sequence INTEGER NOT NULL,
  proto    BLOB NOT NULL,
  PRIMARY KEY (job_id, sequence)
);
CREATE TABLE IF NOT EXISTS job_leases (
  job_id     TEXT PRIMARY KEY,
  owner      TEXT NOT NULL,
  expires_ms INTEGER NOT NULL,
  request    TEXT NOT NULL DEFAULT ''
);
)sql";

constexpr char kUpsertLease[] =
    "INSERT INTO job_leases(job_id, owner, expires_ms, request) VALUES(?1, ?2, ?3, '') "
    "ON CONFLICT(job_id) DO UPDATE SET owner = excluded.owner, expires_ms = excluded.expires_ms";

absl::StatusOr<kaizen::v1::Job> ParseJob(const std::string& bytes) {
  kaizen::v1::Job job;
  if (!job.ParseFromString(bytes)) return absl::DataLossError("a stored job is corrupt");
  return job;
}

std::string StateList(const std::vector<kaizen::v1::JobState>& states) {
  return absl::StrJoin(states, ",", [](std::string* out, kaizen::v1::JobState s) {
    absl::StrAppend(out, static_cast<int>(s));
  });
}

}  // namespace

absl::StatusOr<std::optional<std::string>> ActiveJobWriting(Database* db, const std::string& name) {
  ASSIGN_OR_RETURN(Statement active,
                   db->Prepare(absl::StrCat(
                       "SELECT proto FROM jobs WHERE state IN (",
                       StateList({kaizen::v1::JOB_STATE_UNSPECIFIED,  // held
                                  kaizen::v1::JOB_STATE_QUEUED, kaizen::v1::JOB_STATE_RUNNING,
                                  kaizen::v1::JOB_STATE_PAUSED}),
                       ") ORDER BY seq")));
  while (true) {
    ASSIGN_OR_RETURN(bool row, active.Step());
    if (!row) return std::optional<std::string>();
    ASSIGN_OR_RETURN(kaizen::v1::Job job, ParseJob(active.ColumnBlob(0)));
    if (job.request().output_model() == name) return std::optional<std::string>(job.id());
  }
}

absl::StatusOr<std::unique_ptr<JobStore>> JobStore::Open(Database* db) {
  std::unique_ptr<JobStore> store(new JobStore(db));
  absl::MutexLock lock(&db->mutex());
  Database::Transaction tx(db);
  RETURN_IF_ERROR(tx.begin_status());
  RETURN_IF_ERROR(db->Exec(db->DdlFor(kSchema)));
  RETURN_IF_ERROR(tx.Commit());
  return store;
}

absl::Status JobStore::Insert(const kaizen::v1::Job& job, bool held, bool output_may_exist) {
  absl::MutexLock lock(&db_->mutex());
  // The write lock makes MAX(seq) + 1 unique with several writers, and the
  // output model of an active job the job's alone across replicas (each
  // replica also reserves it in memory, ModelStore::ReserveName).
  Database::Transaction tx(db_);
  RETURN_IF_ERROR(tx.begin_status());
  const std::string& output = job.request().output_model();
  if (!output.empty()) {
    ASSIGN_OR_RETURN(const std::optional<std::string> writer, ActiveJobWriting(db_, output));
    if (writer) {
      return absl::AlreadyExistsError(
          absl::StrCat("output_model: model \"", output, "\" is being written by job ", *writer));
    }
    if (!output_may_exist) {
      ASSIGN_OR_RETURN(Statement model,
                       db_->Prepare("SELECT 1 FROM models WHERE name = ? LIMIT 1"));
      model.Bind(1, output);
      ASSIGN_OR_RETURN(const bool exists, model.Step());
      if (exists) {
        return absl::AlreadyExistsError(
            absl::StrCat("output_model: model \"", output, "\" already exists"));
      }
    }
  }
  ASSIGN_OR_RETURN(
      Statement st,
      db_->Prepare("INSERT INTO jobs(id, seq, state, priority, request_id, proto) VALUES("
                   "?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs), ?2, ?3, ?4, ?5)"));
  st.Bind(1, job.id())
      .Bind(2, static_cast<int64_t>(held ? kaizen::v1::JOB_STATE_UNSPECIFIED : job.state()))
      .Bind(3, static_cast<int64_t>(job.request().priority()));
  if (!job.request().request_id().empty()) st.Bind(4, job.request().request_id());
  st.BindBlob(5, job.SerializeAsString());
  RETURN_IF_ERROR(st.Run());
  return tx.Commit();
}

absl::Status JobStore::WriteRow(const kaizen::v1::Job& job) {
  ASSIGN_OR_RETURN(
      Statement st,
      db_->Prepare("UPDATE jobs SET state = ?2, priority = ?3, proto = ?4 WHERE id = ?1"));
  return st.Bind(1, job.id())
      .Bind(2, static_cast<int64_t>(job.state()))
      .Bind(3, static_cast<int64_t>(job.request().priority()))
      .BindBlob(4, job.SerializeAsString())
      .Run();
}

absl::StatusOr<bool> JobStore::StateIs(const std::string& job_id, kaizen::v1::JobState state) {
  ASSIGN_OR_RETURN(Statement sel, db_->Prepare("SELECT state FROM jobs WHERE id = ?"));
  sel.Bind(1, job_id);
  ASSIGN_OR_RETURN(bool row, sel.Step());
  return row && sel.ColumnInt(0) == static_cast<int64_t>(state);
}

absl::Status JobStore::Update(const kaizen::v1::Job& job) {
  absl::MutexLock lock(&db_->mutex());
  return WriteRow(job);
}

absl::StatusOr<bool> JobStore::UpdateIf(const kaizen::v1::Job& job, kaizen::v1::JobState from) {
  absl::MutexLock lock(&db_->mutex());
  Database::Transaction tx(db_);
  RETURN_IF_ERROR(tx.begin_status());
  ASSIGN_OR_RETURN(const bool in_from, StateIs(job.id(), from));
  if (!in_from) return false;
  RETURN_IF_ERROR(WriteRow(job));
  RETURN_IF_ERROR(tx.Commit());
  return true;
}

absl::StatusOr<bool> LeaseIsLive(Database* db, const std::string& job_id, const std::string& owner,
                                 int64_t now_ms) {
  ASSIGN_OR_RETURN(Statement sel,
                   db->Prepare("SELECT owner, expires_ms FROM job_leases WHERE job_id = ?"));
  sel.Bind(1, job_id);
  ASSIGN_OR_RETURN(bool row, sel.Step());
  return row && sel.ColumnText(0) == owner && sel.ColumnInt(1) >= now_ms;
}

absl::StatusOr<bool> JobStore::UpdateIfLeased(const kaizen::v1::Job& job, const std::string& owner,
                                              int64_t now_ms) {
  absl::MutexLock lock(&db_->mutex());
  Database::Transaction tx(db_);
  RETURN_IF_ERROR(tx.begin_status());
  ASSIGN_OR_RETURN(const bool live, LeaseIsLive(db_, job.id(), owner, now_ms));
  if (!live) return false;
  RETURN_IF_ERROR(WriteRow(job));
  RETURN_IF_ERROR(tx.Commit());
  return true;
}

absl::StatusOr<std::optional<std::string>> JobStore::ActiveWriterOf(const std::string& name) {
  absl::MutexLock lock(&db_->mutex());
  return ActiveJobWriting(db_, name);
}

absl::StatusOr<kaizen::v1::Job> JobStore::Get(const std::string& id) {
  absl::MutexLock lock(&db_->mutex());
  ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT proto FROM jobs WHERE id = ?"));
  st.Bind(1, id);
  ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return absl::NotFoundError(absl::StrCat("job \"", id, "\" not found"));
  return ParseJob(st.ColumnBlob(0));
}

absl::StatusOr<std::optional<kaizen::v1::Job>> JobStore::FindByRequestId(
    const std::string& request_id) {
  absl::MutexLock lock(&db_->mutex());
  ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT proto FROM jobs WHERE request_id = ?"));
  st.Bind(1, request_id);
  ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return std::optional<kaizen::v1::Job>();
  ASSIGN_OR_RETURN(kaizen::v1::Job job, ParseJob(st.ColumnBlob(0)));
  return std::optional<kaizen::v1::Job>(std::move(job));
}

absl::StatusOr<std::vector<std::pair<int64_t, kaizen::v1::Job>>> JobStore::List(
    const std::vector<kaizen::v1::JobState>& states, int64_t before_seq, int limit) {
  absl::MutexLock lock(&db_->mutex());
  std::string sql = "SELECT proto, seq FROM jobs WHERE (?1 = 0 OR seq < ?1)";
  if (!states.empty()) absl::StrAppend(&sql, " AND state IN (", StateList(states), ")");
  sql += " ORDER BY seq DESC LIMIT ?2";
  ASSIGN_OR_RETURN(Statement st, db_->Prepare(sql));
  st.Bind(1, before_seq).Bind(2, static_cast<int64_t>(limit));
  std::vector<std::pair<int64_t, kaizen::v1::Job>> out;
  while (true) {
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    ASSIGN_OR_RETURN(kaizen::v1::Job job, ParseJob(st.ColumnBlob(0)));
    out.emplace_back(st.ColumnInt(1), std::move(job));
  }
  return out;
}

absl::StatusOr<std::optional<kaizen::v1::Job>> JobStore::NextQueued() {
  absl::MutexLock lock(&db_->mutex());
  ASSIGN_OR_RETURN(
      Statement st,
      db_->Prepare("SELECT proto FROM jobs WHERE state = ? ORDER BY priority DESC, seq LIMIT 1"));
  st.Bind(1, static_cast<int64_t>(kaizen::v1::JOB_STATE_QUEUED));
  ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return std::optional<kaizen::v1::Job>();
  ASSIGN_OR_RETURN(kaizen::v1::Job job, ParseJob(st.ColumnBlob(0)));
  return std::optional<kaizen::v1::Job>(std::move(job));
}

absl::StatusOr<std::vector<kaizen::v1::Job>> JobStore::InStates(
    const std::vector<kaizen::v1::JobState>& states) {
  absl::MutexLock lock(&db_->mutex());
  ASSIGN_OR_RETURN(Statement st,
                   db_->Prepare(absl::StrCat("SELECT proto FROM jobs WHERE state IN (",
                                             StateList(states), ") ORDER BY seq")));
  std::vector<kaizen::v1::Job> out;
  while (true) {
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    ASSIGN_OR_RETURN(kaizen::v1::Job job, ParseJob(st.ColumnBlob(0)));
    out.push_back(std::move(job));
  }
  return out;
}

absl::StatusOr<JobStore::StateSummary> JobStore::SummarizeStates() {
  absl::MutexLock lock(&db_->mutex());
  StateSummary out;
  ASSIGN_OR_RETURN(Statement counts,
                   db_->Prepare("SELECT state, COUNT(*) FROM jobs GROUP BY state"));
  while (true) {
    ASSIGN_OR_RETURN(bool row, counts.Step());
    if (!row) break;
    out.jobs_by_state[static_cast<kaizen::v1::JobState>(counts.ColumnInt(0))] = counts.ColumnInt(1);
  }
  // seq is the creation order.
  ASSIGN_OR_RETURN(Statement oldest,
                   db_->Prepare("SELECT proto FROM jobs WHERE state = ? ORDER BY seq LIMIT 1"));
  oldest.Bind(1, static_cast<int64_t>(kaizen::v1::JOB_STATE_QUEUED));
  ASSIGN_OR_RETURN(bool row, oldest.Step());
  if (row) {
    ASSIGN_OR_RETURN(kaizen::v1::Job job, ParseJob(oldest.ColumnBlob(0)));
    out.oldest_queued_create_time = job.create_time();
  }
  return out;
}

absl::Status JobStore::AppendEvent(const kaizen::v1::JobEvent& event) {
  absl::MutexLock lock(&db_->mutex());
  return InsertEvent(event);
}

absl::Status JobStore::InsertEvent(const kaizen::v1::JobEvent& event) {
  ASSIGN_OR_RETURN(Statement st,
                   db_->Prepare("INSERT INTO job_events(job_id, sequence, proto) VALUES(?, ?, ?)"));
  return st.Bind(1, event.job_id())
      .Bind(2, event.sequence())
      .BindBlob(3, event.SerializeAsString())
      .Run();
}

absl::StatusOr<bool> JobStore::AppendEventIf(const kaizen::v1::JobEvent& event,
                                             const kaizen::v1::Job& job,
                                             kaizen::v1::JobState from) {
  absl::MutexLock lock(&db_->mutex());
  Database::Transaction tx(db_);
  RETURN_IF_ERROR(tx.begin_status());
  ASSIGN_OR_RETURN(const bool in_from, StateIs(job.id(), from));
  if (!in_from) return false;
  RETURN_IF_ERROR(InsertEvent(event));
  RETURN_IF_ERROR(WriteRow(job));
  RETURN_IF_ERROR(tx.Commit());
  return true;
}

absl::StatusOr<bool> JobStore::AppendEventIfLeased(const kaizen::v1::JobEvent& event,
                                                   const kaizen::v1::Job& job,
                                                   const std::string& owner, int64_t now_ms) {
  return AppendLeased(event, &job, owner, now_ms);
}

absl::StatusOr<bool> JobStore::AppendEventWhileLeased(const kaizen::v1::JobEvent& event,
                                                      const std::string& owner, int64_t now_ms) {
  return AppendLeased(event, nullptr, owner, now_ms);
}

absl::StatusOr<bool> JobStore::AppendLeased(const kaizen::v1::JobEvent& event,
                                            const kaizen::v1::Job* job, const std::string& owner,
                                            int64_t now_ms) {
  absl::MutexLock lock(&db_->mutex());
  Database::Transaction tx(db_);
  RETURN_IF_ERROR(tx.begin_status());
  ASSIGN_OR_RETURN(const bool live, LeaseIsLive(db_, event.job_id(), owner, now_ms));
  if (!live) return false;
  RETURN_IF_ERROR(InsertEvent(event));
  if (job != nullptr) RETURN_IF_ERROR(WriteRow(*job));
  RETURN_IF_ERROR(tx.Commit());
  return true;
}

absl::StatusOr<std::vector<kaizen::v1::JobEvent>> JobStore::Events(const std::string& job_id,
                                                                   int64_t after) {
  absl::MutexLock lock(&db_->mutex());
  ASSIGN_OR_RETURN(
      Statement st,
      db_->Prepare(
          "SELECT proto FROM job_events WHERE job_id = ? AND sequence > ? ORDER BY sequence"));
  st.Bind(1, job_id).Bind(2, after);
  std::vector<kaizen::v1::JobEvent> out;
  while (true) {
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    kaizen::v1::JobEvent e;
    if (!e.ParseFromString(st.ColumnBlob(0)))
      return absl::DataLossError("a stored event is corrupt");
    out.push_back(std::move(e));
  }
  return out;
}

absl::StatusOr<int64_t> JobStore::LastSequence(const std::string& job_id) {
  absl::MutexLock lock(&db_->mutex());
  ASSIGN_OR_RETURN(
      Statement st,
      db_->Prepare("SELECT COALESCE(MAX(sequence), 0) FROM job_events WHERE job_id = ?"));
  st.Bind(1, job_id);
  ASSIGN_OR_RETURN(bool row, st.Step());
  return row ? st.ColumnInt(0) : 0;
}

absl::StatusOr<std::optional<kaizen::v1::Job>> JobStore::ClaimNext(const std::string& owner,
                                                                   int64_t now_ms,
                                                                   int64_t lease_ms) {
  absl::MutexLock lock(&db_->mutex());
  Database::Transaction tx(db_);
  RETURN_IF_ERROR(tx.begin_status());
  ASSIGN_OR_RETURN(Statement sel, db_->Prepare("SELECT proto FROM jobs WHERE state = ? "
                                               "ORDER BY priority DESC, seq LIMIT 1"));
  sel.Bind(1, static_cast<int64_t>(kaizen::v1::JOB_STATE_QUEUED));
  ASSIGN_OR_RETURN(bool row, sel.Step());
  if (!row) return std::optional<kaizen::v1::Job>();
  ASSIGN_OR_RETURN(kaizen::v1::Job job, ParseJob(sel.ColumnBlob(0)));
  ASSIGN_OR_RETURN(Statement mark, db_->Prepare("UPDATE jobs SET state = ?2 WHERE id = ?1"));
  RETURN_IF_ERROR(
      mark.Bind(1, job.id()).Bind(2, static_cast<int64_t>(kaizen::v1::JOB_STATE_RUNNING)).Run());
  ASSIGN_OR_RETURN(Statement lease, db_->Prepare(kUpsertLease));
  RETURN_IF_ERROR(lease.Bind(1, job.id()).Bind(2, owner).Bind(3, now_ms + lease_ms).Run());
  RETURN_IF_ERROR(tx.Commit());
  return std::optional<kaizen::v1::Job>(std::move(job));
}

absl::StatusOr<std::optional<kaizen::v1::Job>> JobStore::ClaimExpired(
    const std::string& owner, int64_t now_ms, int64_t lease_ms,
    const std::vector<std::string>& exclude, std::string* previous_owner) {
  absl::MutexLock lock(&db_->mutex());
  Database::Transaction tx(db_);
  RETURN_IF_ERROR(tx.begin_status());
  // A PAUSED job keeps its lease only between its holder recording the
  // pause and releasing the lease: an expired one means the holder died in
  // between.
  ASSIGN_OR_RETURN(Statement sel,
                   db_->Prepare("SELECT j.proto, COALESCE(l.owner, ''), j.state FROM jobs j "
                                "LEFT JOIN job_leases l ON l.job_id = j.id "
                                "WHERE (j.state = ?1 AND (l.job_id IS NULL OR l.expires_ms < ?2)) "
                                "OR (j.state = ?3 AND l.expires_ms < ?2) "
                                "ORDER BY j.priority DESC, j.seq"));
  sel.Bind(1, static_cast<int64_t>(kaizen::v1::JOB_STATE_RUNNING))
      .Bind(2, now_ms)
      .Bind(3, static_cast<int64_t>(kaizen::v1::JOB_STATE_PAUSED));
  std::optional<kaizen::v1::Job> found;
  while (!found) {
    ASSIGN_OR_RETURN(bool row, sel.Step());
    if (!row) return found;
    ASSIGN_OR_RETURN(kaizen::v1::Job job, ParseJob(sel.ColumnBlob(0)));
    if (std::find(exclude.begin(), exclude.end(), job.id()) != exclude.end()) continue;
    if (previous_owner) *previous_owner = sel.ColumnText(1);
    // The column decides: the proto may lag behind a conditional change.
    job.set_state(static_cast<kaizen::v1::JobState>(sel.ColumnInt(2)));
    found = std::move(job);
  }
  ASSIGN_OR_RETURN(Statement lease, db_->Prepare(kUpsertLease));
  RETURN_IF_ERROR(lease.Bind(1, found->id()).Bind(2, owner).Bind(3, now_ms + lease_ms).Run());
  RETURN_IF_ERROR(tx.Commit());
  return found;
}

absl::StatusOr<std::map<std::string, JobStore::LeaseState>> JobStore::RenewLeases(
    const std::string& owner, const std::vector<std::string>& job_ids, int64_t now_ms,
    int64_t lease_ms) {
  std::map<std::string, LeaseState> out;
  if (job_ids.empty()) return out;
  absl::MutexLock lock(&db_->mutex());
  Database::Transaction tx(db_);
  RETURN_IF_ERROR(tx.begin_status());
  for (const std::string& id : job_ids) {
    ASSIGN_OR_RETURN(Statement sel, db_->Prepare("SELECT owner, request, expires_ms "
                                                 "FROM job_leases WHERE job_id = ?"));
    sel.Bind(1, id);
    ASSIGN_OR_RETURN(bool row, sel.Step());
    LeaseState& state = out[id];
    // An expired lease is not renewed: another replica may be taking the
    // job over already.
    if (!row || sel.ColumnText(0) != owner || sel.ColumnInt(2) < now_ms) continue;
    state.held = true;
    state.request = sel.ColumnText(1);
    ASSIGN_OR_RETURN(
        Statement renew,
        // Never shortened: a renewal that waited for the lock behind a later
        // one keeps the later expiry.
        db_->Prepare("UPDATE job_leases SET expires_ms = CASE WHEN expires_ms > ?2 THEN expires_ms "
                     "ELSE ?2 END, request = '' WHERE job_id = ?1"));
    RETURN_IF_ERROR(renew.Bind(1, id).Bind(2, now_ms + lease_ms).Run());
  }
  RETURN_IF_ERROR(tx.Commit());
  return out;
}

absl::StatusOr<bool> JobStore::TransitionState(const std::string& job_id, kaizen::v1::JobState from,
                                               kaizen::v1::JobState to) {
  absl::MutexLock lock(&db_->mutex());
  Database::Transaction tx(db_);
  RETURN_IF_ERROR(tx.begin_status());
  ASSIGN_OR_RETURN(const bool in_from, StateIs(job_id, from));
  if (!in_from) return false;
  ASSIGN_OR_RETURN(Statement set, db_->Prepare("UPDATE jobs SET state = ?2 WHERE id = ?1"));
  RETURN_IF_ERROR(set.Bind(1, job_id).Bind(2, static_cast<int64_t>(to)).Run());
  RETURN_IF_ERROR(tx.Commit());
  return true;
}

absl::StatusOr<std::string> JobStore::ReleaseLease(const std::string& job_id,
                                                   const std::string& owner) {
  absl::MutexLock lock(&db_->mutex());
  Database::Transaction tx(db_);
  RETURN_IF_ERROR(tx.begin_status());
  ASSIGN_OR_RETURN(Statement sel, db_->Prepare("SELECT request FROM job_leases "
                                               "WHERE job_id = ? AND owner = ?"));
  sel.Bind(1, job_id).Bind(2, owner);
  ASSIGN_OR_RETURN(bool row, sel.Step());
  std::string request = row ? sel.ColumnText(0) : std::string();
  ASSIGN_OR_RETURN(Statement st,
                   db_->Prepare("DELETE FROM job_leases WHERE job_id = ? AND owner = ?"));
  RETURN_IF_ERROR(st.Bind(1, job_id).Bind(2, owner).Run());
  RETURN_IF_ERROR(tx.Commit());
  return request;
}

absl::StatusOr<std::optional<std::string>> JobStore::RequestOfLeaseHolder(
    const std::string& job_id, const std::string& request, int64_t now_ms,
    const std::string& except_owner) {
  absl::MutexLock lock(&db_->mutex());
  Database::Transaction tx(db_);
  RETURN_IF_ERROR(tx.begin_status());
  ASSIGN_OR_RETURN(Statement sel, db_->Prepare("SELECT owner FROM job_leases "
                                               "WHERE job_id = ? AND expires_ms >= ?"));
  sel.Bind(1, job_id).Bind(2, now_ms);
  ASSIGN_OR_RETURN(bool row, sel.Step());
  if (!row) return std::optional<std::string>();
  std::string holder = sel.ColumnText(0);
  if (!except_owner.empty() && holder == except_owner) return std::optional<std::string>(holder);
  ASSIGN_OR_RETURN(Statement set,
                   db_->Prepare("UPDATE job_leases SET request = ?2 WHERE job_id = ?1"));
  RETURN_IF_ERROR(set.Bind(1, job_id).Bind(2, request).Run());
  RETURN_IF_ERROR(tx.Commit());
  return std::optional<std::string>(std::move(holder));
}

absl::StatusOr<bool> JobStore::TakeLeaseOfDeadJob(const std::string& job_id,
                                                  const std::string& owner, int64_t now_ms,
                                                  int64_t lease_ms) {
  absl::MutexLock lock(&db_->mutex());
  Database::Transaction tx(db_);
  RETURN_IF_ERROR(tx.begin_status());
  // The same condition as ClaimExpired's, in the same kind of transaction:
  // of a takeover and this, whichever comes second finds a live lease.
  ASSIGN_OR_RETURN(Statement sel,
                   db_->Prepare("SELECT 1 FROM jobs j LEFT JOIN job_leases l ON l.job_id = j.id "
                                "WHERE j.id = ?1 AND j.state = ?2 "
                                "AND (l.job_id IS NULL OR l.expires_ms < ?3)"));
  sel.Bind(1, job_id).Bind(2, static_cast<int64_t>(kaizen::v1::JOB_STATE_RUNNING)).Bind(3, now_ms);
  ASSIGN_OR_RETURN(const bool dead, sel.Step());
  if (!dead) return false;
  ASSIGN_OR_RETURN(Statement lease, db_->Prepare(kUpsertLease));
  RETURN_IF_ERROR(lease.Bind(1, job_id).Bind(2, owner).Bind(3, now_ms + lease_ms).Run());
  RETURN_IF_ERROR(tx.Commit());
  return true;
}

absl::StatusOr<int64_t> JobStore::DatabaseMillis() {
  absl::MutexLock lock(&db_->mutex());
  ASSIGN_OR_RETURN(Statement st, db_->Prepare(absl::StrCat("SELECT ", db_->NowMillisSql())));
  ASSIGN_OR_RETURN(const bool row, st.Step());
  if (!row) return absl::InternalError("the database did not tell its time");
  return st.ColumnInt(0);
}

}  // namespace kaizen::store
