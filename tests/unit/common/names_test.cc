#include "server/common/names.h"

#include <gtest/gtest.h>

namespace kaizen::common {
namespace {

TEST(ValidateName, AcceptsLowerCaseDigitsAndSeparators) {
  EXPECT_TRUE(ValidateName("name", "fashion-mnist_v1.2").ok());
  EXPECT_TRUE(ValidateName("name", "0abc").ok());
}

TEST(ValidateName, RejectsPathTraversalAndSeparators) {
  for (const char* bad : {"../evil", "a/b", ".hidden", "-x", "Upper", "a b", "", "a\\b"}) {
    absl::Status st = ValidateName("dataset name", bad);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(st.message().find("dataset name"), absl::string_view::npos) << st;
  }
}

TEST(ValidateName, MessageNamesTheOffendingCharacter) {
  absl::Status st = ValidateName("dataset name", "ab/c");
  EXPECT_NE(st.message().find("character 3"), absl::string_view::npos) << st;
}

TEST(ValidateName, RejectsOverlongNames) {
  EXPECT_TRUE(ValidateName("n", std::string(kMaxNameLength, 'a')).ok());
  EXPECT_EQ(ValidateName("n", std::string(kMaxNameLength + 1, 'a')).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ParseModelRef, SplitsNameAndVersion) {
  std::string name;
  int64_t version = -1;
  ASSERT_TRUE(ParseModelRef("resnet:3", &name, &version).ok());
  EXPECT_EQ(name, "resnet");
  EXPECT_EQ(version, 3);
  ASSERT_TRUE(ParseModelRef("resnet", &name, &version).ok());
  EXPECT_EQ(version, 0);
  EXPECT_FALSE(ParseModelRef("resnet:x", &name, &version).ok());
  EXPECT_FALSE(ParseModelRef("resnet:0", &name, &version).ok());
  EXPECT_FALSE(ParseModelRef("../x:1", &name, &version).ok());
}

}  // namespace
}  // namespace kaizen::common
