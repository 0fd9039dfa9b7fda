// libFuzzer target: the TorchScript archive pre-check (ZIP central directory,
// member reads, pickle scan) that runs on every uploaded model before
// LibTorch reads it. Inputs are whole archives; the pickle scanner is also
// fed the raw bytes so that it is reached without a valid ZIP around it.
#include <cstddef>
#include <cstdint>

#include "server/sandbox/pickle_scanner.h"
#include "server/sandbox/torchscript_precheck.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  kaizen::sandbox::TorchScriptLimits limits;
  limits.zip.max_member_bytes = 64 << 20;
  limits.zip.max_total_bytes = 64 << 20;
  limits.max_pickle_bytes = 16 << 20;
  kaizen::sandbox::PrecheckTorchScriptArchive(size, kaizen::sandbox::ReadFromMemory(bytes), limits)
      .IgnoreError();
  kaizen::sandbox::ScanPickle(bytes, limits.pickle).IgnoreError();
  return 0;
}
