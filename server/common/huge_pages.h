// Large buffers backed by transparent huge pages where the kernel offers them.
//
// Touching a fresh 4 KiB page for the first time costs a page fault, and on a
// virtual machine that fault is expensive: on the 2-core development VM a fresh 47 MB
// buffer took 121-160 ms to fill the first time against 2.3 ms the second,
// and 4.3 ms when advised MADV_HUGEPAGE (one fault per 2 MiB instead of per
// 4 KiB). An IDX upload decodes into such a buffer, so the first touch was
// most of its decoding time.
//
// HugePageAllocator maps each allocation of at least kHugePageBytes on its
// own, aligned to 2 MiB, and advises MADV_HUGEPAGE before anything touches it
// (as PyTorch's CPU allocator does under THP_MEM_ALLOC_ENABLE); freeing it
// unmaps it, so the memory goes back to the system at once. Smaller
// allocations, and every one under AddressSanitizer, use operator new. Where the kernel has no
// transparent huge pages, or they are set to "never", the advice is refused and the buffer is an
// ordinary one. The cost: a touched 2 MiB page is resident whole, so a buffer may hold up to 2 MiB
// more than it has written.
#pragma once

#include <cstddef>
#include <limits>
#include <new>

namespace kaizen::common {

inline constexpr size_t kHugePageBytes = size_t{2} << 20;

// Whether AllocateLarge(bytes) maps the buffer on its own and advises huge
// pages: `bytes` >= kHugePageBytes, except under AddressSanitizer, where
// every buffer comes from operator new so that overflows are still caught.
bool MapsOnHugePages(size_t bytes);
// At least `bytes`, aligned to 2 MiB and advised MADV_HUGEPAGE when
// MapsOnHugePages(bytes); operator new otherwise. Throws std::bad_alloc.
void* AllocateLarge(size_t bytes);
// Frees what AllocateLarge(bytes) returned, given the same `bytes`.
void FreeLarge(void* p, size_t bytes) noexcept;

template <typename T>
class HugePageAllocator {
 public:
  using value_type = T;

  HugePageAllocator() = default;
  template <typename U>
  HugePageAllocator(const HugePageAllocator<U>&) noexcept {}  // NOLINT(google-explicit-constructor)

  T* allocate(size_t n) {
    if (n > std::numeric_limits<size_t>::max() / sizeof(T)) throw std::bad_array_new_length();
    return static_cast<T*>(AllocateLarge(n * sizeof(T)));
  }
  void deallocate(T* p, size_t n) noexcept { FreeLarge(p, n * sizeof(T)); }

  friend bool operator==(const HugePageAllocator&, const HugePageAllocator&) { return true; }
  friend bool operator!=(const HugePageAllocator&, const HugePageAllocator&) { return false; }
};

}  // namespace kaizen::common
