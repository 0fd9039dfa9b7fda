// The gzip reader (ISA-L igzip) against zlib: whatever the input, reading it
// must not crash; whatever zlib reads whole (every member complete, its
// CRC-32 and length right, nothing after the last), the reader reads too, and
// when both accept they give the same bytes. The first input byte
// picks the size of the reads, so that member and buffer boundaries fall
// inside and between them.
#include <zlib.h>

#include <cstdint>
#include <string>

#include "fuzz/fuzz_util.h"
#include "server/datasets/gzip_reader.h"

namespace {

constexpr size_t kMaxOutput = size_t{4} << 20;

// gunzip as zlib does it, every member in turn; false when zlib refuses the
// input, a member is cut, or the output passes kMaxOutput.
bool ZlibGunzip(const uint8_t* data, size_t size, std::string* out) {
  z_stream z{};
  if (inflateInit2(&z, 16 + 15) != Z_OK) return false;
  z.next_in = const_cast<Bytef*>(data);
  z.avail_in = static_cast<uInt>(size);
  unsigned char buffer[16384];
  bool ok = true;
  while (ok) {
    z.next_out = buffer;
    z.avail_out = sizeof(buffer);
    const int rc = inflate(&z, Z_NO_FLUSH);
    out->append(reinterpret_cast<char*>(buffer), sizeof(buffer) - z.avail_out);
    if (out->size() > kMaxOutput) ok = false;
    if (rc == Z_STREAM_END) {
      if (z.avail_in == 0) break;
      if (inflateReset(&z) != Z_OK) ok = false;
    } else if (rc != Z_OK || (z.avail_in == 0 && z.avail_out != 0)) {
      ok = false;  // an error, or the input ended inside a member
    }
  }
  inflateEnd(&z);
  return ok;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static kaizen::fuzz::MemFile file("gzip");
  if (size < 1) return 0;
  const size_t piece = 1 + data[0] * 37u;
  ++data;
  --size;
  file.Set(data, size);
  auto reader = kaizen::datasets::GzipReader::Open(file.path(), "input.gz");
  kaizen::fuzz::Check(reader.ok());
  std::string ours;
  std::string buffer(piece, '\0');
  bool read_ok = true;
  while (ours.size() <= kMaxOutput) {
    absl::StatusOr<size_t> n = (*reader)->Read(buffer.data(), piece);
    if (!n.ok()) {
      kaizen::fuzz::Check(absl::IsInvalidArgument(n.status()));
      read_ok = false;
      break;
    }
    kaizen::fuzz::Check(*n <= piece);
    ours.append(buffer, 0, *n);
    if (*n < piece) break;
  }
  if (ours.size() > kMaxOutput) return 0;
  const bool we_accept = read_ok && (*reader)->compressed() && (*reader)->Ended();
  std::string theirs;
  const bool zlib_accepts = ZlibGunzip(data, size, &theirs);
  // Whatever zlib reads whole, every member complete and nothing after the
  // last, we read too, to the same bytes; what we accept, zlib reads the same.
  if (zlib_accepts) kaizen::fuzz::Check(we_accept);
  if (we_accept && zlib_accepts) kaizen::fuzz::Check(ours == theirs);
  return 0;
}
