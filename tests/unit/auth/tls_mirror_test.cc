#include "server/auth/tls_mirror.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "tests/test_util/temp_dir.h"
#include "tests/test_util/test_certs.h"

namespace kaizen::auth {
namespace {

using ::testing::HasSubstr;

// The operator's files (copies of the test certificates, so that a test can
// rotate them) and the private directory gRPC reads.
class TlsMirrorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<test_util::TestCerts> certs = test_util::MakeTestCerts(dir_.path());
    ASSERT_TRUE(certs.ok()) << certs.status();
    certs_ = *certs;
    Install(certs_.server_cert, certs_.server_key);
    ASSERT_EQ(::mkdir(dir_.File("mirror").c_str(), 0700), 0);
  }
  void Install(const std::string& cert, const std::string& key) {
    std::filesystem::copy_file(cert, source_.cert,
                               std::filesystem::copy_options::overwrite_existing);
    std::filesystem::copy_file(key, source_.key, std::filesystem::copy_options::overwrite_existing);
  }
  test_util::TempDir dir_;
  test_util::TestCerts certs_;
  TlsFiles source_{dir_.File("operator.crt"), dir_.File("operator.key"), ""};
};

TEST_F(TlsMirrorTest, CreatePublishesCopiesOfTheCheckedFiles) {
  absl::StatusOr<std::unique_ptr<TlsMirror>> mirror =
      TlsMirror::Create(source_, dir_.File("mirror"));
  ASSERT_TRUE(mirror.ok()) << mirror.status();
  const TlsFiles& m = (*mirror)->mirrored();
  EXPECT_EQ(m.cert, dir_.File("mirror") + "/tls.crt");
  EXPECT_EQ(test_util::ReadText(m.cert), test_util::ReadText(certs_.server_cert));
  EXPECT_EQ(test_util::ReadText(m.key), test_util::ReadText(certs_.server_key));
  EXPECT_TRUE(m.client_ca.empty());
  // Nothing changed since.
  absl::StatusOr<bool> again = (*mirror)->Refresh();
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(*again);
}

TEST_F(TlsMirrorTest, ARotatedPairReplacesTheCopies) {
  absl::StatusOr<std::unique_ptr<TlsMirror>> mirror =
      TlsMirror::Create(source_, dir_.File("mirror"));
  ASSERT_TRUE(mirror.ok()) << mirror.status();
  Install(certs_.other_server_cert, certs_.other_server_key);
  absl::StatusOr<bool> rotated = (*mirror)->Refresh();
  ASSERT_TRUE(rotated.ok()) << rotated.status();
  EXPECT_TRUE(*rotated);
  EXPECT_EQ(test_util::ReadText((*mirror)->mirrored().cert),
            test_util::ReadText(certs_.other_server_cert));
  EXPECT_EQ(test_util::ReadText((*mirror)->mirrored().key),
            test_util::ReadText(certs_.other_server_key));
}

TEST_F(TlsMirrorTest, AnEmptiedKeyKeepsTheLastGoodPair) {
  absl::StatusOr<std::unique_ptr<TlsMirror>> mirror =
      TlsMirror::Create(source_, dir_.File("mirror"));
  ASSERT_TRUE(mirror.ok()) << mirror.status();
  std::ofstream(source_.key, std::ios::trunc).close();  // the middle of a `cp`
  absl::StatusOr<bool> rotated = (*mirror)->Refresh();
  ASSERT_EQ(rotated.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(rotated.status().message(), HasSubstr(source_.key));
  EXPECT_EQ(test_util::ReadText((*mirror)->mirrored().key), test_util::ReadText(certs_.server_key));
}

TEST_F(TlsMirrorTest, AMismatchedPairKeepsTheLastGoodPair) {
  absl::StatusOr<std::unique_ptr<TlsMirror>> mirror =
      TlsMirror::Create(source_, dir_.File("mirror"));
  ASSERT_TRUE(mirror.ok()) << mirror.status();
  Install(certs_.server_cert, certs_.other_server_key);
  EXPECT_FALSE((*mirror)->Refresh().ok());
  EXPECT_EQ(test_util::ReadText((*mirror)->mirrored().cert),
            test_util::ReadText(certs_.server_cert));
  EXPECT_EQ(test_util::ReadText((*mirror)->mirrored().key), test_util::ReadText(certs_.server_key));
}

TEST_F(TlsMirrorTest, CreateRefusesBadFilesNamingThem) {
  Install(certs_.server_cert, certs_.client_key);
  absl::StatusOr<std::unique_ptr<TlsMirror>> mirror =
      TlsMirror::Create(source_, dir_.File("mirror"));
  ASSERT_FALSE(mirror.ok());
  EXPECT_THAT(mirror.status().message(), HasSubstr(source_.key));
}

TEST_F(TlsMirrorTest, TheClientCaIsMirroredForMutualTls) {
  source_.client_ca = certs_.ca_cert;
  absl::StatusOr<std::unique_ptr<TlsMirror>> mirror =
      TlsMirror::Create(source_, dir_.File("mirror"));
  ASSERT_TRUE(mirror.ok()) << mirror.status();
  EXPECT_EQ(test_util::ReadText((*mirror)->mirrored().client_ca),
            test_util::ReadText(certs_.ca_cert));
}

}  // namespace
}  // namespace kaizen::auth
