#include "server/common/huge_pages.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

namespace kaizen::common {
namespace {

using HugeBytes = std::vector<uint8_t, HugePageAllocator<uint8_t>>;

// The VmFlags line of the mapping in /proc/self/smaps that holds `address`;
// empty when no mapping holds it.
std::string VmFlagsOfMappingHolding(const void* address) {
  const auto at = reinterpret_cast<uintptr_t>(address);
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    const std::vector<std::string> range = absl::StrSplit(line.substr(0, line.find(' ')), '-');
    uint64_t begin = 0;
    uint64_t end = 0;
    if (range.size() == 2 && absl::SimpleHexAtoi(range[0], &begin) &&
        absl::SimpleHexAtoi(range[1], &end)) {
      inside = begin <= at && at < end;
      continue;
    }
    if (inside && line.rfind("VmFlags:", 0) == 0) return line;
  }
  return "";
}

// Whether the pages of [address, address + bytes) are mapped (mincore fails
// with ENOMEM where they are not).
bool Mapped(const void* address, size_t bytes) {
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(address) & ~(page - 1);
  std::vector<unsigned char> resident((bytes + page - 1) / page + 1);
  return ::mincore(reinterpret_cast<void*>(begin), bytes, resident.data()) == 0 || errno != ENOMEM;
}

bool KernelHasTransparentHugePages() {
  return std::ifstream("/sys/kernel/mm/transparent_hugepage/enabled").good();
}

TEST(HugePages, ALargeBufferIsAlignedToAHugePageAndAdvisedBeforeItIsTouched) {
  const size_t bytes = (size_t{8} << 20) + 123;
  if (!MapsOnHugePages(bytes)) GTEST_SKIP() << "AddressSanitizer: buffers come from operator new";
  HugeBytes buffer;
  buffer.reserve(bytes);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(buffer.data()) % kHugePageBytes, 0u);
  if (!KernelHasTransparentHugePages()) {
    GTEST_SKIP() << "this kernel has no transparent huge pages: the advice is refused";
  }
  // "hg": the mapping was advised MADV_HUGEPAGE.
  const std::string flags = VmFlagsOfMappingHolding(buffer.data());
  ASSERT_FALSE(flags.empty()) << "no mapping holds the buffer";
  EXPECT_NE(flags.find(" hg"), std::string::npos) << flags;
  // The whole buffer, its last byte included, lies in advised memory.
  EXPECT_EQ(VmFlagsOfMappingHolding(buffer.data() + bytes - 1), flags);
}

TEST(HugePages, FreeingALargeBufferUnmapsIt) {
  const size_t bytes = size_t{6} << 20;
  if (!MapsOnHugePages(bytes)) GTEST_SKIP() << "AddressSanitizer: buffers come from operator new";
  const void* address = nullptr;
  {
    HugeBytes buffer(bytes, 7);
    address = buffer.data();
    ASSERT_TRUE(Mapped(address, bytes));
  }
  EXPECT_FALSE(Mapped(address, bytes)) << "the memory did not go back to the system";
}

TEST(HugePages, SmallBuffersComeFromOperatorNew) {
  EXPECT_FALSE(MapsOnHugePages(kHugePageBytes - 1));
  EXPECT_FALSE(MapsOnHugePages(0));
  HugeBytes small(1000, 3);
  EXPECT_EQ(small.size(), 1000u);
  EXPECT_EQ(small[999], 3);
}

TEST(HugePages, ABufferGrowingPastTheThresholdKeepsWhatItHolds) {
  HugeBytes buffer;
  const size_t bytes = (size_t{5} << 20) + 17;
  for (size_t i = 0; i < bytes; ++i) buffer.push_back(static_cast<uint8_t>(i * 31 + (i >> 12)));
  ASSERT_EQ(buffer.size(), bytes);
  for (size_t i = 0; i < bytes; ++i) {
    ASSERT_EQ(buffer[i], static_cast<uint8_t>(i * 31 + (i >> 12))) << "byte " << i;
  }
}

TEST(HugePages, AnImpossibleSizeThrowsBadAlloc) {
  HugePageAllocator<uint64_t> allocator;
  EXPECT_THROW(allocator.allocate(std::numeric_limits<size_t>::max() / 4),
               std::bad_array_new_length);
  EXPECT_THROW(AllocateLarge(std::numeric_limits<size_t>::max() - 1), std::bad_alloc);
}

}  // namespace
}  // namespace kaizen::common
