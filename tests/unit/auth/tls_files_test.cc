#include "server/auth/tls_files.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>

#include "tests/test_util/temp_dir.h"
#include "tests/test_util/test_certs.h"

namespace kaizen::auth {
namespace {

using ::testing::HasSubstr;

class TlsFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<test_util::TestCerts> certs = test_util::MakeTestCerts(dir_.path());
    ASSERT_TRUE(certs.ok()) << certs.status();
    certs_ = *certs;
  }
  test_util::TempDir dir_;
  test_util::TestCerts certs_;
};

TEST_F(TlsFilesTest, MatchingCertificateKeyAndCaPass) {
  EXPECT_TRUE(CheckTlsFiles({certs_.server_cert, certs_.server_key, certs_.ca_cert}).ok());
  EXPECT_TRUE(CheckTlsFiles({certs_.server_cert, certs_.server_key, ""}).ok());
  EXPECT_TRUE(CheckTlsFiles({}).ok());
}

TEST_F(TlsFilesTest, KeyOfAnotherCertificateIsRefusedNamingBothFiles) {
  absl::Status s = CheckTlsFiles({certs_.server_cert, certs_.client_key, ""});
  ASSERT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr(certs_.client_key));
  EXPECT_THAT(s.message(), HasSubstr("does not belong"));
}

TEST_F(TlsFilesTest, MissingAndNonPemFilesAreNamed) {
  EXPECT_EQ(CheckTlsFiles({"/nonexistent.crt", certs_.server_key, ""}).code(),
            absl::StatusCode::kNotFound);
  const std::string junk = dir_.File("junk.pem");
  std::ofstream(junk) << "not a certificate\n";
  absl::Status cert = CheckTlsFiles({junk, certs_.server_key, ""});
  EXPECT_EQ(cert.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(cert.message(), HasSubstr("--tls_cert " + junk));
  absl::Status ca = CheckTlsFiles({certs_.server_cert, certs_.server_key, junk});
  EXPECT_THAT(ca.message(), HasSubstr("--tls_client_ca"));
}

TEST_F(TlsFilesTest, HalfConfiguredTlsIsRefused) {
  EXPECT_THAT(CheckTlsFiles({certs_.server_cert, "", ""}).message(), HasSubstr("go together"));
  EXPECT_THAT(CheckTlsFiles({"", "", certs_.ca_cert}).message(), HasSubstr("--tls_client_ca"));
}

}  // namespace
}  // namespace kaizen::auth
