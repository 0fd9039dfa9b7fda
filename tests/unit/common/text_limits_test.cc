#include "server/common/text_limits.h"

#include <gtest/gtest.h>

#include "kaizen/v1/dataset_service.pb.h"

namespace kaizen::common {
namespace {

TEST(ValidateClassName, RefusesInvalidUtf8ControlCharactersAndLongNames) {
  EXPECT_TRUE(ValidateClassName("c", "ankle boot").ok());
  EXPECT_TRUE(ValidateClassName("c", "caf\xC3\xA9").ok());
  EXPECT_TRUE(ValidateClassName("c", std::string(kMaxClassNameBytes, 'a')).ok());

  absl::Status st = ValidateClassName("class_names[2]", "caf\xE9");
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("class_names[2]"), absl::string_view::npos) << st;
  EXPECT_NE(st.message().find("UTF-8"), absl::string_view::npos) << st;

  st = ValidateClassName("c", "a\nb");
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("U+000A"), absl::string_view::npos) << st;
  EXPECT_FALSE(ValidateClassName("c", "a\xC2\x85").ok());  // NEL, a C1 control
  EXPECT_FALSE(ValidateClassName("c", "").ok());
  st = ValidateClassName("c", std::string(kMaxClassNameBytes + 1, 'a'));
  EXPECT_NE(st.message().find("at most 128 bytes"), absl::string_view::npos) << st;
}

TEST(ValidateClassNames, BoundsTheCountAndNamesTheElement) {
  EXPECT_TRUE(ValidateClassNames("h", {"a", "b"}).ok());
  absl::Status st = ValidateClassNames("header.class_names", {"a", "b\x01"});
  EXPECT_NE(st.message().find("header.class_names[1]"), absl::string_view::npos) << st;
  st = ValidateClassNames("h", {"a", "a"});
  EXPECT_NE(st.message().find("twice"), absl::string_view::npos) << st;
  std::vector<std::string> many(kMaxClasses + 1);
  for (size_t i = 0; i < many.size(); ++i) many[i] = std::to_string(i);
  st = ValidateClassNames("header.class_names", many);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("at most 5000"), absl::string_view::npos) << st;
}

TEST(ValidateDescription, AllowsLinesButBoundsLength) {
  EXPECT_TRUE(ValidateDescription("d", "two\nlines\twith a tab").ok());
  EXPECT_FALSE(ValidateDescription("d", "bell\a").ok());
  EXPECT_FALSE(ValidateDescription("d", std::string(kMaxDescriptionBytes + 1, 'x')).ok());
}

TEST(ValidateRecord, NamesTheFirstFieldThatIsNotUtf8) {
  kaizen::v1::Dataset d;
  d.set_name("pets");
  d.add_classes()->set_class_name("cats");
  d.add_classes()->set_class_name("caf\xE9");
  absl::Status st = ValidateRecord("dataset \"pets\"", d);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("classes[1].class_name"), absl::string_view::npos) << st;
  d.mutable_classes(1)->set_class_name("dogs");
  EXPECT_TRUE(ValidateRecord("d", d).ok());
}

TEST(ValidateRecord, RefusesRecordsLargerThanTheLimit) {
  kaizen::v1::Dataset d;
  d.set_description(std::string(kMaxRecordBytes, 'x'));
  absl::Status st = ValidateRecord("dataset \"big\"", d);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("at most"), absl::string_view::npos) << st;
}

}  // namespace
}  // namespace kaizen::common
