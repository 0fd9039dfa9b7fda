#include "server/store/database.h"

#include <cctype>

#include "absl/strings/match.h"
#include "server/common/status_macros.h"
#include "server/store/postgres_db.h"
#include "server/store/sqlite_db.h"

namespace kaizen::store {
namespace {

bool IsWordChar(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

// `sql` with every whole-word, upper-case `from` replaced by `to`.
std::string ReplaceWord(absl::string_view sql, absl::string_view from, absl::string_view to) {
  std::string out;
  size_t i = 0;
  while (i < sql.size()) {
    if (sql.substr(i, from.size()) == from && (i == 0 || !IsWordChar(sql[i - 1])) &&
        (i + from.size() == sql.size() || !IsWordChar(sql[i + from.size()]))) {
      out.append(to.data(), to.size());
      i += from.size();
    } else {
      out.push_back(sql[i++]);
    }
  }
  return out;
}

}  // namespace

absl::Status Statement::Run() {
  absl::StatusOr<bool> row = Step();
  if (!row.ok()) return row.status();
  return absl::OkStatus();
}

bool Database::IsPostgresUrl(absl::string_view target) {
  return absl::StartsWith(target, "postgresql://") || absl::StartsWith(target, "postgres://");
}

absl::StatusOr<std::unique_ptr<Database>> Database::Open(const std::string& target) {
  if (IsPostgresUrl(target)) {
    ASSIGN_OR_RETURN(std::unique_ptr<PostgresDb> db, PostgresDb::Open(target));
    return std::unique_ptr<Database>(std::move(db));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<SqliteDb> db, SqliteDb::Open(target));
  return std::unique_ptr<Database>(std::move(db));
}

std::string Database::DdlFor(absl::string_view schema) const {
  if (kind() == DatabaseKind::kSqlite) return std::string(schema);
  return ReplaceWord(ReplaceWord(schema, "INTEGER", "BIGINT"), "BLOB", "BYTEA");
}

absl::string_view Database::NowMillisSql() const {
  return kind() == DatabaseKind::kPostgres
             ? "CAST(FLOOR(EXTRACT(EPOCH FROM clock_timestamp()) * 1000) AS BIGINT)"
             : "CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)";
}

Database::Transaction::Transaction(Database* db) : db_(db) {
  begin_ = db_->BeginWrite();
  done_ = !begin_.ok();
}

Database::Transaction::~Transaction() {
  if (!done_) db_->Exec("ROLLBACK").IgnoreError();
}

absl::Status Database::Transaction::Commit() {
  if (!begin_.ok()) return begin_;
  done_ = true;
  return db_->Exec("COMMIT");
}

}  // namespace kaizen::store
