// What is particular to the PostgreSQL engine; what both engines share is in
// database_test.cc.
#include "server/store/postgres_db.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace kaizen::store {
namespace {

using ::testing::HasSubstr;

TEST(PostgresDbTest, PlaceholdersBecomeNumberedOutsideQuotes) {
  int max = 0;
  EXPECT_EQ(PostgresPlaceholders("SELECT ?, ?3, ?, '?' , \"a?\" FROM t WHERE x = ?1", &max),
            "SELECT $1, $3, $4, '?' , \"a?\" FROM t WHERE x = $1");
  EXPECT_EQ(max, 4);
}

TEST(PostgresDbTest, PasswordsAreRedactedFromUrls) {
  EXPECT_EQ(RedactDatabaseUrl("postgresql://kaizen:s3cret@db:5432/kaizen"),
            "postgresql://kaizen:***@db:5432/kaizen");
  EXPECT_EQ(RedactDatabaseUrl("postgresql://kaizen@db/kaizen"), "postgresql://kaizen@db/kaizen");
  EXPECT_EQ(RedactDatabaseUrl("postgresql:///kaizen?host=/tmp"), "postgresql:///kaizen?host=/tmp");
  EXPECT_EQ(RedactDatabaseUrl("postgresql://u:pa/ss@db/k"), "postgresql://u:***@db/k");
  EXPECT_EQ(RedactDatabaseUrl("postgresql://db/k?user=u&password=s3cret&sslmode=require"),
            "postgresql://db/k?user=u&password=***&sslmode=require");
  EXPECT_EQ(RedactDatabaseUrl("jdbc:postgresql://u:s3cret@db/k"), "jdbc:postgresql://u:***@db/k");
}

TEST(PostgresDbTest, AnUnreachableServerIsUnavailableWithoutThePassword) {
  absl::StatusOr<std::unique_ptr<Database>> db = Database::Open(
      "postgresql://kaizen:s3cret@/kaizen?host=/nonexistent-folder&connect_timeout=2");
  ASSERT_EQ(db.status().code(), absl::StatusCode::kUnavailable) << db.status();
  EXPECT_THAT(db.status().message(), HasSubstr("cannot connect to PostgreSQL"));
  EXPECT_THAT(std::string(db.status().message()), ::testing::Not(HasSubstr("s3cret")));
}

}  // namespace
}  // namespace kaizen::store
