// The PostgreSQL engine of Database, over libpq: one connection, statements
// sent with PQexecParams (typed binary parameters, binary results), `?`/`?N`
// placeholders rewritten to `$N`. A connection that breaks is reset on the
// next call (the failed call returns UNAVAILABLE; nothing is retried, since a
// write may have landed). Write transactions take one advisory lock, the
// counterpart of SQLite's single writer.
#pragma once

#include <libpq-fe.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/store/database.h"

namespace kaizen::store {

class PostgresDb : public Database {
 public:
  // `url`: a libpq connection URI. Unless it says otherwise, the connection
  // times out after 10 s and each statement after 60 s.
  static absl::StatusOr<std::unique_ptr<PostgresDb>> Open(const std::string& url);
  ~PostgresDb() override;

  DatabaseKind kind() const override { return DatabaseKind::kPostgres; }
  absl::Status Exec(absl::string_view sql) override;
  absl::StatusOr<Statement> Prepare(absl::string_view sql) override;

  // The advisory-lock key that write transactions hold.
  static constexpr int64_t kWriteLockKey = 0x4b61697a656e;  // "Kaizen"

 protected:
  absl::Status BeginWrite() override;

 private:
  explicit PostgresDb(PGconn* conn) : conn_(conn) {}
  // Resets a broken connection before a call.
  void EnsureConnected();
  PGconn* conn_;
};

// SQLite's `?` and `?N` placeholders as PostgreSQL's `$N` (a bare `?` is one
// more than the largest number so far, as in SQLite), outside quoted strings
// and identifiers; `*max_index` gets the largest.
std::string PostgresPlaceholders(absl::string_view sql, int* max_index);

// `url` with any password replaced by "***", for messages and logs.
std::string RedactDatabaseUrl(absl::string_view url);

// A failed libpq result as a status: integrity violations (SQLSTATE class 23)
// ALREADY_EXISTS, connection failures, serialisation failures and deadlocks
// UNAVAILABLE, a statement timeout DEADLINE_EXCEEDED, the rest INTERNAL.
absl::Status PostgresStatus(const PGresult* result, PGconn* conn, absl::string_view context);

}  // namespace kaizen::store
