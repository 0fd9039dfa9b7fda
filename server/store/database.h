// The catalogue's SQL connection, behind one interface with two engines: the
// embedded SQLite file (the default, one machine) and PostgreSQL through
// libpq (several API replicas sharing one database). The stores above it
// write one SQL dialect, the common subset of both: `?`/`?N` placeholders,
// `INSERT … ON CONFLICT`, and `DdlFor` for the two column types that differ.
//
// A connection is serialised by its mutex, so one Database may be shared.
// Writes that read before they write run in a Transaction, which holds the
// database's single write lock (SQLite: BEGIN IMMEDIATE; PostgreSQL: a
// transaction-scoped advisory lock), so both engines serialise them alike.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace kaizen::store {

enum class DatabaseKind { kSqlite, kPostgres };

// A prepared statement with typed binds (1-based) and a row cursor.
class Statement {
 public:
  // One engine's statement.
  class Impl {
   public:
    virtual ~Impl() = default;
    virtual void Bind(int index, int64_t value) = 0;
    virtual void BindText(int index, absl::string_view text) = 0;
    virtual void BindBlob(int index, absl::string_view bytes) = 0;
    virtual absl::StatusOr<bool> Step() = 0;
    virtual int64_t ColumnInt(int col) const = 0;
    virtual std::string ColumnText(int col) const = 0;
    virtual std::string ColumnBlob(int col) const = 0;
  };

  explicit Statement(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

  Statement& Bind(int index, int64_t value) {
    impl_->Bind(index, value);
    return *this;
  }
  Statement& Bind(int index, absl::string_view text) {
    impl_->BindText(index, text);
    return *this;
  }
  Statement& Bind(int index, const char* text) { return Bind(index, absl::string_view(text)); }
  Statement& BindBlob(int index, absl::string_view bytes) {
    impl_->BindBlob(index, bytes);
    return *this;
  }

  // Advances; true while a row is available.
  absl::StatusOr<bool> Step() { return impl_->Step(); }
  // Runs to completion, for statements that return no rows.
  absl::Status Run();

  int64_t ColumnInt(int col) const { return impl_->ColumnInt(col); }
  std::string ColumnText(int col) const { return impl_->ColumnText(col); }
  std::string ColumnBlob(int col) const { return impl_->ColumnBlob(col); }

 private:
  std::unique_ptr<Impl> impl_;
};

class Database {
 public:
  // `target` is a libpq connection URI (postgresql://… or postgres://…) or
  // the path of an SQLite file, created if needed.
  static absl::StatusOr<std::unique_ptr<Database>> Open(const std::string& target);
  static bool IsPostgresUrl(absl::string_view target);

  virtual ~Database() = default;
  virtual DatabaseKind kind() const = 0;

  // Every use of the connection happens under this lock.
  absl::Mutex& mutex() { return mu_; }

  // Runs one or more statements without results (schema, pragmas).
  virtual absl::Status Exec(absl::string_view sql) = 0;
  virtual absl::StatusOr<Statement> Prepare(absl::string_view sql) = 0;

  // `schema` written for SQLite (INTEGER, BLOB) in this engine's types
  // (PostgreSQL: BIGINT, BYTEA).
  std::string DdlFor(absl::string_view schema) const;
  // An SQL expression for the database's clock in Unix milliseconds:
  // PostgreSQL's clock_timestamp() on its server, SQLite's 'now' (this
  // process's clock).
  absl::string_view NowMillisSql() const;

  // Holds the write lock from construction; rolled back unless Commit().
  class Transaction {
   public:
    explicit Transaction(Database* db);
    ~Transaction();
    Transaction(const Transaction&) = delete;
    Transaction& operator=(const Transaction&) = delete;
    absl::Status Commit();
    const absl::Status& begin_status() const { return begin_; }

   private:
    Database* db_;
    absl::Status begin_;
    bool done_ = false;
  };

 protected:
  Database() = default;
  // Starts a transaction holding the database's write lock.
  virtual absl::Status BeginWrite() = 0;

 private:
  absl::Mutex mu_;
};

}  // namespace kaizen::store
