#include "server/common/logging.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <limits>
#include <string>

namespace kaizen::common {
namespace {

using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;

TEST(JsonQuoteTest, EscapesWhatJsonRequires) {
  EXPECT_EQ(JsonQuote("plain"), "\"plain\"");
  EXPECT_EQ(JsonQuote("a\"b\\c"), "\"a\\\"b\\\\c\"");
  EXPECT_EQ(JsonQuote("l1\nl2\r\t"), "\"l1\\nl2\\r\\t\"");
  EXPECT_EQ(JsonQuote(std::string("\x01\x1f", 2)), "\"\\u0001\\u001f\"");
  EXPECT_EQ(JsonQuote("caf\xc3\xa9"), "\"caf\xc3\xa9\"");  // UTF-8 passes through
}

TEST(JsonQuoteTest, BytesThatAreNotUtf8BecomeReplacementCharacters) {
  // A lone continuation byte, a truncated sequence, an overlong '/', a
  // surrogate, a code point above U+10FFFF, and a Latin-1 byte.
  EXPECT_EQ(JsonQuote("a\x80"
                      "b"),
            "\"a\\ufffdb\"");
  EXPECT_EQ(JsonQuote("\xe2\x82"), "\"\\ufffd\\ufffd\"");
  EXPECT_EQ(JsonQuote("\xc0\xaf"), "\"\\ufffd\\ufffd\"");
  EXPECT_EQ(JsonQuote("\xed\xa0\x80"), "\"\\ufffd\\ufffd\\ufffd\"");
  EXPECT_EQ(JsonQuote("\xf4\x90\x80\x80"), "\"\\ufffd\\ufffd\\ufffd\\ufffd\"");
  EXPECT_EQ(JsonQuote("caf\xe9"), "\"caf\\ufffd\"");
  // Well-formed sequences of every length pass through unchanged.
  const std::string ok = "\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80";  // é € 😀
  EXPECT_EQ(JsonQuote(ok), "\"" + ok + "\"");
}

TEST(LogFieldTest, ValuesAreRenderedAsJson) {
  EXPECT_EQ(LogField("k", "v").json_value, "\"v\"");
  EXPECT_EQ(LogField("k", std::string("v")).json_value, "\"v\"");
  EXPECT_EQ(LogField("k", int64_t{-7}).json_value, "-7");
  EXPECT_EQ(LogField("k", 3).json_value, "3");
  EXPECT_EQ(LogField("k", 0.25).json_value, "0.25");
  EXPECT_EQ(LogField("k", true).json_value, "true");
}

TEST(LogFieldTest, NonFiniteNumbersStayValidJson) {
  EXPECT_EQ(LogField("loss", std::numeric_limits<double>::quiet_NaN()).json_value, "\"NaN\"");
  EXPECT_EQ(LogField("loss", std::numeric_limits<double>::infinity()).json_value, "\"Infinity\"");
  EXPECT_EQ(LogField("loss", -std::numeric_limits<double>::infinity()).json_value, "\"-Infinity\"");
}

TEST(LogTest, OneJsonObjectPerLineOnStderr) {
  ::testing::internal::CaptureStderr();
  LogWarning("disk \"low\"", {{"free_bytes", int64_t{1024}}, {"path", "/data"}});
  const std::string out = ::testing::internal::GetCapturedStderr();
  EXPECT_THAT(out, MatchesRegex(R"(\{"ts":"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z",.*\}
)"));
  EXPECT_THAT(
      out,
      HasSubstr(R"("level":"warning","msg":"disk \"low\"","free_bytes":1024,"path":"/data"})"));
  EXPECT_THAT(out, EndsWith("}\n"));
}

}  // namespace
}  // namespace kaizen::common
