#include "server/datasets/crc32.h"

#include <isa-l/crc.h>

namespace kaizen::datasets {

uint32_t Crc32(uint32_t crc, const void* data, size_t size) {
  return crc32_gzip_refl(crc, static_cast<const unsigned char*>(data), size);  // 64-bit length
}

}  // namespace kaizen::datasets
