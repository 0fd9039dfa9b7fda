// A thin RAII wrapper over one SQLite connection: WAL journal, full fsync,
// prepared statements with typed binds, and errors as absl::Status. The
// connection is serialised by a mutex, so one SqliteDb may be shared.
#pragma once

#include <sqlite3.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace kaizen::store {

class Statement {
 public:
  Statement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  Statement(Statement&& o) noexcept : db_(o.db_), stmt_(o.stmt_) { o.stmt_ = nullptr; }
  Statement(const Statement&) = delete;
  ~Statement() { sqlite3_finalize(stmt_); }

  // Binds are 1-based, as in SQLite.
  Statement& Bind(int index, int64_t value);
  Statement& Bind(int index, absl::string_view text);
  Statement& BindBlob(int index, absl::string_view bytes);

  // Advances; true while a row is available.
  absl::StatusOr<bool> Step();
  // Runs to completion, for statements that return no rows.
  absl::Status Run();

  int64_t ColumnInt(int col) const { return sqlite3_column_int64(stmt_, col); }
  std::string ColumnText(int col) const;
  std::string ColumnBlob(int col) const;

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_;
};

class SqliteDb {
 public:
  // Opens (creating if needed) the database at `path` in WAL mode with
  // synchronous=FULL, so a committed transaction survives a power cut.
  static absl::StatusOr<std::unique_ptr<SqliteDb>> Open(const std::string& path);
  ~SqliteDb();

  // Every use of the connection happens under this lock.
  absl::Mutex& mutex() { return mu_; }

  absl::Status Exec(absl::string_view sql);
  absl::StatusOr<Statement> Prepare(absl::string_view sql);

  // Wraps a BEGIN IMMEDIATE ... COMMIT (rolled back unless Commit()).
  class Transaction {
   public:
    explicit Transaction(SqliteDb* db);
    ~Transaction();
    absl::Status Commit();
    const absl::Status& begin_status() const { return begin_; }

   private:
    SqliteDb* db_;
    absl::Status begin_;
    bool done_ = false;
  };

 private:
  explicit SqliteDb(sqlite3* db) : db_(db) {}
  sqlite3* db_;
  absl::Mutex mu_;
};

// Maps an SQLite result code to a status: constraint violations become
// ALREADY_EXISTS, everything else INTERNAL, with SQLite's message.
absl::Status SqliteStatus(sqlite3* db, int rc, absl::string_view context);

}  // namespace kaizen::store
