#include "server/common/paging.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace kaizen::common
