#include "server/metrics/device_info.h"

#include <torch/cuda.h>
#include <torch/version.h>

#include <exception>
#include <string>

// CUDA-only headers exist solely in CUDA builds of LibTorch; Debian's CPU
// package ships some of them, but they include the CUDA runtime's headers,
// which are not there. Only LibTorch and the standard library are used here,
// so that this file can be compiled alone against any LibTorch.
#if defined(KAIZEN_WITH_CUDA) && __has_include(<c10/cuda/CUDACachingAllocator.h>)
#include <c10/cuda/CUDACachingAllocator.h>
#define KAIZEN_CUDA_ALLOCATOR_STATS 1
#endif

namespace kaizen::metrics {

std::string LibTorchVersion() {
#ifdef TORCH_VERSION
  return TORCH_VERSION;
#else
  return std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
         std::to_string(TORCH_VERSION_PATCH);
#endif
}

std::string ComputeDevice() { return torch::cuda::is_available() ? "cuda" : "cpu"; }

std::vector<DeviceMemory> ReadDeviceMemory() {
  std::vector<DeviceMemory> out;
#ifdef KAIZEN_CUDA_ALLOCATOR_STATS
  if (!torch::cuda::is_available()) return out;
  // StatType::AGGREGATE is 0 in every LibTorch version; StatType itself and
  // DeviceStats moved between namespaces in 2.5 (CachingDeviceAllocator),
  // so neither is named here.
  constexpr size_t kAggregate = 0;
  const int devices = static_cast<int>(torch::cuda::device_count());
  for (int d = 0; d < devices; ++d) {
    DeviceMemory m;
    m.device = "cuda:" + std::to_string(d);
    try {
      // The allocator's own counters: no CUDA call is made.
      const auto stats =
          c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(d));
      m.allocated_bytes = stats.allocated_bytes[kAggregate].current;
      m.reserved_bytes = stats.reserved_bytes[kAggregate].current;
    } catch (const std::exception&) {
      // The allocator is initialised with CUDA's lazy start, on the first
      // tensor put on a GPU: until then nothing is held.
    }
    out.push_back(std::move(m));
  }
#endif
  return out;
}

}  // namespace kaizen::metrics
