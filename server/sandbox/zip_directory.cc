#include "server/sandbox/zip_directory.h"

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "server/common/status_macros.h"

namespace kaizen::sandbox {
namespace {

constexpr uint32_t kEndOfDirectory = 0x06054b50;
constexpr uint32_t kZip64EndOfDirectory = 0x06064b50;
constexpr uint32_t kZip64Locator = 0x07064b50;
constexpr uint32_t kDirectoryEntry = 0x02014b50;
constexpr uint32_t kLocalHeader = 0x04034b50;
constexpr size_t kEndOfDirectorySize = 22;
constexpr size_t kZip64EndOfDirectorySize = 56;
constexpr size_t kZip64LocatorSize = 20;
constexpr size_t kDirectoryEntrySize = 46;
constexpr size_t kLocalHeaderSize = 30;
constexpr size_t kMaxCommentSize = 0xffff;
constexpr uint16_t kZip64ExtraId = 0x0001;

uint16_t U16(const char* p) {
  return static_cast<uint16_t>(static_cast<uint8_t>(p[0]) | static_cast<uint8_t>(p[1]) << 8);
}
uint32_t U32(const char* p) { return U16(p) | static_cast<uint32_t>(U16(p + 2)) << 16; }
uint64_t U64(const char* p) { return U32(p) | static_cast<uint64_t>(U32(p + 4)) << 32; }

absl::Status Invalid(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("malformed ZIP archive: ", what));
}

// Reads [offset, offset + size) after checking that it lies in the archive.
absl::Status ReadRange(const ReadAt& read, uint64_t archive_size, uint64_t offset, size_t size,
                       std::string* out, absl::string_view what) {
  uint64_t end = 0;
  if (__builtin_add_overflow(offset, size, &end) || end > archive_size) {
    return Invalid(absl::StrCat(what, " lies outside the archive (offset ", offset, ", ", size,
                                " bytes, archive ", archive_size, " bytes)"));
  }
  out->resize(size);
  return size == 0 ? absl::OkStatus() : read(offset, size, out->data());
}

struct Directory {
  uint64_t entries = 0;
  uint64_t offset = 0;
  uint64_t size = 0;
  uint64_t end = 0;  // where the directory's end record starts
};

absl::StatusOr<Directory> ReadZip64End(const ReadAt& read, uint64_t archive_size,
                                       uint64_t end_offset) {
  if (end_offset < kZip64LocatorSize) return Invalid("ZIP64 locator missing");
  std::string locator;
  RETURN_IF_ERROR(ReadRange(read, archive_size, end_offset - kZip64LocatorSize, kZip64LocatorSize,
                            &locator, "the ZIP64 locator"));
  if (U32(locator.data()) != kZip64Locator) return Invalid("ZIP64 locator missing");
  const uint64_t record_offset = U64(locator.data() + 8);
  if (record_offset > end_offset - kZip64LocatorSize) {
    return Invalid("ZIP64 end record points past its locator");
  }
  std::string record;
  RETURN_IF_ERROR(ReadRange(read, archive_size, record_offset, kZip64EndOfDirectorySize, &record,
                            "the ZIP64 end record"));
  if (U32(record.data()) != kZip64EndOfDirectory) return Invalid("bad ZIP64 end record signature");
  Directory d;
  d.entries = U64(record.data() + 32);
  d.size = U64(record.data() + 40);
  d.offset = U64(record.data() + 48);
  d.end = record_offset;
  return d;
}

absl::StatusOr<Directory> FindDirectory(const ReadAt& read, uint64_t archive_size) {
  if (archive_size < kEndOfDirectorySize) {
    return Invalid(absl::StrCat("only ", archive_size, " bytes; no end-of-directory record"));
  }
  const uint64_t tail_size =
      std::min<uint64_t>(archive_size, kEndOfDirectorySize + kMaxCommentSize);
  std::string tail;
  RETURN_IF_ERROR(
      ReadRange(read, archive_size, archive_size - tail_size, tail_size, &tail, "the tail"));
  // The record is followed by a comment of the length it declares; search
  // backwards for a signature whose comment ends exactly at the end.
  for (size_t pos = tail.size() - kEndOfDirectorySize + 1; pos-- > 0;) {
    const char* p = tail.data() + pos;
    if (U32(p) != kEndOfDirectory) continue;
    if (pos + kEndOfDirectorySize + U16(p + 20) != tail.size()) continue;
    if (U16(p + 4) != 0 || U16(p + 6) != 0) return Invalid("multi-disk archives are not supported");
    Directory d;
    d.entries = U16(p + 10);
    d.size = U32(p + 12);
    d.offset = U32(p + 16);
    d.end = archive_size - tail_size + pos;
    if (d.entries == 0xffff || d.size == 0xffffffff || d.offset == 0xffffffff) {
      return ReadZip64End(read, archive_size, d.end);
    }
    return d;
  }
  return Invalid("no end-of-central-directory record (not a ZIP archive)");
}

absl::Status CheckName(absl::string_view name, int max_length) {
  if (name.empty()) return Invalid("a member has an empty name");
  if (static_cast<int>(name.size()) > max_length) {
    return Invalid(absl::StrCat("member name of ", name.size(), " bytes; at most ", max_length,
                                " are allowed"));
  }
  const std::string shown = absl::CHexEscape(name.substr(0, 200));
  if (name.find('\0') != absl::string_view::npos || name.front() == '/' ||
      name.find('\\') != absl::string_view::npos) {
    return Invalid(absl::StrCat("member \"", shown, "\" has a forbidden name"));
  }
  for (absl::string_view part : absl::StrSplit(name, '/')) {
    if (part == "..") return Invalid(absl::StrCat("member \"", shown, "\" climbs out with \"..\""));
  }
  return absl::OkStatus();
}

// Replaces sizes and offset that the entry marks 0xffffffff with the ZIP64
// extra field's values, in the order the format defines.
absl::Status ApplyZip64Extra(absl::string_view extra, uint64_t* uncompressed, uint64_t* compressed,
                             uint64_t* local_offset) {
  while (extra.size() >= 4) {
    const uint16_t id = U16(extra.data());
    const uint16_t size = U16(extra.data() + 2);
    if (size > extra.size() - 4) return Invalid("an extra field runs past its entry");
    absl::string_view body = extra.substr(4, size);
    extra.remove_prefix(4 + size);
    if (id != kZip64ExtraId) continue;
    for (uint64_t* field : {uncompressed, compressed, local_offset}) {
      if (*field != 0xffffffff) continue;
      if (body.size() < 8) return Invalid("the ZIP64 extra field is too short");
      *field = U64(body.data());
      body.remove_prefix(8);
    }
    return absl::OkStatus();
  }
  if (*uncompressed == 0xffffffff || *compressed == 0xffffffff || *local_offset == 0xffffffff) {
    return Invalid("an entry needs a ZIP64 extra field it does not have");
  }
  return absl::OkStatus();
}

absl::Status CheckMemberLimits(const ZipMember& m, const ZipLimits& limits, uint64_t* total) {
  const std::string shown = absl::CHexEscape(m.name.substr(0, 200));
  if (m.method != 0 && m.method != 8) {
    return Invalid(absl::StrCat("member \"", shown, "\" uses compression method ", m.method,
                                "; only stored (0) and deflate (8) are accepted"));
  }
  if (m.method == 0 && m.compressed_size != m.uncompressed_size) {
    return Invalid(absl::StrCat("stored member \"", shown, "\" declares ", m.compressed_size,
                                " bytes stored but ", m.uncompressed_size, " uncompressed"));
  }
  if (m.uncompressed_size > static_cast<uint64_t>(limits.max_member_bytes)) {
    return Invalid(absl::StrCat("member \"", shown, "\" unpacks to ", m.uncompressed_size,
                                " bytes; the limit is ", limits.max_member_bytes));
  }
  if (m.method == 8 && m.uncompressed_size / std::max<uint64_t>(1, m.compressed_size) >
                           static_cast<uint64_t>(limits.max_deflate_ratio)) {
    return Invalid(absl::StrCat("member \"", shown, "\" inflates ", m.compressed_size, " bytes to ",
                                m.uncompressed_size, "; the ratio limit is ",
                                limits.max_deflate_ratio));
  }
  if (__builtin_add_overflow(*total, m.uncompressed_size, total) ||
      *total > static_cast<uint64_t>(limits.max_total_bytes)) {
    return Invalid(
        absl::StrCat("the members unpack to more than ", limits.max_total_bytes, " bytes in all"));
  }
  return absl::OkStatus();
}

// Reads one central directory entry at `*pos` of `dir` and advances `*pos`;
// `local_offset` receives where its local header starts.
absl::StatusOr<ZipMember> ParseEntry(absl::string_view dir, size_t* pos, const ZipLimits& limits,
                                     uint64_t* local_offset) {
  if (dir.size() - *pos < kDirectoryEntrySize) return Invalid("central directory truncated");
  const char* p = dir.data() + *pos;
  if (U32(p) != kDirectoryEntry) return Invalid("bad central directory entry signature");
  const uint16_t flags = U16(p + 8);
  ZipMember m;
  m.method = U16(p + 10);
  m.crc32 = U32(p + 16);
  m.compressed_size = U32(p + 20);
  m.uncompressed_size = U32(p + 24);
  const size_t name_size = U16(p + 28), extra_size = U16(p + 30), comment_size = U16(p + 32);
  *local_offset = U32(p + 42);
  const size_t entry_size = kDirectoryEntrySize + name_size + extra_size + comment_size;
  if (dir.size() - *pos < entry_size) return Invalid("central directory entry truncated");
  const absl::string_view name = dir.substr(*pos + kDirectoryEntrySize, name_size);
  RETURN_IF_ERROR(CheckName(name, limits.max_name_length));
  m.name = std::string(name);
  if (flags & 0x1) {
    return Invalid(absl::StrCat("member \"", absl::CHexEscape(name), "\" is encrypted"));
  }
  RETURN_IF_ERROR(ApplyZip64Extra(dir.substr(*pos + kDirectoryEntrySize + name_size, extra_size),
                                  &m.uncompressed_size, &m.compressed_size, local_offset));
  *pos += entry_size;
  return m;
}

// Finds where the member's data starts from its local header and checks that
// it ends before `limit` (the central directory).
absl::Status LocateData(const ReadAt& read, uint64_t archive_size, uint64_t local_offset,
                        uint64_t limit, ZipMember* m) {
  std::string header;
  RETURN_IF_ERROR(ReadRange(read, archive_size, local_offset, kLocalHeaderSize, &header,
                            absl::StrCat("the local header of \"", m->name, "\"")));
  if (U32(header.data()) != kLocalHeader) {
    return Invalid(absl::StrCat("member \"", absl::CHexEscape(m->name),
                                "\" has no local header where the directory says"));
  }
  uint64_t end = 0;
  const uint64_t variable = uint64_t{U16(header.data() + 26)} + U16(header.data() + 28);
  m->data_offset = local_offset + kLocalHeaderSize + variable;
  if (__builtin_add_overflow(m->data_offset, m->compressed_size, &end) || end > limit) {
    return Invalid(absl::StrCat("the data of member \"", absl::CHexEscape(m->name),
                                "\" runs past the start of the central directory"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<ZipMember>> ReadZipDirectory(uint64_t archive_size, const ReadAt& read,
                                                        const ZipLimits& limits) {
  ASSIGN_OR_RETURN(Directory d, FindDirectory(read, archive_size));
  if (d.entries > static_cast<uint64_t>(limits.max_members)) {
    return Invalid(
        absl::StrCat(d.entries, " members; at most ", limits.max_members, " are allowed"));
  }
  uint64_t dir_end = 0;
  if (__builtin_add_overflow(d.offset, d.size, &dir_end) || dir_end > d.end) {
    return Invalid("the central directory overlaps its end record");
  }
  // A directory entry is at least 46 bytes: a bound before anything is read.
  if (d.size / kDirectoryEntrySize < d.entries ||
      d.size > static_cast<uint64_t>(limits.max_members) * (kDirectoryEntrySize + 3 * 0xffff)) {
    return Invalid("the central directory size does not match its entry count");
  }
  std::string dir;
  RETURN_IF_ERROR(ReadRange(read, archive_size, d.offset, d.size, &dir, "the central directory"));
  std::vector<ZipMember> members;
  members.reserve(d.entries);
  absl::flat_hash_set<std::string> names;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // [start, end) of each member's data
  uint64_t total = 0;
  size_t pos = 0;
  for (uint64_t i = 0; i < d.entries; ++i) {
    uint64_t local_offset = 0;
    ASSIGN_OR_RETURN(ZipMember m, ParseEntry(dir, &pos, limits, &local_offset));
    if (!names.insert(m.name).second) {
      return Invalid(absl::StrCat("member \"", absl::CHexEscape(m.name), "\" appears twice"));
    }
    RETURN_IF_ERROR(CheckMemberLimits(m, limits, &total));
    RETURN_IF_ERROR(LocateData(read, archive_size, local_offset, d.offset, &m));
    ranges.emplace_back(local_offset, m.data_offset + m.compressed_size);
    members.push_back(std::move(m));
  }
  // Overlapping members would let one small file stand for many large ones.
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].second) return Invalid("two members overlap");
  }
  return members;
}

absl::StatusOr<std::string> ReadZipMember(const ZipMember& member, const ReadAt& read,
                                          int64_t max_bytes) {
  const std::string shown = absl::CHexEscape(member.name);
  // zlib counts in 32-bit units; members read whole are small by design.
  max_bytes = std::min<int64_t>(max_bytes, 0xffffffff);
  if (member.uncompressed_size > static_cast<uint64_t>(max_bytes) ||
      member.compressed_size > static_cast<uint64_t>(max_bytes)) {
    return absl::InvalidArgumentError(absl::StrCat("member \"", shown, "\" is ",
                                                   member.uncompressed_size,
                                                   " bytes; the limit for it is ", max_bytes));
  }
  std::string raw(member.compressed_size, '\0');
  if (!raw.empty()) RETURN_IF_ERROR(read(member.data_offset, raw.size(), raw.data()));
  std::string out;
  if (member.method == 0) {
    out = std::move(raw);
  } else {
    out.resize(member.uncompressed_size);
    z_stream z{};
    if (inflateInit2(&z, -MAX_WBITS) != Z_OK) return absl::InternalError("inflateInit2 failed");
    z.next_in = reinterpret_cast<Bytef*>(raw.data());
    z.avail_in = static_cast<uInt>(raw.size());
    z.next_out = reinterpret_cast<Bytef*>(out.data());
    z.avail_out = static_cast<uInt>(out.size());
    const int rc = inflate(&z, Z_FINISH);
    const uint64_t produced = z.total_out;
    inflateEnd(&z);
    if (rc != Z_STREAM_END || produced != member.uncompressed_size) {
      return Invalid(absl::StrCat("member \"", shown, "\" does not inflate to its declared ",
                                  member.uncompressed_size, " bytes"));
    }
  }
  const uint32_t crc =
      crc32(0L, reinterpret_cast<const Bytef*>(out.data()), static_cast<uInt>(out.size()));
  if (crc != member.crc32) return Invalid(absl::StrCat("member \"", shown, "\" fails its CRC-32"));
  return out;
}

ReadAt ReadFromFile(int fd) {
  return [fd](uint64_t offset, size_t size, char* out) -> absl::Status {
    size_t done = 0;
    while (done < size) {
      const ssize_t n = ::pread(fd, out + done, size - done, static_cast<off_t>(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return absl::DataLossError("short read of the archive");
      done += static_cast<size_t>(n);
    }
    return absl::OkStatus();
  };
}

ReadAt ReadFromMemory(absl::string_view bytes) {
  return [bytes](uint64_t offset, size_t size, char* out) -> absl::Status {
    if (offset > bytes.size() || size > bytes.size() - offset) {
      return absl::OutOfRangeError("read past the end");
    }
    std::memcpy(out, bytes.data() + offset, size);
    return absl::OkStatus();
  };
}

}  // namespace kaizen::sandbox
