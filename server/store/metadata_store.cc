#include "server/store/metadata_store.h"

#include <algorithm>
#include <map>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/common/atomic_file.h"
#include "server/common/status_macros.h"
#include "server/common/text_limits.h"
#include "server/store/job_store.h"

namespace kaizen::store {
namespace {

constexpr char kSchema[] = R"sql(
CREATE TABLE IF NOT EXISTS datasets (
  name  TEXT PRIMARY KEY,
  file  TEXT NOT NULL,
  proto BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS models (
  name    TEXT NOT NULL,
  version INTEGER NOT NULL,
  file    TEXT NOT NULL,
  proto   BLOB NOT NULL,
  PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS model_quarantine (
  name    TEXT NOT NULL,
  version INTEGER NOT NULL,
  reason  TEXT NOT NULL,
  PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS model_load_leases (
  name       TEXT NOT NULL,
  version    INTEGER NOT NULL,
  owner      TEXT NOT NULL,
  expires_ms INTEGER NOT NULL,
  PRIMARY KEY (name, version, owner)
);
CREATE TABLE IF NOT EXISTS model_loads (
  name    TEXT NOT NULL,
  version INTEGER NOT NULL,
  owner   TEXT NOT NULL,
  PRIMARY KEY (name, version, owner)
);
CREATE TABLE IF NOT EXISTS model_loading (
  name    TEXT NOT NULL,
  version INTEGER NOT NULL,
  PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS catalogue (
  one INTEGER PRIMARY KEY CHECK (one = 1),
  id  TEXT NOT NULL
);
)sql";

template <typename Proto>
absl::Status ParseRow(const std::string& bytes, absl::string_view what, Proto* out) {
  if (!out->ParseFromString(bytes)) {
    return absl::DataLossError(absl::StrCat("catalogue row for ", what, " is corrupt"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetadataStore>> MetadataStore::Open(const std::string& database) {
  ASSIGN_OR_RETURN(std::unique_ptr<Database> db, Database::Open(database));
  std::unique_ptr<MetadataStore> store(new MetadataStore(std::move(db)));
  RETURN_IF_ERROR(store->CreateSchema());
  return store;
}

absl::Status MetadataStore::CreateSchema() {
  absl::MutexLock lock(&db_->mutex());
  // Under the write lock: replicas starting together create it once.
  Database::Transaction tx(db_.get());
  RETURN_IF_ERROR(tx.begin_status());
  RETURN_IF_ERROR(db_->Exec(db_->DdlFor(kSchema)));
  {
    ASSIGN_OR_RETURN(Statement sel, db_->Prepare("SELECT id FROM catalogue"));
    ASSIGN_OR_RETURN(bool row, sel.Step());
    if (row) catalogue_id_ = sel.ColumnText(0);
  }
  if (catalogue_id_.empty()) {
    catalogue_id_ = common::RandomHex(8);
    // One row at most (the key is 1): replicas agree on the name.
    ASSIGN_OR_RETURN(Statement insert, db_->Prepare("INSERT INTO catalogue(one, id) VALUES(1, ?)"));
    RETURN_IF_ERROR(insert.Bind(1, catalogue_id_).Run());
  }
  return tx.Commit();
}

absl::Status MetadataStore::InsertDataset(const DatasetRow& row) {
  // A row that protobuf cannot parse back would break Get and List for
  // every caller (DATA_LOSS), so none is written.
  RETURN_IF_ERROR(
      common::ValidateRecord(absl::StrCat("dataset \"", row.dataset.name(), "\""), row.dataset));
  absl::MutexLock lock(&db_->mutex());
  ASSIGN_OR_RETURN(Statement st,
                   db_->Prepare("INSERT INTO datasets(name, file, proto) VALUES(?, ?, ?)"));
  absl::Status s = st.Bind(1, row.dataset.name())
                       .Bind(2, row.file)
                       .BindBlob(3, row.dataset.SerializeAsString())
                       .Run();
  if (absl::IsAlreadyExists(s)) {
    return absl::AlreadyExistsError(
        absl::StrCat("dataset \"", row.dataset.name(), "\" already exists"));
  }
  return s;
}

absl::StatusOr<DatasetRow> MetadataStore::GetDataset(const std::string& name) {
  absl::MutexLock lock(&db_->mutex());
  ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT file, proto FROM datasets WHERE name = ?"));
  st.Bind(1, name);
  ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return absl::NotFoundError(absl::StrCat("dataset \"", name, "\" not found"));
  DatasetRow out;
  out.file = st.ColumnText(0);
  RETURN_IF_ERROR(ParseRow(st.ColumnBlob(1), name, &out.dataset));
  return out;
}

absl::StatusOr<bool> MetadataStore::DatasetExists(const std::string& name) {
  absl::MutexLock lock(&db_->mutex());
  ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT 1 FROM datasets WHERE name = ?"));
  st.Bind(1, name);
  return st.Step();
}

absl::StatusOr<std::vector<DatasetRow>> MetadataStore::ListDatasets(const std::string& after,
                                                                    int limit) {
  absl::MutexLock lock(&db_->mutex());
  ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT file, proto, name FROM datasets "
                                              "WHERE name > ? ORDER BY name LIMIT ?"));
  st.Bind(1, after).Bind(2, static_cast<int64_t>(limit));
  std::vector<DatasetRow> out;
  while (true) {
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    DatasetRow r;
    r.file = st.ColumnText(0);
    RETURN_IF_ERROR(ParseRow(st.ColumnBlob(1), st.ColumnText(2), &r.dataset));
    out.push_back(std::move(r));
  }
  return out;
}

absl::StatusOr<DatasetRow> MetadataStore::DeleteDataset(const std::string& name) {
  absl::MutexLock lock(&db_->mutex());
  Database::Transaction tx(db_.get());
  RETURN_IF_ERROR(tx.begin_status());
  ASSIGN_OR_RETURN(Statement sel, db_->Prepare("SELECT file, proto FROM datasets WHERE name = ?"));
  sel.Bind(1, name);
  ASSIGN_OR_RETURN(bool found, sel.Step());
  if (!found) return absl::NotFoundError(absl::StrCat("dataset \"", name, "\" not found"));
  DatasetRow out;
  out.file = sel.ColumnText(0);
  RETURN_IF_ERROR(ParseRow(sel.ColumnBlob(1), name, &out.dataset));
  ASSIGN_OR_RETURN(Statement del, db_->Prepare("DELETE FROM datasets WHERE name = ?"));
  RETURN_IF_ERROR(del.Bind(1, name).Run());
  RETURN_IF_ERROR(tx.Commit());
  return out;
}

absl::Status MetadataStore::InsertModel(const ModelRow& row, bool unless_a_job_writes,
                                        const JobLease* lease) {
  // Class names from a model file's own metadata arrive here too.
  RETURN_IF_ERROR(
      common::ValidateRecord(absl::StrCat("model \"", row.model.name(), "\""), row.model));
  absl::MutexLock lock(&db_->mutex());
  // One statement, unless the job tables are checked first.
  std::optional<Database::Transaction> tx;
  if (unless_a_job_writes || lease != nullptr) {
    tx.emplace(db_.get());
    RETURN_IF_ERROR(tx->begin_status());
  }
  if (lease != nullptr) {
    ASSIGN_OR_RETURN(const bool live,
                     LeaseIsLive(db_.get(), lease->job_id, lease->owner, lease->now_ms()));
    if (!live) {
      return absl::AbortedError(absl::StrCat("job ", lease->job_id, " is no longer leased to ",
                                             lease->owner, ": version ", row.model.version(),
                                             " of \"", row.model.name(), "\" not stored"));
    }
  }
  if (unless_a_job_writes) {
    ASSIGN_OR_RETURN(const std::optional<std::string> writer,
                     ActiveJobWriting(db_.get(), row.model.name()));
    if (writer) {
      return absl::AlreadyExistsError(absl::StrCat("model \"", row.model.name(),
                                                   "\" is being written by job ", *writer,
                                                   " (it may run on another replica)"));
    }
  }
  ASSIGN_OR_RETURN(
      Statement st,
      db_->Prepare("INSERT INTO models(name, version, file, proto) VALUES(?, ?, ?, ?)"));
  absl::Status s = st.Bind(1, row.model.name())
                       .Bind(2, row.model.version())
                       .Bind(3, row.file)
                       .BindBlob(4, row.model.SerializeAsString())
                       .Run();
  if (absl::IsAlreadyExists(s)) {
    return absl::AlreadyExistsError(absl::StrCat("model \"", row.model.name(), "\" version ",
                                                 row.model.version(), " already exists"));
  }
  RETURN_IF_ERROR(s);
  return tx ? tx->Commit() : absl::OkStatus();
}

absl::StatusOr<ModelRow> MetadataStore::GetModel(const std::string& name, int64_t version) {
  absl::MutexLock lock(&db_->mutex());
  ASSIGN_OR_RETURN(
      Statement st,
      db_->Prepare(version > 0 ? "SELECT file, proto FROM models WHERE name = ? AND version = ?"
                               : "SELECT file, proto FROM models WHERE name = ? "
                                 "ORDER BY version DESC LIMIT 1"));
  st.Bind(1, name);
  if (version > 0) st.Bind(2, version);
  ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) {
    return absl::NotFoundError(version > 0
                                   ? absl::StrCat("model \"", name, "\" has no version ", version)
                                   : absl::StrCat("model \"", name, "\" not found"));
  }
  ModelRow out;
  out.file = st.ColumnText(0);
  RETURN_IF_ERROR(ParseRow(st.ColumnBlob(1), name, &out.model));
  return out;
}

absl::StatusOr<bool> MetadataStore::ModelExists(const std::string& name) {
  absl::MutexLock lock(&db_->mutex());
  ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT 1 FROM models WHERE name = ? LIMIT 1"));
  st.Bind(1, name);
  return st.Step();
}

absl::StatusOr<std::vector<int64_t>> MetadataStore::ModelVersions(const std::string& name) {
  absl::MutexLock lock(&db_->mutex());
  ASSIGN_OR_RETURN(Statement st,
                   db_->Prepare("SELECT version FROM models WHERE name = ? ORDER BY version"));
  st.Bind(1, name);
  std::vector<int64_t> out;
  while (true) {
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    out.push_back(st.ColumnInt(0));
  }
  return out;
}

absl::StatusOr<std::vector<ModelRow>> MetadataStore::ListModels(const std::string& after_name,
                                                                int64_t after_version, int limit,
                                                                bool latest_only,
                                                                const std::string& only_name) {
  absl::MutexLock lock(&db_->mutex());
  std::string sql =
      "SELECT file, proto, name FROM models m WHERE (name > ?1 OR (name = ?1 AND version > ?2))";
  if (latest_only) {
    sql += " AND version = (SELECT MAX(version) FROM models WHERE name = m.name)";
  }
  if (!only_name.empty()) sql += " AND name = ?4";
  sql += " ORDER BY name, version LIMIT ?3";
  ASSIGN_OR_RETURN(Statement st, db_->Prepare(sql));
  st.Bind(1, after_name).Bind(2, after_version).Bind(3, static_cast<int64_t>(limit));
  if (!only_name.empty()) st.Bind(4, only_name);
  std::vector<ModelRow> out;
  while (true) {
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    ModelRow r;
    r.file = st.ColumnText(0);
    RETURN_IF_ERROR(ParseRow(st.ColumnBlob(1), st.ColumnText(2), &r.model));
    out.push_back(std::move(r));
  }
  return out;
}

absl::StatusOr<std::vector<ModelRow>> MetadataStore::DeleteModel(const std::string& name,
                                                                 int64_t version,
                                                                 absl::string_view only_sha256) {
  absl::MutexLock lock(&db_->mutex());
  Database::Transaction tx(db_.get());
  RETURN_IF_ERROR(tx.begin_status());
  const char* where = version > 0 ? " WHERE name = ?1 AND version = ?2" : " WHERE name = ?1";
  ASSIGN_OR_RETURN(Statement sel, db_->Prepare(absl::StrCat("SELECT file, proto FROM models", where,
                                                            " ORDER BY version")));
  sel.Bind(1, name);
  if (version > 0) sel.Bind(2, version);
  std::vector<ModelRow> out;
  while (true) {
    ASSIGN_OR_RETURN(bool row, sel.Step());
    if (!row) break;
    ModelRow r;
    r.file = sel.ColumnText(0);
    RETURN_IF_ERROR(ParseRow(sel.ColumnBlob(1), name, &r.model));
    out.push_back(std::move(r));
  }
  if (out.empty()) {
    return absl::NotFoundError(version > 0
                                   ? absl::StrCat("model \"", name, "\" has no version ", version)
                                   : absl::StrCat("model \"", name, "\" not found"));
  }
  if (!only_sha256.empty() && (version <= 0 || out[0].model.sha256() != only_sha256)) {
    return absl::NotFoundError(absl::StrCat("version ", version, " of model \"", name,
                                            "\" is no longer the file with SHA-256 ", only_sha256));
  }
  // A version number can be handed out again after a deletion: its
  // quarantine goes with it.
  for (const char* table :
       {"models", "model_quarantine", "model_load_leases", "model_loads", "model_loading"}) {
    ASSIGN_OR_RETURN(Statement del, db_->Prepare(absl::StrCat("DELETE FROM ", table, where)));
    del.Bind(1, name);
    if (version > 0) del.Bind(2, version);
    RETURN_IF_ERROR(del.Run());
  }
  RETURN_IF_ERROR(tx.Commit());
  return out;
}

absl::Status MetadataStore::SetTestEvaluation(const std::string& name, int64_t version,
                                              const kaizen::v1::Evaluation& evaluation) {
  absl::MutexLock lock(&db_->mutex());
  Database::Transaction tx(db_.get());
  RETURN_IF_ERROR(tx.begin_status());
  ModelRow row;
  {
    ASSIGN_OR_RETURN(Statement st,
                     db_->Prepare("SELECT proto FROM models WHERE name = ? AND version = ?"));
    st.Bind(1, name).Bind(2, version);
    ASSIGN_OR_RETURN(bool found, st.Step());
    if (!found) {
      return absl::NotFoundError(absl::StrCat("model \"", name, "\" has no version ", version));
    }
    RETURN_IF_ERROR(ParseRow(st.ColumnBlob(0), name, &row.model));
  }
  *row.model.mutable_test_evaluation() = evaluation;
  RETURN_IF_ERROR(common::ValidateRecord(absl::StrCat("model \"", name, "\""), row.model));
  ASSIGN_OR_RETURN(Statement update,
                   db_->Prepare("UPDATE models SET proto = ? WHERE name = ? AND version = ?"));
  RETURN_IF_ERROR(
      update.BindBlob(1, row.model.SerializeAsString()).Bind(2, name).Bind(3, version).Run());
  return tx.Commit();
}

absl::Status MetadataStore::QuarantineModel(const std::string& name, int64_t version,
                                            const std::string& reason) {
  absl::MutexLock lock(&db_->mutex());
  return WriteQuarantine(name, version, reason);
}

absl::Status MetadataStore::WriteQuarantine(const std::string& name, int64_t version,
                                            const std::string& reason) {
  ASSIGN_OR_RETURN(
      Statement st,
      db_->Prepare("INSERT INTO model_quarantine(name, version, reason) VALUES(?, ?, ?) "
                   "ON CONFLICT(name, version) DO UPDATE SET reason = excluded.reason"));
  return st.Bind(1, name).Bind(2, version).Bind(3, reason).Run();
}

absl::StatusOr<std::optional<std::string>> MetadataStore::LiftQuarantine(
    const std::string& name, int64_t version, const std::string& reason_prefix) {
  absl::MutexLock lock(&db_->mutex());
  Database::Transaction tx(db_.get());
  RETURN_IF_ERROR(tx.begin_status());
  ASSIGN_OR_RETURN(Statement sel, db_->Prepare("SELECT reason FROM model_quarantine WHERE name = ? "
                                               "AND version = ?"));
  sel.Bind(1, name).Bind(2, version);
  ASSIGN_OR_RETURN(const bool row, sel.Step());
  if (!row || !absl::StartsWith(sel.ColumnText(0), reason_prefix)) return std::nullopt;
  std::string reason = sel.ColumnText(0);
  ASSIGN_OR_RETURN(Statement del,
                   db_->Prepare("DELETE FROM model_quarantine WHERE name = ? AND version = ?"));
  RETURN_IF_ERROR(del.Bind(1, name).Bind(2, version).Run());
  RETURN_IF_ERROR(tx.Commit());
  return reason;
}

absl::StatusOr<std::map<int64_t, std::string>> MetadataStore::QuarantinedVersions(
    const std::string& name) {
  absl::MutexLock lock(&db_->mutex());
  ASSIGN_OR_RETURN(Statement st,
                   db_->Prepare("SELECT version, reason FROM model_quarantine WHERE name = ?"));
  st.Bind(1, name);
  std::map<int64_t, std::string> out;
  while (true) {
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    out[st.ColumnInt(0)] = st.ColumnText(1);
  }
  return out;
}

absl::Status MetadataStore::MarkLoading(const std::string& name, int64_t version,
                                        const std::string& owner, int64_t lease_ms) {
  absl::MutexLock lock(&db_->mutex());
  Database::Transaction tx(db_.get());
  RETURN_IF_ERROR(tx.begin_status());
  ASSIGN_OR_RETURN(Statement st,
                   db_->Prepare(absl::StrCat(
                       "INSERT INTO model_load_leases(name, version, owner, expires_ms) "
                       "VALUES(?1, ?2, ?3, ",
                       db_->NowMillisSql(),
                       " + ?4) ON CONFLICT (name, version, owner) DO UPDATE SET expires_ms = "
                       "excluded.expires_ms")));
  RETURN_IF_ERROR(st.Bind(1, name).Bind(2, version).Bind(3, owner).Bind(4, lease_ms).Run());
  return tx.Commit();
}

absl::Status MetadataStore::ClearLoading(const std::string& name, int64_t version,
                                         const std::string& owner) {
  absl::MutexLock lock(&db_->mutex());
  Database::Transaction tx(db_.get());
  RETURN_IF_ERROR(tx.begin_status());
  ASSIGN_OR_RETURN(Statement st, db_->Prepare("DELETE FROM model_load_leases WHERE name = ? AND "
                                              "version = ? AND owner = ?"));
  RETURN_IF_ERROR(st.Bind(1, name).Bind(2, version).Bind(3, owner).Run());
  return tx.Commit();
}

absl::Status MetadataStore::RenewLoadingMarkers(
    const std::string& owner, int64_t lease_ms,
    const std::vector<std::pair<std::string, int64_t>>& loading) {
  absl::MutexLock lock(&db_->mutex());
  Database::Transaction tx(db_.get());
  RETURN_IF_ERROR(tx.begin_status());
  ASSIGN_OR_RETURN(Statement sel,
                   db_->Prepare("SELECT name, version FROM model_load_leases WHERE owner = ?"));
  sel.Bind(1, owner);
  std::vector<std::pair<std::string, int64_t>> held;
  while (true) {
    ASSIGN_OR_RETURN(bool row, sel.Step());
    if (!row) break;
    held.emplace_back(sel.ColumnText(0), sel.ColumnInt(1));
  }
  for (const auto& [name, version] : held) {
    const bool in_progress =
        std::find(loading.begin(), loading.end(), std::make_pair(name, version)) != loading.end();
    ASSIGN_OR_RETURN(
        Statement st,
        db_->Prepare(
            in_progress
                ? absl::StrCat("UPDATE model_load_leases SET expires_ms = ", db_->NowMillisSql(),
                               " + ?4 WHERE name = ?1 AND version = ?2 AND owner = ?3")
                : std::string("DELETE FROM model_load_leases WHERE name = ?1 AND "
                              "version = ?2 AND owner = ?3")));
    st.Bind(1, name).Bind(2, version).Bind(3, owner);
    if (in_progress) st.Bind(4, lease_ms);
    RETURN_IF_ERROR(st.Run());
  }
  return tx.Commit();
}

absl::StatusOr<std::vector<MetadataStore::LoadingMarker>> MetadataStore::TakeLoadingMarkers(
    const std::string& owner, bool every_owner, int64_t grace_ms, const MarkerReason& reason) {
  return TakeMarkers(every_owner ? Take::kEvery : Take::kOwnAndExpired, owner, grace_ms, reason);
}

absl::StatusOr<std::vector<MetadataStore::LoadingMarker>> MetadataStore::TakeExpiredLoadingMarkers(
    const MarkerReason& reason) {
  {
    absl::MutexLock lock(&db_->mutex());
    ASSIGN_OR_RETURN(Statement any, db_->Prepare(absl::StrCat(
                                        "SELECT 1 FROM model_load_leases WHERE expires_ms < ",
                                        db_->NowMillisSql(), " LIMIT 1")));
    ASSIGN_OR_RETURN(const bool expired, any.Step());
    if (!expired) return std::vector<LoadingMarker>();
  }
  return TakeMarkers(Take::kExpired, "", 0, reason);
}

absl::StatusOr<std::vector<MetadataStore::LoadingMarker>> MetadataStore::TakeMarkers(
    Take which, const std::string& owner, int64_t grace_ms, const MarkerReason& reason) {
  absl::MutexLock lock(&db_->mutex());
  Database::Transaction tx(db_.get());
  RETURN_IF_ERROR(tx.begin_status());
  // Every write of a marker holds the write lock this transaction holds:
  // none is renewed between this read and its removal.
  const std::string expired = absl::StrCat("expires_ms + ", grace_ms, " < ", db_->NowMillisSql());
  struct Source {
    const char* table;
    std::string where;
  };
  std::vector<Source> sources;
  switch (which) {
    case Take::kEvery:
      // The tables of servers from before markers had leases
      // (model_loads, each marker with its owner) and owners
      // (model_loading, a lone server's).
      sources = {{"model_load_leases", ""}, {"model_loads", ""}, {"model_loading", ""}};
      break;
    case Take::kOwnAndExpired:
      // An old replica's marker (model_loads) has no lease to tell whether
      // the replica still lives: only its owner takes it.
      sources = {{"model_load_leases", absl::StrCat(" WHERE owner = ?1 OR ", expired)},
                 {"model_loads", " WHERE owner = ?1"}};
      break;
    case Take::kExpired:
      sources = {{"model_load_leases", absl::StrCat(" WHERE ", expired)}};
      break;
  }
  std::map<std::pair<std::string, int64_t>, std::string> taken;
  for (const Source& source : sources) {
    const bool owned = absl::string_view(source.table) != "model_loading";
    ASSIGN_OR_RETURN(Statement sel,
                     db_->Prepare(absl::StrCat("SELECT name, version", owned ? ", owner" : "",
                                               " FROM ", source.table, source.where)));
    if (which == Take::kOwnAndExpired) sel.Bind(1, owner);
    std::vector<LoadingMarker> rows;
    while (true) {
      ASSIGN_OR_RETURN(bool row, sel.Step());
      if (!row) break;
      rows.push_back({sel.ColumnText(0), sel.ColumnInt(1), owned ? sel.ColumnText(2) : ""});
    }
    for (const LoadingMarker& m : rows) {
      ASSIGN_OR_RETURN(Statement del, db_->Prepare(absl::StrCat("DELETE FROM ", source.table,
                                                                " WHERE name = ?1 AND version = ?2",
                                                                owned ? " AND owner = ?3" : "")));
      del.Bind(1, m.name).Bind(2, m.version);
      if (owned) del.Bind(3, m.owner);
      RETURN_IF_ERROR(del.Run());
      taken.emplace(std::make_pair(m.name, m.version), m.owner);
    }
  }
  std::vector<LoadingMarker> out;
  for (auto& [version, marker_owner] : taken) {
    out.push_back({version.first, version.second, std::move(marker_owner)});
  }
  // Quarantined with the taking, so that a marker is never taken without
  // its quarantine; a version deleted since is not (its number may be
  // handed out again).
  if (reason) {
    for (const LoadingMarker& m : out) {
      ASSIGN_OR_RETURN(Statement exists,
                       db_->Prepare("SELECT 1 FROM models WHERE name = ? AND version = ?"));
      exists.Bind(1, m.name).Bind(2, m.version);
      ASSIGN_OR_RETURN(const bool stored, exists.Step());
      if (!stored) continue;
      RETURN_IF_ERROR(WriteQuarantine(m.name, m.version, reason(m)));
    }
  }
  RETURN_IF_ERROR(tx.Commit());
  return out;
}

absl::StatusOr<std::vector<std::string>> MetadataStore::AllFiles() {
  absl::MutexLock lock(&db_->mutex());
  ASSIGN_OR_RETURN(Statement st,
                   db_->Prepare("SELECT file FROM datasets UNION ALL SELECT file FROM models"));
  std::vector<std::string> out;
  while (true) {
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    out.push_back(st.ColumnText(0));
  }
  return out;
}

}  // namespace kaizen::store
