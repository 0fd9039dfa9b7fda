#include "server/datasets/crc32.h"

#include <isa-l/crc.h>

#include <algorithm>
#include <climits>

namespace kaizen::datasets {

uint32_t Crc32(uint32_t crc, const void* data, size_t size) {
  // ISA-L takes a 64-bit length; the loop keeps that explicit anyway.
  const auto* p = static_cast<const unsigned char*>(data);
  while (size > 0) {
    const size_t n = std::min<size_t>(size, size_t{1} << 30);
    crc = crc32_gzip_refl(crc, p, n);
    p += n;
    size -= n;
  }
  return crc;
}

}  // namespace kaizen::datasets
