#include "tests/test_util/zip_builder.h"

#include <zlib.h>

namespace kaizen::test_util {
namespace {

void Put16(std::string* s, uint32_t v) {
  s->push_back(static_cast<char>(v & 0xff));
  s->push_back(static_cast<char>((v >> 8) & 0xff));
}
void Put32(std::string* s, uint32_t v) {
  Put16(s, v & 0xffff);
  Put16(s, v >> 16);
}

// Raw deflate (window_bits -15) or gzip (15 + 16) of `data`.
std::string Compress(const std::string& data, int level, int window_bits) {
  z_stream z{};
  deflateInit2(&z, level, Z_DEFLATED, window_bits, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&z, data.size()), '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

std::string Deflate(const std::string& data) { return Compress(data, 9, -MAX_WBITS); }

}  // namespace

std::string Gzip(const std::string& data) { return Compress(data, 6, MAX_WBITS + 16); }

std::string MakeZip(const std::vector<ZipEntry>& entries) {
  std::string body, dir;
  for (const ZipEntry& e : entries) {
    const std::string stored = e.deflate ? Deflate(e.data) : e.data;
    const uint32_t crc =
        crc32(0, reinterpret_cast<const Bytef*>(e.data.data()), static_cast<uInt>(e.data.size()));
    const uint32_t size =
        e.declared_size >= 0 ? static_cast<uint32_t>(e.declared_size) : e.data.size();
    const uint32_t offset = body.size();
    Put32(&body, 0x04034b50);
    Put16(&body, 20);
    Put16(&body, 0);
    Put16(&body, e.deflate ? 8 : 0);
    Put32(&body, 0);
    Put32(&body, crc);
    Put32(&body, stored.size());
    Put32(&body, size);
    Put16(&body, e.name.size());
    Put16(&body, 0);
    body += e.name + stored;
    Put32(&dir, 0x02014b50);
    Put16(&dir, 20);
    Put16(&dir, 20);
    Put16(&dir, 0);
    Put16(&dir, e.deflate ? 8 : 0);
    Put32(&dir, 0);
    Put32(&dir, crc);
    Put32(&dir, stored.size());
    Put32(&dir, size);
    Put16(&dir, e.name.size());
    Put16(&dir, 0);
    Put16(&dir, 0);
    Put16(&dir, 0);
    Put16(&dir, 0);
    Put32(&dir, 0);
    Put32(&dir, offset);
    dir += e.name;
  }
  std::string out = body + dir;
  Put32(&out, 0x06054b50);
  Put16(&out, 0);
  Put16(&out, 0);
  Put16(&out, entries.size());
  Put16(&out, entries.size());
  Put32(&out, dir.size());
  Put32(&out, body.size());
  Put16(&out, 0);
  return out;
}

}  // namespace kaizen::test_util
