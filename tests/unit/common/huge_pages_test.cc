#include "server/common/huge_pages.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <limits>
#include <memory>
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

size_t PageBytes() { return static_cast<size_t>(::sysconf(_SC_PAGESIZE)); }

// Whether the page that holds `address` is mapped (mincore fails with ENOMEM
// where it is not).
bool PageMapped(const void* address) {
  const uintptr_t page = reinterpret_cast<uintptr_t>(address) & ~uintptr_t{PageBytes() - 1};
  unsigned char resident = 0;
  return ::mincore(reinterpret_cast<void*>(page), 1, &resident) == 0 || errno != ENOMEM;
}

// How many pages of [address, address + bytes) are mapped, each asked alone.
size_t MappedPages(const void* address, size_t bytes) {
  size_t mapped = 0;
  for (size_t offset = 0; offset < bytes; offset += PageBytes()) {
    mapped += PageMapped(static_cast<const uint8_t*>(address) + offset) ? 1 : 0;
  }
  return mapped;
}

// The process's virtual size (VmSize in /proc/self/status), in bytes; 0 when
// it cannot be read.
size_t VirtualBytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmSize:", 0) != 0) continue;
    uint64_t kib = 0;
    const std::vector<std::string> words =
        absl::StrSplit(line.substr(7), ' ', absl::SkipWhitespace());
    if (!words.empty() && absl::SimpleAtoi(words[0], &kib)) return static_cast<size_t>(kib) << 10;
  }
  return 0;
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

TEST(HugePages, ALargeBufferKeepsNoMoreThanItsHugePagesMapped) {
  const size_t bytes = (size_t{4} << 20) + 1;
  if (!MapsOnHugePages(bytes)) GTEST_SKIP() << "AddressSanitizer: buffers come from operator new";
  const size_t rounded = size_t{6} << 20;
  ASSERT_GT(VirtualBytes(), 0u);  // once before, so that reading it maps nothing new below
  const size_t before = VirtualBytes();
  HugeBytes buffer;
  buffer.reserve(bytes);
  const size_t after = VirtualBytes();
  EXPECT_EQ(MappedPages(buffer.data(), rounded), rounded / PageBytes());
  // The allocator maps 2 MiB more than it keeps, then unmaps what lies
  // before the first 2 MiB boundary and after the buffer: the process grows
  // by the buffer's huge pages, not by those and 2 MiB more. (The heap may
  // grow a little beside it, never by 2 MiB here.)
  EXPECT_GE(after - before, rounded);
  EXPECT_LT(after - before, rounded + kHugePageBytes)
      << "the 2 MiB mapped for the alignment stayed mapped";
}

TEST(HugePages, FreeingALargeBufferUnmapsEveryPageOfIt) {
  const size_t bytes = (size_t{6} << 20) + 1;  // 8 MiB of huge pages
  if (!MapsOnHugePages(bytes)) GTEST_SKIP() << "AddressSanitizer: buffers come from operator new";
  const size_t rounded = size_t{8} << 20;
  const void* address = nullptr;
  {
    HugeBytes buffer(bytes, 7);  // touched: resident
    address = buffer.data();
    ASSERT_EQ(MappedPages(address, rounded), rounded / PageBytes());
  }
  EXPECT_EQ(MappedPages(address, rounded), 0u) << "pages of the freed buffer are still mapped";
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
  const size_t impossible = std::numeric_limits<size_t>::max() - 1;
  // AddressSanitizer's operator new reports such a size and aborts.
  if (!MapsOnHugePages(impossible)) GTEST_SKIP() << "AddressSanitizer: operator new aborts";
  EXPECT_THROW(AllocateLarge(impossible), std::bad_alloc);
}

TEST(HugePages, AllocatorsOfAnyTwoTypesCompareEqual) {
  EXPECT_TRUE(HugePageAllocator<uint8_t>() == HugePageAllocator<uint64_t>());
  EXPECT_FALSE(HugePageAllocator<uint8_t>() != HugePageAllocator<uint64_t>());
  EXPECT_TRUE(std::allocator_traits<HugePageAllocator<uint8_t>>::is_always_equal::value);
}

}  // namespace
}  // namespace kaizen::common
