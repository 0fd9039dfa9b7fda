// What is particular to the SQLite engine; what both engines share is in
// database_test.cc.
#include "server/store/sqlite_db.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "tests/test_util/temp_dir.h"

namespace kaizen::store {
namespace {

class SqliteDbTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<SqliteDb>> db = SqliteDb::Open(dir_.File("t.db"));
    ASSERT_TRUE(db.ok()) << db.status();
    db_ = *std::move(db);
    absl::MutexLock lock(&db_->mutex());
    ASSERT_TRUE(db_->Exec("CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER, b BLOB)").ok());
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

TEST(SqliteDbOpenTest, AnUnopenablePathIsAnError) {
  EXPECT_FALSE(SqliteDb::Open("/nonexistent-dir/kaizen.db").ok());
}

}  // namespace
}  // namespace kaizen::store
