#include "server/auth/token_file.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace kaizen::auth {
namespace {

using ::testing::HasSubstr;

TEST(TokenFileTest, ParsesNamesRolesAndHashesSkippingCommentsAndBlanks) {
  const std::string text = absl::StrCat("# operators\n\n", TokenFileLine("ops", Role::kAdmin, "t1"),
                                        "\n  ", TokenFileLine("ci", Role::kTrainer, "t2"), "  \n",
                                        TokenFileLine("web", Role::kPredictor, "t3"), "\n",
                                        TokenFileLine("dash", Role::kReader, "t4"));
  absl::StatusOr<TokenTable> table = ParseTokenFile(text, "tokens");
  ASSERT_TRUE(table.ok()) << table.status();
  ASSERT_EQ(table->size(), 4u);
  EXPECT_EQ(table->at(HashToken("t1")).name, "ops");
  EXPECT_EQ(table->at(HashToken("t2")).role, Role::kTrainer);
  EXPECT_EQ(table->at(HashToken("t3")).role, Role::kPredictor);
  EXPECT_EQ(table->at(HashToken("t4")).role, Role::kReader);
  // Only the hash is in the file.
  EXPECT_FALSE(absl::StrContains(text, " t1"));
}

TEST(TokenFileTest, HashIsTheSha256OfTheToken) {
  EXPECT_EQ(HashToken("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(TokenFileLine("a", Role::kReader, "abc"),
            "a reader sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

struct BadFile {
  std::string text;
  std::string expected;
};

class TokenFileRejectsTest : public ::testing::TestWithParam<BadFile> {};

TEST_P(TokenFileRejectsTest, NamesTheLineAndTheProblem) {
  absl::StatusOr<TokenTable> table = ParseTokenFile(GetParam().text, "/etc/kaizen/tokens");
  ASSERT_FALSE(table.ok());
  EXPECT_EQ(table.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(table.status().message(), HasSubstr("/etc/kaizen/tokens"));
  EXPECT_THAT(table.status().message(), HasSubstr(GetParam().expected));
}

const std::string kHash = std::string("sha256:") + std::string(64, 'a');

INSTANTIATE_TEST_SUITE_P(
    Lines, TokenFileRejectsTest,
    ::testing::Values(
        BadFile{"# ok\nci trainer\n", "line 2 has 2 fields"},
        BadFile{"ci trainer " + kHash + " extra\n", "line 1 has 4 fields"},
        BadFile{"ci root " + kHash + "\n", "unknown role \"root\""},
        BadFile{"ci trainer plaintext-token\n", "sha256: and 64 lower-case hex"},
        BadFile{"ci trainer sha256:" + std::string(63, 'a') + "\n", "sha256: and 64"},
        BadFile{"ci trainer sha256:" + std::string(64, 'A') + "\n", "sha256: and 64"},
        BadFile{"c/i trainer " + kHash + "\n", "token name"},
        BadFile{std::string(65, 'n') + " trainer " + kHash + "\n", "token name"},
        BadFile{"ci trainer " + kHash + "\nci reader sha256:" + std::string(64, 'b') + "\n",
                "line 2: token name \"ci\" is used on line 1 too"},
        BadFile{"a trainer " + kHash + "\nb reader " + kHash + "\n", "line 2: the same token hash"},
        BadFile{std::string(600, '#') + "\n", "line 1 is 600 bytes"}));

TEST(TokenFileTest, EnforcesSizeAndCountBudgets) {
  TokenFileLimits limits;
  limits.max_bytes = 100;
  absl::StatusOr<TokenTable> big = ParseTokenFile(std::string(101, '#'), "f", limits);
  ASSERT_FALSE(big.ok());
  EXPECT_THAT(big.status().message(), HasSubstr("the limit is 100"));

  limits = TokenFileLimits();
  limits.max_tokens = 2;
  std::string text;
  for (int i = 0; i < 3; ++i) {
    absl::StrAppend(&text, TokenFileLine(absl::StrCat("t", i), Role::kReader, absl::StrCat(i)),
                    "\n");
  }
  absl::StatusOr<TokenTable> many = ParseTokenFile(text, "f", limits);
  ASSERT_FALSE(many.ok());
  EXPECT_THAT(many.status().message(), HasSubstr("more than 2 tokens"));
}

TEST(TokenFileTest, GeneratedTokensAreLongRandomAndUrlSafe) {
  absl::StatusOr<std::string> a = GenerateToken();
  absl::StatusOr<std::string> b = GenerateToken();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(*a, *b);
  EXPECT_TRUE(absl::StartsWith(*a, "kzn_"));
  EXPECT_EQ(a->size(), 4u + 43u);
  for (char c : *a) {
    EXPECT_TRUE(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-') << *a;
  }
}

}  // namespace
}  // namespace kaizen::auth
