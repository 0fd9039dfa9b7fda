#include "server/auth/authenticator.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen::auth {
namespace {

using ::testing::HasSubstr;

constexpr char kUpload[] = "/kaizen.v1.DatasetService/UploadDataset";
constexpr char kDelete[] = "/kaizen.v1.DatasetService/DeleteDataset";

void Write(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  ASSERT_TRUE(out.good());
}

class AuthenticatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.File("tokens");
    Write(path_, absl::StrCat(TokenFileLine("ci", Role::kTrainer, "ci-secret"), "\n",
                              TokenFileLine("dash", Role::kReader, "dash-secret"), "\n"));
    Authenticator::Options options;
    options.tokens_file = path_;
    absl::StatusOr<std::unique_ptr<Authenticator>> auth = Authenticator::Create(options);
    ASSERT_TRUE(auth.ok()) << auth.status();
    auth_ = *std::move(auth);
  }

  test_util::TempDir dir_;
  std::string path_;
  std::unique_ptr<Authenticator> auth_;
};

TEST_F(AuthenticatorTest, KnownTokenWithAnAllowedRoleIsTheCaller) {
  absl::StatusOr<Caller> caller = auth_->Authorize("Bearer ci-secret", kUpload);
  ASSERT_TRUE(caller.ok()) << caller.status();
  EXPECT_EQ(caller->name, "ci");
  EXPECT_EQ(caller->role, Role::kTrainer);
  // The scheme is case-insensitive (RFC 6750).
  EXPECT_TRUE(auth_->Authorize("bearer ci-secret", kUpload).ok());
}

TEST_F(AuthenticatorTest, MissingMalformedAndUnknownTokensAreUnauthenticated) {
  for (std::optional<absl::string_view> header :
       {std::optional<absl::string_view>(), std::optional<absl::string_view>(""),
        std::optional<absl::string_view>("ci-secret"),
        std::optional<absl::string_view>("Basic Y2k6c2VjcmV0"),
        std::optional<absl::string_view>("Bearer "),
        std::optional<absl::string_view>("Bearer not-a-token")}) {
    absl::StatusOr<Caller> caller = auth_->Authorize(header, kUpload);
    EXPECT_EQ(caller.status().code(), absl::StatusCode::kUnauthenticated)
        << (header ? *header : "(none)");
  }
  const std::string huge = "Bearer " + std::string(10000, 'x');
  EXPECT_EQ(auth_->Authorize(huge, kUpload).status().code(), absl::StatusCode::kUnauthenticated);
}

TEST_F(AuthenticatorTest, RoleThatMayNotCallIsPermissionDeniedNamingRoleAndMethod) {
  absl::StatusOr<Caller> caller = auth_->Authorize("Bearer dash-secret", kDelete);
  ASSERT_EQ(caller.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(caller.status().message(), HasSubstr("role \"reader\""));
  EXPECT_THAT(caller.status().message(), HasSubstr(kDelete));
  // The token itself never appears in a message.
  EXPECT_THAT(std::string(caller.status().message()), ::testing::Not(HasSubstr("dash-secret")));
}

TEST_F(AuthenticatorTest, ReloadSwapsTokensAndABadFileKeepsTheOldOnes) {
  Write(path_, TokenFileLine("ci2", Role::kAdmin, "new-secret") + "\n");
  ASSERT_TRUE(auth_->Reload().ok());
  EXPECT_EQ(auth_->token_count(), 1);
  EXPECT_EQ(auth_->Authorize("Bearer ci-secret", kUpload).status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(auth_->Authorize("Bearer new-secret", kDelete).ok());

  Write(path_, "ci2 superuser sha256:1234\n");
  absl::Status bad = auth_->Reload();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.message(), HasSubstr("line 1"));
  EXPECT_TRUE(auth_->Authorize("Bearer new-secret", kDelete).ok());
}

TEST(AuthenticatorNoTokensTest, EverythingIsAllowed) {
  absl::StatusOr<std::unique_ptr<Authenticator>> auth = Authenticator::Create({});
  ASSERT_TRUE(auth.ok());
  EXPECT_FALSE((*auth)->enabled());
  EXPECT_TRUE((*auth)->Authorize(std::nullopt, kDelete).ok());
}

TEST(AuthenticatorNoTokensTest, AMissingOrBadFileStopsCreation) {
  Authenticator::Options options;
  options.tokens_file = "/nonexistent/tokens";
  EXPECT_EQ(Authenticator::Create(options).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace kaizen::auth
