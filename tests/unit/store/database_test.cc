// The Database interface on both engines: the same statements, binds,
// errors and transactions behave alike on SQLite and PostgreSQL.
#include "server/store/database.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "tests/test_util/postgres.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen::store {
namespace {

using test_util::Engine;
using ::testing::HasSubstr;

class DatabaseTest : public ::testing::TestWithParam<Engine> {
 protected:
  void SetUp() override {
    absl::StatusOr<std::string> target = test_util::CatalogueFor(GetParam(), dir_.File("t.db"));
    ASSERT_TRUE(target.ok()) << target.status();
    target_ = *target;
    db_ = OpenOrDie();
    absl::MutexLock lock(&db_->mutex());
    ASSERT_TRUE(
        db_->Exec(db_->DdlFor("CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER, b BLOB)")).ok());
  }
  std::unique_ptr<Database> OpenOrDie() {
    absl::StatusOr<std::unique_ptr<Database>> db = Database::Open(target_);
    EXPECT_TRUE(db.ok()) << db.status();
    return db.ok() ? *std::move(db) : nullptr;
  }
  static absl::Status Insert(Database* db, const std::string& k, int64_t n, const std::string& b) {
    absl::MutexLock lock(&db->mutex());
    absl::StatusOr<Statement> st = db->Prepare("INSERT INTO t (k, n, b) VALUES (?, ?, ?)");
    if (!st.ok()) return st.status();
    return st->Bind(1, k).Bind(2, n).BindBlob(3, b).Run();
  }
  static int64_t Count(Database* db) {
    absl::MutexLock lock(&db->mutex());
    absl::StatusOr<Statement> st = db->Prepare("SELECT COUNT(*) FROM t");
    EXPECT_TRUE(st.ok()) << st.status();
    absl::StatusOr<bool> row = st->Step();
    EXPECT_TRUE(row.ok() && *row);
    return st->ColumnInt(0);
  }
  test_util::TempDir dir_;
  std::string target_;
  std::unique_ptr<Database> db_;
};

TEST_P(DatabaseTest, OpensTheEngineItsTargetNames) {
  EXPECT_EQ(db_->kind(),
            GetParam() == Engine::kSqlite ? DatabaseKind::kSqlite : DatabaseKind::kPostgres);
}

TEST_P(DatabaseTest, TypedBindsRoundTripIncludingBinaryBlobsAndLargeIntegers) {
  const std::string blob("a\0b\xff", 4);
  ASSERT_TRUE(Insert(db_.get(), "key", int64_t{1} << 40, blob).ok());
  ASSERT_TRUE(Insert(db_.get(), "negative", -7, "").ok());
  absl::MutexLock lock(&db_->mutex());
  absl::StatusOr<Statement> st = db_->Prepare("SELECT k, n, b FROM t WHERE k = ?");
  ASSERT_TRUE(st.ok());
  st->Bind(1, "key");
  ASSERT_TRUE(*st->Step());
  EXPECT_EQ(st->ColumnText(0), "key");
  EXPECT_EQ(st->ColumnInt(1), int64_t{1} << 40);
  EXPECT_EQ(st->ColumnBlob(2), blob);
  EXPECT_FALSE(*st->Step());
  absl::StatusOr<Statement> neg = db_->Prepare("SELECT n FROM t WHERE k = ?1 AND n < ?2");
  ASSERT_TRUE(neg.ok());
  neg->Bind(1, "negative").Bind(2, int64_t{0});
  ASSERT_TRUE(*neg->Step());
  EXPECT_EQ(neg->ColumnInt(0), -7);
}

TEST_P(DatabaseTest, NumberedPlaceholdersRepeatAndUnboundOnesAreNull) {
  {
    absl::MutexLock lock(&db_->mutex());
    absl::StatusOr<Statement> st = db_->Prepare("INSERT INTO t (k, n, b) VALUES (?1, ?2, ?3)");
    ASSERT_TRUE(st.ok());
    ASSERT_TRUE(st->Bind(1, "no-blob").Bind(2, int64_t{3}).Run().ok());  // ?3 stays NULL
  }
  absl::MutexLock lock(&db_->mutex());
  absl::StatusOr<Statement> st =
      db_->Prepare("SELECT COUNT(*) FROM t WHERE (k = ?1 OR k = ?1) AND b IS NULL AND n = ?2");
  ASSERT_TRUE(st.ok());
  st->Bind(1, "no-blob").Bind(2, int64_t{3});
  ASSERT_TRUE(*st->Step());
  EXPECT_EQ(st->ColumnInt(0), 1);
}

TEST_P(DatabaseTest, AConstraintViolationIsAlreadyExists) {
  ASSERT_TRUE(Insert(db_.get(), "key", 1, "").ok());
  absl::Status again = Insert(db_.get(), "key", 2, "");
  EXPECT_EQ(again.code(), absl::StatusCode::kAlreadyExists) << again;
  EXPECT_EQ(Count(db_.get()), 1);
}

TEST_P(DatabaseTest, BadSqlIsInternalWithTheEnginesMessage) {
  absl::MutexLock lock(&db_->mutex());
  absl::StatusOr<Statement> st = db_->Prepare("SELEC nonsense");
  absl::Status s = st.ok() ? st->Run() : st.status();  // PostgreSQL parses when it runs
  ASSERT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(s.message(), HasSubstr("syntax error"));
}

TEST_P(DatabaseTest, ATransactionRollsBackUnlessCommitted) {
  {
    absl::MutexLock lock(&db_->mutex());
    Database::Transaction tx(db_.get());
    ASSERT_TRUE(tx.begin_status().ok()) << tx.begin_status();
    ASSERT_TRUE(db_->Exec("INSERT INTO t (k, n) VALUES ('dropped', 1)").ok());
  }
  EXPECT_EQ(Count(db_.get()), 0);
  {
    absl::MutexLock lock(&db_->mutex());
    Database::Transaction tx(db_.get());
    ASSERT_TRUE(db_->Exec("INSERT INTO t (k, n) VALUES ('kept', 1)").ok());
    ASSERT_TRUE(tx.Commit().ok());
  }
  EXPECT_EQ(Count(db_.get()), 1);
}

TEST_P(DatabaseTest, CommittedRowsSurviveReopening) {
  ASSERT_TRUE(Insert(db_.get(), "durable", 7, "").ok());
  db_.reset();
  db_ = OpenOrDie();
  ASSERT_NE(db_, nullptr);
  EXPECT_EQ(Count(db_.get()), 1);
}

// Two connections (two replicas) that each read the largest n and insert one
// more, many times at once: the write lock serialises the read-then-write,
// so no number is handed out twice.
TEST_P(DatabaseTest, WriteTransactionsOfTwoConnectionsAreSerialised) {
  std::unique_ptr<Database> other = OpenOrDie();
  ASSERT_NE(other, nullptr);
  constexpr int kEach = 40;
  auto take_numbers = [](Database* db, const std::string& who, std::vector<absl::Status>* out) {
    for (int i = 0; i < kEach; ++i) {
      absl::MutexLock lock(&db->mutex());
      Database::Transaction tx(db);
      absl::Status s = tx.begin_status();
      if (s.ok()) {
        absl::StatusOr<Statement> st = db->Prepare(
            "INSERT INTO t (k, n) VALUES (?1, (SELECT COALESCE(MAX(n), 0) + 1 FROM t))");
        s = st.ok() ? st->Bind(1, who + std::to_string(i)).Run() : st.status();
      }
      if (s.ok()) s = tx.Commit();
      out->push_back(s);
    }
  };
  std::vector<absl::Status> a, b;
  std::thread ta(take_numbers, db_.get(), "a", &a);
  std::thread tb(take_numbers, other.get(), "b", &b);
  ta.join();
  tb.join();
  for (const auto& s : a) EXPECT_TRUE(s.ok()) << s;
  for (const auto& s : b) EXPECT_TRUE(s.ok()) << s;
  absl::MutexLock lock(&db_->mutex());
  absl::StatusOr<Statement> st = db_->Prepare("SELECT COUNT(DISTINCT n), MAX(n) FROM t");
  ASSERT_TRUE(st.ok());
  ASSERT_TRUE(*st->Step());
  EXPECT_EQ(st->ColumnInt(0), 2 * kEach);
  EXPECT_EQ(st->ColumnInt(1), 2 * kEach);
}

INSTANTIATE_TEST_SUITE_P(Engines, DatabaseTest,
                         ::testing::Values(Engine::kSqlite, Engine::kPostgres),
                         [](const auto& info) { return test_util::EngineName(info.param); });

}  // namespace
}  // namespace kaizen::store
