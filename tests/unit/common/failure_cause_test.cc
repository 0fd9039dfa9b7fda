#include "server/common/failure_cause.h"

#include <gtest/gtest.h>

namespace kaizen::common {
namespace {

TEST(FailureCauseTest, ACauseTravelsWithTheStatus) {
  absl::Status s = WithCause(absl::InternalError("loss is NaN at step 3"), kCauseDiverged);
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(s.message(), "loss is NaN at step 3");
  EXPECT_EQ(CauseOf(s), std::string(kCauseDiverged));
  // Copies keep it.
  absl::Status copy = s;
  EXPECT_EQ(CauseOf(copy), std::string(kCauseDiverged));
}

TEST(FailureCauseTest, NoCauseUnlessOneWasAttached) {
  EXPECT_EQ(CauseOf(absl::InternalError("x")), std::nullopt);
  EXPECT_EQ(CauseOf(absl::OkStatus()), std::nullopt);
}

TEST(FailureCauseTest, AnOkStatusStaysOkWithoutACause) {
  absl::Status s = WithCause(absl::OkStatus(), kCauseAttemptsExhausted);
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(CauseOf(s), std::nullopt);
}

TEST(FailureCauseTest, TheLastCauseWins) {
  absl::Status s =
      WithCause(WithCause(absl::AbortedError("x"), kCauseDiverged), kCauseAttemptsExhausted);
  EXPECT_EQ(CauseOf(s), std::string(kCauseAttemptsExhausted));
}

}  // namespace
}  // namespace kaizen::common
