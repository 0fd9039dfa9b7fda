#include "server/metrics/device_info.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

namespace kaizen::metrics {
namespace {

using ::testing::MatchesRegex;
using ::testing::StartsWith;

TEST(DeviceInfoTest, LibTorchVersionIsTheHeadersVersion) {
  const std::string version = LibTorchVersion();
  EXPECT_THAT(version, MatchesRegex("[0-9]+\\.[0-9]+\\.[0-9]+.*"));
  EXPECT_THAT(version, StartsWith(std::to_string(TORCH_VERSION_MAJOR) + "." +
                                  std::to_string(TORCH_VERSION_MINOR) + "."));
}

TEST(DeviceInfoTest, DeviceAndMemoryAgreeWithCudaAvailability) {
  const std::vector<DeviceMemory> memory = ReadDeviceMemory();
  if (!torch::cuda::is_available()) {
    EXPECT_EQ(ComputeDevice(), "cpu");
    EXPECT_TRUE(memory.empty());
    return;
  }
  EXPECT_EQ(ComputeDevice(), "cuda");
  // A build without the allocator's statistics reports no devices at all.
  if (memory.empty()) GTEST_SKIP() << "built without KAIZEN_WITH_CUDA";
  ASSERT_EQ(memory.size(), static_cast<size_t>(torch::cuda::device_count()));
  EXPECT_EQ(memory[0].device, "cuda:0");
  torch::Tensor held = torch::ones({1 << 20}, torch::device(torch::kCUDA));
  const std::vector<DeviceMemory> after = ReadDeviceMemory();
  EXPECT_GE(after[0].allocated_bytes, int64_t{4} << 20);
  EXPECT_GE(after[0].reserved_bytes, after[0].allocated_bytes);
}

}  // namespace
}  // namespace kaizen::metrics
