// The SQLite engine of Database: one connection in WAL mode with full fsync,
// prepared statements with typed binds, and errors as absl::Status.
#pragma once

#include <sqlite3.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/store/database.h"

namespace kaizen::store {

class SqliteDb : public Database {
 public:
  // Opens (creating if needed) the database at `path` in WAL mode with
  // synchronous=FULL, so a committed transaction survives a power cut.
  static absl::StatusOr<std::unique_ptr<SqliteDb>> Open(const std::string& path);
  ~SqliteDb() override;

  DatabaseKind kind() const override { return DatabaseKind::kSqlite; }
  absl::Status Exec(absl::string_view sql) override;
  absl::StatusOr<Statement> Prepare(absl::string_view sql) override;

 protected:
  absl::Status BeginWrite() override { return Exec("BEGIN IMMEDIATE"); }

 private:
  explicit SqliteDb(sqlite3* db) : db_(db) {}
  sqlite3* db_;
};

// Maps an SQLite result code to a status: constraint violations become
// ALREADY_EXISTS, a busy database UNAVAILABLE, everything else INTERNAL, with
// SQLite's message.
absl::Status SqliteStatus(sqlite3* db, int rc, absl::string_view context);

}  // namespace kaizen::store
