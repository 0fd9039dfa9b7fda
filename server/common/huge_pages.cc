#include "server/common/huge_pages.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

#include "server/common/logging.h"

namespace kaizen::common {
namespace {

// Under AddressSanitizer every buffer comes from operator new, so that the
// sanitizer still sees a read or write past a pixel buffer's end.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kMapLargeBuffers = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kMapLargeBuffers = false;
#else
constexpr bool kMapLargeBuffers = true;
#endif
#else
constexpr bool kMapLargeBuffers = true;
#endif

// `bytes` rounded up to whole huge pages; 0 when that overflows.
size_t HugeRounded(size_t bytes) {
  if (bytes > std::numeric_limits<size_t>::max() - (kHugePageBytes - 1)) return 0;
  return (bytes + kHugePageBytes - 1) & ~(kHugePageBytes - 1);
}

}  // namespace

bool MapsOnHugePages(size_t bytes) { return kMapLargeBuffers && bytes >= kHugePageBytes; }

void* AllocateLarge(size_t bytes) {
  if (!MapsOnHugePages(bytes)) return ::operator new(bytes);
  const size_t rounded = HugeRounded(bytes);
  if (rounded == 0 || rounded > std::numeric_limits<size_t>::max() - kHugePageBytes) {
    throw std::bad_alloc();
  }
  // Map one huge page more than needed, then unmap what lies before the
  // first 2 MiB boundary and after the buffer: what is left is aligned.
  const size_t mapped = rounded + kHugePageBytes;
  void* const map =
      ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (map == MAP_FAILED) throw std::bad_alloc();
  const auto begin = reinterpret_cast<uintptr_t>(map);
  const uintptr_t start = (begin + kHugePageBytes - 1) & ~uintptr_t{kHugePageBytes - 1};
  const size_t head = start - begin;
  const size_t tail = mapped - head - rounded;
  // A failed trim (a split refused at vm.max_map_count) leaves untouched
  // virtual memory mapped beside the buffer, never resident; nothing to undo.
  if (head > 0) ::munmap(map, head);
  if (tail > 0) ::munmap(reinterpret_cast<void*>(start + rounded), tail);
  auto* const buffer = reinterpret_cast<void*>(start);
  // Best effort: refused (EINVAL) where the kernel has no huge pages.
  ::madvise(buffer, rounded, MADV_HUGEPAGE);
  return buffer;
}

void FreeLarge(void* p, size_t bytes) noexcept {
  if (p == nullptr) return;
  if (!MapsOnHugePages(bytes)) {
    ::operator delete(p);
    return;
  }
  if (::munmap(p, HugeRounded(bytes)) != 0) {
    // Only a split refused at vm.max_map_count can fail here: the buffer's
    // memory stays with the process. Said, since nothing else would show it.
    const int error = errno;
    try {
      LogWarning("cannot unmap a large buffer; its memory stays with the process",
                 {{"bytes", static_cast<int64_t>(bytes)}, {"error", std::strerror(error)}});
    } catch (...) {  // std::bad_alloc: freeing must not throw
    }
  }
}

}  // namespace kaizen::common
