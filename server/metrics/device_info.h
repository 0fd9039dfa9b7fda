// What LibTorch says about the accelerator: its version, whether CUDA is
// usable, and how much GPU memory the CUDA caching allocator holds. Compiles
// against Debian's CPU-only LibTorch 1.13 (no CUDA headers are included
// there: KAIZEN_WITH_CUDA is defined by CMake only when LibTorch was built
// with CUDA) and against LibTorch 2.x with CUDA.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kaizen::metrics {

// TORCH_VERSION of the LibTorch headers the server was built with.
std::string LibTorchVersion();
// "cuda" when torch::cuda::is_available(), else "cpu".
std::string ComputeDevice();

struct DeviceMemory {
  std::string device;           // "cuda:0"
  int64_t allocated_bytes = 0;  // held by live tensors
  int64_t reserved_bytes = 0;   // held by the caching allocator (allocated + cached)
};

// One entry per visible CUDA device; empty on the CPU or in a build without
// CUDA.
std::vector<DeviceMemory> ReadDeviceMemory();

}  // namespace kaizen::metrics
