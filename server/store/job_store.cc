#include "server/store/job_store.h"

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
)sql";

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

absl::StatusOr<std::unique_ptr<JobStore>> JobStore::Open(SqliteDb* db) {
  std::unique_ptr<JobStore> store(new JobStore(db));
  absl::MutexLock lock(&db->mutex());
  RETURN_IF_ERROR(db->Exec(kSchema));
  return store;
}

absl::Status JobStore::Insert(const kaizen::v1::Job& job) {
  absl::MutexLock lock(&db_->mutex());
  ASSIGN_OR_RETURN(
      Statement st,
      db_->Prepare("INSERT INTO jobs(id, seq, state, priority, request_id, proto) VALUES("
                   "?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs), ?2, ?3, ?4, ?5)"));
  st.Bind(1, job.id())
      .Bind(2, static_cast<int64_t>(job.state()))
      .Bind(3, static_cast<int64_t>(job.request().priority()));
  if (!job.request().request_id().empty()) st.Bind(4, job.request().request_id());
  st.BindBlob(5, job.SerializeAsString());
  return st.Run();
}

absl::Status JobStore::Update(const kaizen::v1::Job& job) {
  absl::MutexLock lock(&db_->mutex());
  ASSIGN_OR_RETURN(
      Statement st,
      db_->Prepare("UPDATE jobs SET state = ?2, priority = ?3, proto = ?4 WHERE id = ?1"));
  return st.Bind(1, job.id())
      .Bind(2, static_cast<int64_t>(job.state()))
      .Bind(3, static_cast<int64_t>(job.request().priority()))
      .BindBlob(4, job.SerializeAsString())
      .Run();
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
  ASSIGN_OR_RETURN(Statement st,
                   db_->Prepare("INSERT INTO job_events(job_id, sequence, proto) VALUES(?, ?, ?)"));
  return st.Bind(1, event.job_id())
      .Bind(2, event.sequence())
      .BindBlob(3, event.SerializeAsString())
      .Run();
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

}  // namespace kaizen::store
