#include "server/store/sqlite_db.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "tests/test_util/temp_dir.h"

namespace kaizen::store {
namespace {

using ::testing::HasSubstr;

class SqliteDbTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<SqliteDb>> db = SqliteDb::Open(dir_.File("t.db"));
    ASSERT_TRUE(db.ok()) << db.status();
    db_ = *std::move(db);
    absl::MutexLock lock(&db_->mutex());
    ASSERT_TRUE(db_->Exec("CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER, b BLOB)").ok());
  }
  // Inserts one row; the caller holds no lock.
  absl::Status Insert(const std::string& k, int64_t n, const std::string& b) {
    absl::MutexLock lock(&db_->mutex());
    absl::StatusOr<Statement> st = db_->Prepare("INSERT INTO t (k, n, b) VALUES (?, ?, ?)");
    if (!st.ok()) return st.status();
    return st->Bind(1, k).Bind(2, n).BindBlob(3, b).Run();
  }
  int64_t Count() {
    absl::MutexLock lock(&db_->mutex());
    absl::StatusOr<Statement> st = db_->Prepare("SELECT COUNT(*) FROM t");
    EXPECT_TRUE(st.ok());
    absl::StatusOr<bool> row = st->Step();
    EXPECT_TRUE(row.ok() && *row);
    return st->ColumnInt(0);
  }
  test_util::TempDir dir_;
  std::unique_ptr<SqliteDb> db_;
};

TEST_F(SqliteDbTest, OpensInWalModeWithFullSync) {
  absl::MutexLock lock(&db_->mutex());
  absl::StatusOr<Statement> mode = db_->Prepare("PRAGMA journal_mode");
  ASSERT_TRUE(mode.ok());
  ASSERT_TRUE(*mode->Step());
  EXPECT_EQ(mode->ColumnText(0), "wal");
  absl::StatusOr<Statement> sync = db_->Prepare("PRAGMA synchronous");
  ASSERT_TRUE(sync.ok());
  ASSERT_TRUE(*sync->Step());
  EXPECT_EQ(sync->ColumnInt(0), 2);  // FULL
}

TEST_F(SqliteDbTest, TypedBindsRoundTripIncludingBinaryBlobs) {
  const std::string blob("a\0b\xff", 4);
  ASSERT_TRUE(Insert("key", int64_t{1} << 40, blob).ok());
  absl::MutexLock lock(&db_->mutex());
  absl::StatusOr<Statement> st = db_->Prepare("SELECT k, n, b FROM t WHERE k = ?");
  ASSERT_TRUE(st.ok());
  st->Bind(1, "key");
  ASSERT_TRUE(*st->Step());
  EXPECT_EQ(st->ColumnText(0), "key");
  EXPECT_EQ(st->ColumnInt(1), int64_t{1} << 40);
  EXPECT_EQ(st->ColumnBlob(2), blob);
  EXPECT_FALSE(*st->Step());
}

TEST_F(SqliteDbTest, AConstraintViolationIsAlreadyExists) {
  ASSERT_TRUE(Insert("key", 1, "").ok());
  absl::Status again = Insert("key", 2, "");
  EXPECT_EQ(again.code(), absl::StatusCode::kAlreadyExists);
}

TEST_F(SqliteDbTest, BadSqlIsInternalWithSqlitesMessage) {
  absl::MutexLock lock(&db_->mutex());
  absl::StatusOr<Statement> st = db_->Prepare("SELEC nonsense");
  ASSERT_EQ(st.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(st.status().message(), HasSubstr("syntax error"));
}

TEST_F(SqliteDbTest, ATransactionRollsBackUnlessCommitted) {
  {
    absl::MutexLock lock(&db_->mutex());
    SqliteDb::Transaction tx(db_.get());
    ASSERT_TRUE(tx.begin_status().ok());
    ASSERT_TRUE(db_->Exec("INSERT INTO t (k, n) VALUES ('dropped', 1)").ok());
  }
  EXPECT_EQ(Count(), 0);
  {
    absl::MutexLock lock(&db_->mutex());
    SqliteDb::Transaction tx(db_.get());
    ASSERT_TRUE(db_->Exec("INSERT INTO t (k, n) VALUES ('kept', 1)").ok());
    ASSERT_TRUE(tx.Commit().ok());
  }
  EXPECT_EQ(Count(), 1);
}

TEST_F(SqliteDbTest, CommittedRowsSurviveReopening) {
  ASSERT_TRUE(Insert("durable", 7, "").ok());
  db_.reset();
  absl::StatusOr<std::unique_ptr<SqliteDb>> db = SqliteDb::Open(dir_.File("t.db"));
  ASSERT_TRUE(db.ok()) << db.status();
  db_ = *std::move(db);
  EXPECT_EQ(Count(), 1);
}

TEST(SqliteDbOpenTest, AnUnopenablePathIsAnError) {
  EXPECT_FALSE(SqliteDb::Open("/nonexistent-dir/kaizen.db").ok());
}

}  // namespace
}  // namespace kaizen::store
