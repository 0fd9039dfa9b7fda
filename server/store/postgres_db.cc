#include "server/store/postgres_db.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace kaizen::store {
namespace {

// Type OIDs from PostgreSQL's catalog (pg_type.dat); stable across versions.
constexpr Oid kBoolOid = 16;
constexpr Oid kByteaOid = 17;
constexpr Oid kInt8Oid = 20;
constexpr Oid kInt2Oid = 21;
constexpr Oid kInt4Oid = 23;
constexpr Oid kTextOid = 25;

struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using Result = std::unique_ptr<PGresult, ResultDeleter>;

// PostgreSQL's binary format is big-endian.
std::string BigEndian64(uint64_t v) {
  std::string out(8, '\0');
  for (int i = 7; i >= 0; --i, v >>= 8) out[i] = static_cast<char>(v & 0xff);
  return out;
}
uint64_t LoadBigEndian(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

std::string Trimmed(const char* message) {
  std::string s = message ? message : "";
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

class PostgresStatement : public Statement::Impl {
 public:
  PostgresStatement(PGconn* conn, std::string sql, int params)
      : conn_(conn), sql_(std::move(sql)), values_(params), types_(params, 0) {}

  void Bind(int index, int64_t value) override {
    Set(index, BigEndian64(static_cast<uint64_t>(value)), kInt8Oid);
  }
  void BindText(int index, absl::string_view text) override {
    Set(index, std::string(text), kTextOid);
  }
  void BindBlob(int index, absl::string_view bytes) override {
    Set(index, std::string(bytes), kByteaOid);
  }

  absl::StatusOr<bool> Step() override {
    if (!result_) {
      if (!bind_error_.ok()) return bind_error_;
      std::vector<const char*> values(values_.size());
      std::vector<int> lengths(values_.size()), formats(values_.size(), 1);
      for (size_t i = 0; i < values_.size(); ++i) {
        if (values_[i]) {
          values[i] = values_[i]->data();
          lengths[i] = static_cast<int>(values_[i]->size());
        }
      }
      result_.reset(PQexecParams(conn_, sql_.c_str(), static_cast<int>(values_.size()),
                                 types_.data(), values.data(), lengths.data(), formats.data(),
                                 /*resultFormat=*/1));
      const ExecStatusType status = PQresultStatus(result_.get());
      if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
        return PostgresStatus(result_.get(), conn_, absl::StrCat("postgres (", sql_, ")"));
      }
      row_ = -1;
    }
    ++row_;
    return row_ < PQntuples(result_.get());
  }

  int64_t ColumnInt(int col) const override {
    if (PQgetisnull(result_.get(), row_, col)) return 0;
    const char* v = PQgetvalue(result_.get(), row_, col);
    switch (PQftype(result_.get(), col)) {
      case kInt8Oid:
        return static_cast<int64_t>(LoadBigEndian(v, 8));
      case kInt4Oid:
        return static_cast<int32_t>(LoadBigEndian(v, 4));
      case kInt2Oid:
        return static_cast<int16_t>(LoadBigEndian(v, 2));
      case kBoolOid:
        return v[0] != 0;
      default:
        return 0;
    }
  }
  std::string ColumnText(int col) const override { return Bytes(col); }
  std::string ColumnBlob(int col) const override { return Bytes(col); }

 private:
  void Set(int index, std::string value, Oid type) {
    if (index < 1 || index > static_cast<int>(values_.size())) {
      bind_error_ = absl::InternalError(
          absl::StrCat("postgres: parameter ", index, " out of range for (", sql_, ")"));
      return;
    }
    values_[index - 1] = std::move(value);
    types_[index - 1] = type;
  }
  std::string Bytes(int col) const {
    if (PQgetisnull(result_.get(), row_, col)) return std::string();
    return std::string(PQgetvalue(result_.get(), row_, col), PQgetlength(result_.get(), row_, col));
  }

  PGconn* conn_;
  std::string sql_;
  std::vector<std::optional<std::string>> values_;
  std::vector<Oid> types_;
  absl::Status bind_error_;
  Result result_;
  int row_ = -1;
};

}  // namespace

std::string PostgresPlaceholders(absl::string_view sql, int* max_index) {
  std::string out;
  int largest = 0;
  char quote = 0;  // inside '…' or "…"
  for (size_t i = 0; i < sql.size(); ++i) {
    const char c = sql[i];
    if (quote) {
      if (c == quote) quote = 0;
      out.push_back(c);
      continue;
    }
    if (c == '\'' || c == '"') {
      quote = c;
      out.push_back(c);
      continue;
    }
    if (c != '?') {
      out.push_back(c);
      continue;
    }
    size_t j = i + 1;
    int number = 0;
    while (j < sql.size() && sql[j] >= '0' && sql[j] <= '9' && number < 100000) {
      number = number * 10 + (sql[j] - '0');
      ++j;
    }
    if (j == i + 1) number = largest + 1;
    largest = std::max(largest, number);
    absl::StrAppend(&out, "$", number);
    i = j - 1;
  }
  if (max_index) *max_index = largest;
  return out;
}

std::string RedactDatabaseUrl(absl::string_view url) {
  // scheme://user:password@host…?…password=…  → *** for both; the last '@'
  // before the query ends the user part (a password may hold '/' or '@').
  std::string out(url);
  const size_t scheme = out.find("://");
  if (scheme != std::string::npos) {
    const size_t start = scheme + 3;
    const size_t query = out.find('?', start);
    const size_t at = out.rfind('@', query == std::string::npos ? std::string::npos : query);
    if (at != std::string::npos && at > start) {
      const size_t colon = out.find(':', start);
      if (colon != std::string::npos && colon < at) out.replace(colon + 1, at - colon - 1, "***");
    }
  }
  for (size_t p = out.find("password="); p != std::string::npos; p = out.find("password=", p + 1)) {
    const size_t value = p + 9;
    const size_t end = out.find_first_of("& ", value);
    out.replace(value, (end == std::string::npos ? out.size() : end) - value, "***");
  }
  return out;
}

absl::Status PostgresStatus(const PGresult* result, PGconn* conn, absl::string_view context) {
  const char* state = result ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : nullptr;
  const std::string message = absl::StrCat(
      context, ": ", Trimmed(result ? PQresultErrorMessage(result) : PQerrorMessage(conn)));
  const absl::string_view code = state ? state : "";
  if (absl::StartsWith(code, "23")) return absl::AlreadyExistsError(message);
  if (PQstatus(conn) != CONNECTION_OK || absl::StartsWith(code, "08") ||
      absl::StartsWith(code, "57P") || code == "40001" || code == "40P01") {
    return absl::UnavailableError(message);
  }
  if (code == "57014") return absl::DeadlineExceededError(message);
  return absl::InternalError(message);
}

absl::StatusOr<std::unique_ptr<PostgresDb>> PostgresDb::Open(const std::string& url) {
  // Keywords before "dbname" are defaults the URL can override.
  const char* keywords[] = {"connect_timeout", "application_name", "options", "dbname", nullptr};
  const char* values[] = {"10", "kaizen", "-c statement_timeout=60000", url.c_str(), nullptr};
  PGconn* conn = PQconnectdbParams(keywords, values, /*expand_dbname=*/1);
  if (conn == nullptr) return absl::ResourceExhaustedError("libpq could not allocate a connection");
  if (PQstatus(conn) != CONNECTION_OK) {
    absl::Status st = absl::UnavailableError(absl::StrCat("cannot connect to PostgreSQL at ",
                                                          RedactDatabaseUrl(url), ": ",
                                                          Trimmed(PQerrorMessage(conn))));
    PQfinish(conn);
    return st;
  }
  std::unique_ptr<PostgresDb> db(new PostgresDb(conn));
  // Warnings (e.g. "relation already exists, skipping") stay out of stderr.
  PQsetNoticeProcessor(
      conn, [](void*, const char*) {}, nullptr);
  return db;
}

PostgresDb::~PostgresDb() { PQfinish(conn_); }

void PostgresDb::EnsureConnected() {
  if (PQstatus(conn_) != CONNECTION_OK) PQreset(conn_);
}

absl::Status PostgresDb::Exec(absl::string_view sql) {
  EnsureConnected();
  const std::string s(sql);
  Result result(PQexec(conn_, s.c_str()));
  const ExecStatusType status = PQresultStatus(result.get());
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    return PostgresStatus(result.get(), conn_, absl::StrCat("postgres (", s, ")"));
  }
  // COMMIT of a transaction that had failed answers ROLLBACK. Not ABORTED:
  // the stores answer that for a write refused because the run's lease is
  // gone, which the job manager takes for a lost run.
  if (s == "COMMIT" && std::strcmp(PQcmdStatus(result.get()), "ROLLBACK") == 0) {
    return absl::InternalError("postgres: the transaction had failed and was rolled back");
  }
  return absl::OkStatus();
}

absl::StatusOr<Statement> PostgresDb::Prepare(absl::string_view sql) {
  EnsureConnected();
  int params = 0;
  std::string translated = PostgresPlaceholders(sql, &params);
  return Statement(std::make_unique<PostgresStatement>(conn_, std::move(translated), params));
}

absl::Status PostgresDb::BeginWrite() {
  // READ COMMITTED whatever the database's default: each statement after the
  // lock then sees what the previous holder committed (a check of one table
  // before a write to another relies on it), which REPEATABLE READ, whose
  // snapshot would be taken by the lock's own statement, would not.
  if (absl::Status st = Exec("BEGIN ISOLATION LEVEL READ COMMITTED"); !st.ok()) return st;
  absl::Status lock = Exec(absl::StrCat("SELECT pg_advisory_xact_lock(", kWriteLockKey, ")"));
  if (!lock.ok()) Exec("ROLLBACK").IgnoreError();
  return lock;
}

}  // namespace kaizen::store
