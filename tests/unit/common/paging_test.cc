#include "server/common/paging.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace kaizen::common {
namespace {

TEST(Paging, TokensRoundTrip) {
  for (const char* key : {"", "abc", "name\n3"}) {
    auto got = DecodePageToken(EncodePageToken(key));
    ASSERT_TRUE(got.ok());
    EXPECT_EQ(*got, key);
  }
}

TEST(Paging, RejectsForeignTokens) {
  EXPECT_EQ(DecodePageToken("not-a-token").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodePageToken("YWJj").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Paging, ResolvesPageSizes) {
  EXPECT_EQ(*ResolvePageSize(0), kDefaultPageSize);
  EXPECT_EQ(*ResolvePageSize(7), 7);
  EXPECT_EQ(*ResolvePageSize(100000), kMaxPageSize);
  EXPECT_FALSE(ResolvePageSize(-1).ok());
}

TEST(Paging, ResolvesPageRequests) {
  auto first = ResolvePageRequest(0, "");
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->limit, kDefaultPageSize);
  EXPECT_EQ(first->after_key, "");
  auto next = ResolvePageRequest(5, EncodePageToken("k"));
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(next->limit, 5);
  EXPECT_EQ(next->after_key, "k");
  EXPECT_FALSE(ResolvePageRequest(-1, "").ok());
  EXPECT_FALSE(ResolvePageRequest(5, "junk").ok());
}

// Rows are (key, size in bytes); the page collects the keys it takes.
struct PageOf {
  std::vector<std::string> taken;
  absl::StatusOr<std::string> token;
};
PageOf Fill(std::vector<std::pair<std::string, size_t>> rows, int limit, size_t max_bytes) {
  PageOf page;
  page.token = FillPage(
      rows, limit,
      [&](std::pair<std::string, size_t>& row) {
        page.taken.push_back(row.first);
        return row.second;
      },
      [](const std::pair<std::string, size_t>& row) { return row.first; }, max_bytes);
  return page;
}

TEST(Paging, FillPageStopsAtTheLimitAndPointsAfterTheLastRow) {
  PageOf page = Fill({{"a", 1}, {"b", 1}, {"c", 1}}, 2, 100);
  EXPECT_EQ(page.taken, (std::vector<std::string>{"a", "b"}));
  ASSERT_TRUE(page.token.ok());
  EXPECT_EQ(*DecodePageToken(*page.token), "b");
}

TEST(Paging, FillPageLastPageHasNoToken) {
  PageOf page = Fill({{"a", 1}, {"b", 1}}, 2, 100);
  EXPECT_EQ(page.taken.size(), 2u);
  ASSERT_TRUE(page.token.ok());
  EXPECT_EQ(*page.token, "");
  EXPECT_EQ(*Fill({}, 5, 100).token, "");
}

TEST(Paging, FillPageStopsAtTheByteCapButTakesOneRowAlways) {
  PageOf page = Fill({{"a", 60}, {"b", 60}, {"c", 1}}, 10, 100);
  EXPECT_EQ(page.taken, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(*DecodePageToken(*page.token), "b");
  PageOf huge = Fill({{"a", 1000}, {"b", 1}}, 10, 100);
  EXPECT_EQ(huge.taken, (std::vector<std::string>{"a"}));
  EXPECT_EQ(*DecodePageToken(*huge.token), "a");
}

TEST(Paging, FillPagePassesOnAnError) {
  std::vector<int> rows = {1, 2};
  auto token = FillPage(
      rows, 5, [](int) -> absl::StatusOr<size_t> { return absl::InternalError("boom"); },
      [](int row) { return absl::StrCat(row); });
  EXPECT_EQ(token.status().code(), absl::StatusCode::kInternal);
}

}  // namespace
}  // namespace kaizen::common
