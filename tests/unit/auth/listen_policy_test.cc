#include "server/auth/listen_policy.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace kaizen::auth {
namespace {

using ::testing::HasSubstr;

ListenSecurity Security(bool tls, bool tokens, bool client_certificates, bool insecure) {
  ListenSecurity s;
  s.tls = tls;
  s.tokens = tokens;
  s.client_certificates = client_certificates;
  s.insecure = insecure;
  return s;
}

TEST(ListenPolicyTest, OnlyTlsWithTokensOrClientCertificatesIsProtected) {
  EXPECT_TRUE(IsProtected(Security(true, true, false, false)));
  EXPECT_TRUE(IsProtected(Security(true, false, true, false)));
  EXPECT_FALSE(IsProtected(Security(true, false, false, false)));
  EXPECT_FALSE(IsProtected(Security(false, true, false, false)));
  EXPECT_FALSE(IsProtected(Security(false, false, false, true)));
  EXPECT_THAT(WhatIsUnprotected(Security(true, false, false, false)),
              HasSubstr("lets anyone call"));
  EXPECT_THAT(WhatIsUnprotected(Security(false, true, false, false)), HasSubstr("clear text"));
  EXPECT_EQ(WhatIsUnprotected(Security(true, true, false, false)), "");
}

TEST(ListenPolicyTest, DefaultHostIsEveryAddressOnlyWhenProtected) {
  EXPECT_EQ(*ChooseListenHost("", Security(false, false, false, false)), "127.0.0.1");
  EXPECT_EQ(*ChooseListenHost("", Security(true, false, false, false)), "127.0.0.1");
  EXPECT_EQ(*ChooseListenHost("", Security(false, true, false, false)), "127.0.0.1");
  EXPECT_EQ(*ChooseListenHost("", Security(false, false, false, true)), "127.0.0.1");
  EXPECT_EQ(*ChooseListenHost("", Security(true, true, false, false)), "0.0.0.0");
  EXPECT_EQ(*ChooseListenHost("", Security(true, false, true, false)), "0.0.0.0");
}

TEST(ListenPolicyTest, UnprotectedOpenAddressNeedsInsecure) {
  for (const ListenSecurity& s :
       {Security(false, false, false, false), Security(true, false, false, false),
        Security(false, true, false, false)}) {
    absl::StatusOr<std::string> host = ChooseListenHost("0.0.0.0", s);
    ASSERT_EQ(host.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(host.status().message(), HasSubstr("--insecure"));
    EXPECT_THAT(host.status().message(), HasSubstr(WhatIsUnprotected(s)));
  }
  EXPECT_EQ(*ChooseListenHost("0.0.0.0", Security(false, false, false, true)), "0.0.0.0");
  EXPECT_EQ(*ChooseListenHost("10.1.2.3", Security(true, true, false, false)), "10.1.2.3");
  EXPECT_EQ(*ChooseListenHost("127.0.0.1", Security(false, false, false, false)), "127.0.0.1");
  EXPECT_EQ(*ChooseListenHost("[::1]", Security(false, false, false, false)), "[::1]");
}

TEST(ListenPolicyTest, LoopbackHosts) {
  for (const char* h : {"127.0.0.1", "127.3.4.5", "localhost", "::1", "[::1]"}) {
    EXPECT_TRUE(IsLoopbackHost(h)) << h;
  }
  for (const char* h :
       {"0.0.0.0", "::", "[::]", "128.0.0.1", "127.0.0", "127.0.0.256", "127.1", "0",
        "::ffff:127.0.0.1", "127.0.0.1.example.com", "localhost.example.com", " 127.0.0.1", ""}) {
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
