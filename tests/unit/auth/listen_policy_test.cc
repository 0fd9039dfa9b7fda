#include "server/auth/listen_policy.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace kaizen::auth {
namespace {

ListenSecurity Security(bool tls, bool tokens, bool insecure) {
  ListenSecurity s;
  s.tls = tls;
  s.tokens = tokens;
  s.insecure = insecure;
  return s;
}

TEST(ListenPolicyTest, DefaultHostIsLoopbackWithoutTlsOrTokensAndEveryAddressWithEither) {
  EXPECT_EQ(*ChooseListenHost("", {}), "127.0.0.1");
  EXPECT_EQ(*ChooseListenHost("", Security(true, false, false)), "0.0.0.0");
  EXPECT_EQ(*ChooseListenHost("", Security(false, true, false)), "0.0.0.0");
  EXPECT_EQ(*ChooseListenHost("", Security(false, false, true)), "127.0.0.1");
}

TEST(ListenPolicyTest, OpenAddressWithoutTlsOrTokensNeedsInsecure) {
  absl::StatusOr<std::string> host = ChooseListenHost("0.0.0.0", {});
  ASSERT_EQ(host.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(host.status().message(), ::testing::HasSubstr("--insecure"));
  EXPECT_EQ(*ChooseListenHost("0.0.0.0", Security(false, false, true)), "0.0.0.0");
  EXPECT_EQ(*ChooseListenHost("10.1.2.3", Security(false, true, false)), "10.1.2.3");
  EXPECT_EQ(*ChooseListenHost("127.0.0.1", {}), "127.0.0.1");
  EXPECT_EQ(*ChooseListenHost("[::1]", {}), "[::1]");
}

TEST(ListenPolicyTest, LoopbackHosts) {
  for (const char* h : {"127.0.0.1", "127.3.4.5", "localhost", "::1", "[::1]"}) {
    EXPECT_TRUE(IsLoopbackHost(h)) << h;
  }
  for (const char* h : {"0.0.0.0", "::", "[::]", "128.0.0.1", "127.0.0", "127.0.0.256",
                        "127.0.0.1.example.com", "localhost.example.com", ""}) {
    EXPECT_FALSE(IsLoopbackHost(h)) << h;
  }
}

TEST(ListenPolicyTest, HostOfAddress) {
  EXPECT_EQ(HostOfAddress("127.0.0.1:50051"), "127.0.0.1");
  EXPECT_EQ(HostOfAddress("[::1]:0"), "[::1]");
  EXPECT_EQ(HostOfAddress("0.0.0.0:1"), "0.0.0.0");
}

}  // namespace
}  // namespace kaizen::auth
