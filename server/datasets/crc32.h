// CRC-32 (the gzip / zlib polynomial, reflected; the same values as zlib's
// crc32) computed with ISA-L's carry-less-multiply kernels: 4.6x zlib's
// crc32_z over 47 MB on the 2-core CI machine (bench/upload, "crc32" stages).
// Every record of a stored dataset is checksummed when written and again
// each time it is read.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kaizen::datasets {

// Continues `crc` (0 to start) over `size` bytes at `data`:
// Crc32(Crc32(0, a), b) == Crc32(0, a + b).
uint32_t Crc32(uint32_t crc, const void* data, size_t size);

}  // namespace kaizen::datasets
