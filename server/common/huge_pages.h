// Large buffers backed by transparent huge pages where the kernel offers them.
//
// Touching a fresh 4 KiB page for the first time costs a page fault, and on a
// virtual machine that fault is expensive: on the 2-core development VM a fresh 47 MB
// buffer took 121-160 ms to fill the first time against 2.3 ms the second,
// and 3.4-4.3 ms when advised MADV_HUGEPAGE (one fault per 2 MiB instead of
// per 4 KiB; bench/RESULTS.md). An IDX upload decodes into such a buffer, so the first touch was
// most of its decoding time.
//
// HugePageAllocator maps each allocation of at least kHugePageBytes on its
// own, aligned to 2 MiB, and advises MADV_HUGEPAGE before anything touches it
// (as PyTorch's CPU allocator does under THP_MEM_ALLOC_ENABLE); freeing it
// unmaps it, so the memory goes back to the system at once. Smaller
// allocations, and every one under AddressSanitizer (so that it still sees an
// overflow), use operator new.
//
// What it costs, and where it does nothing:
// - A touched 2 MiB page is resident whole: a buffer may hold up to 2 MiB
//   more than it has written.
// - Each allocation maps 2 MiB more than it keeps, for a moment (the part
//   before the first 2 MiB boundary and after the buffer is unmapped at
//   once), which counts against RLIMIT_AS while it lasts.
// - With the kernel's default THP defrag setting ("madvise"), a fault in
//   advised memory may compact memory on the spot to find a free 2 MiB page:
//   the first such buffer of a process was measured at 75-101 ms for 47 MB,
//   later ones at 3-4 ms.
// - Where the kernel has no transparent huge pages the advice is refused;
//   where they are set to "never" it is taken and does nothing. Either way
//   the buffer is an ordinary one.
#pragma once

#include <cstddef>
#include <limits>
#include <new>
#include <type_traits>

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
  // operator new's alignment is all a small buffer gets.
  static_assert(alignof(T) <= __STDCPP_DEFAULT_NEW_ALIGNMENT__,
                "HugePageAllocator: the type needs more alignment than operator new gives");

 public:
  using value_type = T;
  using is_always_equal = std::true_type;

  HugePageAllocator() = default;
  template <typename U>
  HugePageAllocator(const HugePageAllocator<U>&) noexcept {}  // NOLINT(google-explicit-constructor)

  T* allocate(size_t n) {
    if (n > std::numeric_limits<size_t>::max() / sizeof(T)) throw std::bad_array_new_length();
    return static_cast<T*>(AllocateLarge(n * sizeof(T)));
  }
  void deallocate(T* p, size_t n) noexcept { FreeLarge(p, n * sizeof(T)); }

  // Stateless: any two compare equal, whatever their element types.
  template <typename U>
  bool operator==(const HugePageAllocator<U>&) const noexcept {
    return true;
  }
  template <typename U>
  bool operator!=(const HugePageAllocator<U>&) const noexcept {
    return false;
  }
};

}  // namespace kaizen::common
