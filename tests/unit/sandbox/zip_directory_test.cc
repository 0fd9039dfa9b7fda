#include "server/sandbox/zip_directory.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/common/atomic_file.h"
#include "server/sandbox/torchscript_precheck.h"
#include "tests/test_util/zip_builder.h"

namespace kaizen::sandbox {
namespace {

using ::testing::HasSubstr;

const std::string kResNet18 = KAIZEN_FIXTURE_DIR "/resnet18.pt";

using Entry = test_util::ZipEntry;
using test_util::MakeZip;

absl::StatusOr<std::vector<ZipMember>> Read(const std::string& zip, ZipLimits limits = {}) {
  return ReadZipDirectory(zip.size(), ReadFromMemory(zip), limits);
}

TEST(ZipDirectoryTest, ReadsStoredAndDeflatedMembers) {
  const std::string zip =
      MakeZip({{"m/data.pkl", "hello"}, {"m/code/x.py", std::string(1000, 'a'), true}});
  absl::StatusOr<std::vector<ZipMember>> members = Read(zip);
  ASSERT_TRUE(members.ok()) << members.status();
  ASSERT_EQ(members->size(), 2u);
  EXPECT_EQ((*members)[0].name, "m/data.pkl");
  EXPECT_EQ((*members)[1].method, 8);
  absl::StatusOr<std::string> data = ReadZipMember((*members)[1], ReadFromMemory(zip), 1 << 20);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(*data, std::string(1000, 'a'));
}

TEST(ZipDirectoryTest, ReadsEveryMemberOfARealTorchScriptFile) {
  std::string bytes;
  ASSERT_TRUE(common::ReadFile(kResNet18, &bytes).ok());
  absl::StatusOr<std::vector<ZipMember>> members = Read(bytes);
  ASSERT_TRUE(members.ok()) << members.status();
  bool data_pkl = false;
  for (const ZipMember& m : *members) data_pkl |= m.name == "resnet18.pt/data.pkl";
  EXPECT_TRUE(data_pkl);
  EXPECT_TRUE(PrecheckTorchScriptFile(kResNet18, {}).ok());
}

TEST(ZipDirectoryTest, RefusesADeflateBomb) {
  // 64 MiB of zeros deflate to ~64 KiB: a ratio of ~1000.
  const std::string zip = MakeZip({{"m/data.pkl", std::string(64 << 20, '\0'), true}});
  absl::StatusOr<std::vector<ZipMember>> members = Read(zip);
  ASSERT_FALSE(members.ok());
  EXPECT_EQ(members.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(members.status().message(), HasSubstr("ratio limit is 200"));
}

TEST(ZipDirectoryTest, RefusesADeclaredSizeOverTheLimit) {
  Entry e{"m/weights", std::string(100, 'x'), true};
  e.declared_size = 0xfffffff0;  // 4 GiB claimed from 100 bytes
  ZipLimits limits;
  limits.max_member_bytes = 1 << 30;
  absl::StatusOr<std::vector<ZipMember>> members = Read(MakeZip({e}), limits);
  ASSERT_FALSE(members.ok());
  EXPECT_THAT(members.status().message(), HasSubstr("unpacks to 4294967280 bytes"));
}

TEST(ZipDirectoryTest, RefusesTotalOverTheLimit) {
  ZipLimits limits;
  limits.max_total_bytes = 150;
  absl::StatusOr<std::vector<ZipMember>> members =
      Read(MakeZip({{"a", std::string(100, 'x')}, {"b", std::string(100, 'y')}}), limits);
  ASSERT_FALSE(members.ok());
  EXPECT_THAT(members.status().message(), HasSubstr("more than 150 bytes in all"));
}

TEST(ZipDirectoryTest, RefusesStoredSizeMismatch) {
  Entry e{"m/data.pkl", "abc"};
  e.declared_size = 1 << 20;
  absl::StatusOr<std::vector<ZipMember>> members = Read(MakeZip({e}));
  ASSERT_FALSE(members.ok());
  EXPECT_THAT(members.status().message(), HasSubstr("declares 3 bytes stored"));
}

TEST(ZipDirectoryTest, RefusesBadNames) {
  for (const std::string& name : {std::string("m/../../etc/passwd"), std::string("/abs"),
                                  std::string("a\\b"), std::string("nul\0x", 5)}) {
    absl::StatusOr<std::vector<ZipMember>> members = Read(MakeZip({{name, "x"}}));
    EXPECT_FALSE(members.ok()) << name;
  }
  absl::StatusOr<std::vector<ZipMember>> twice = Read(MakeZip({{"a", "x"}, {"a", "y"}}));
  ASSERT_FALSE(twice.ok());
  EXPECT_THAT(twice.status().message(), HasSubstr("appears twice"));
}

TEST(ZipDirectoryTest, RefusesTooManyMembers) {
  std::vector<Entry> entries;
  for (int i = 0; i < 11; ++i) entries.push_back({"m/" + std::to_string(i), "x"});
  ZipLimits limits;
  limits.max_members = 10;
  absl::StatusOr<std::vector<ZipMember>> members = Read(MakeZip(entries), limits);
  ASSERT_FALSE(members.ok());
  EXPECT_THAT(members.status().message(), HasSubstr("11 members; at most 10"));
}

TEST(ZipDirectoryTest, RefusesTruncatedAndCorruptArchives) {
  const std::string zip = MakeZip({{"m/data.pkl", "hello"}, {"m/b", "world"}});
  // Every truncation either loses the end record or points past the end.
  for (size_t n = 0; n < zip.size(); ++n) {
    EXPECT_FALSE(Read(zip.substr(0, n)).ok()) << n;
  }
  // A flipped data byte fails the CRC.
  std::string flipped = zip;
  flipped[30 + 10] ^= 1;
  absl::StatusOr<std::vector<ZipMember>> members = Read(flipped);
  ASSERT_TRUE(members.ok());
  absl::StatusOr<std::string> data = ReadZipMember((*members)[0], ReadFromMemory(flipped), 100);
  ASSERT_FALSE(data.ok());
  EXPECT_THAT(data.status().message(), HasSubstr("CRC-32"));
}

TEST(ZipDirectoryTest, RefusesAMemberLargerThanTheReadLimit) {
  const std::string zip = MakeZip({{"m/data.pkl", std::string(1000, 'x')}});
  absl::StatusOr<std::vector<ZipMember>> members = Read(zip);
  ASSERT_TRUE(members.ok());
  EXPECT_FALSE(ReadZipMember((*members)[0], ReadFromMemory(zip), 999).ok());
}

}  // namespace
}  // namespace kaizen::sandbox
