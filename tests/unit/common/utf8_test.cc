#include "server/common/utf8.h"

#include <gtest/gtest.h>

#include <string>

namespace kaizen::common {
namespace {

TEST(IsValidUtf8, AcceptsWellFormedText) {
  for (const char* ok :
       {"", "cats", "caf\xC3\xA9", "\xE6\x97\xA5\xE6\x9C\xAC", "\xF0\x9F\x90\x88"}) {
    EXPECT_TRUE(IsValidUtf8(ok)) << ok;
  }
}

TEST(IsValidUtf8, RefusesMalformedText) {
  for (const char* bad : {"caf\xE9",           // Latin-1
                          "\xC0\xAF",          // overlong '/'
                          "\xED\xA0\x80",      // surrogate
                          "\xF4\x90\x80\x80",  // above U+10FFFF
                          "\xE6\x97",          // truncated
                          "\x80", "\xFF"}) {
    EXPECT_FALSE(IsValidUtf8(bad)) << bad;
  }
}

TEST(FirstInvalidUtf8Byte, FindsTheFirstBadByte) {
  EXPECT_EQ(FirstInvalidUtf8Byte(""), -1);
  EXPECT_EQ(FirstInvalidUtf8Byte("plain ASCII"), -1);
  EXPECT_EQ(FirstInvalidUtf8Byte("\xE2\x82\xAC \xF0\x9F\x99\x82"), -1);  // euro sign, emoji
  EXPECT_EQ(FirstInvalidUtf8Byte(std::string("a\0b", 3)), -1);           // NUL is a code point
  EXPECT_EQ(FirstInvalidUtf8Byte("\x80"), 0);                            // a lone continuation
  EXPECT_EQ(FirstInvalidUtf8Byte("\xE2\x82\xACx\xE2\x82"), 4);           // cut after a good one
  EXPECT_EQ(FirstInvalidUtf8Byte("ok \xED\xA0\x80"), 3);                 // a surrogate
}

TEST(SanitizeUtf8, ReplacesOnlyTheBadBytes) {
  EXPECT_EQ(SanitizeUtf8("caf\xE9/x.jpg"), "caf\xEF\xBF\xBD/x.jpg");
  EXPECT_EQ(SanitizeUtf8("caf\xC3\xA9"), "caf\xC3\xA9");
}

}  // namespace
}  // namespace kaizen::common
