#include "server/datasets/dataset_file.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/common/atomic_file.h"
#include "server/common/checked_math.h"
#include "server/common/status_macros.h"
#include "server/datasets/crc32.h"
#include "server/datasets/little_endian.h"

namespace kaizen::datasets {
namespace {

constexpr char kMagic[4] = {'K', 'Z', 'D', 'S'};
constexpr uint32_t kVersion = 1;
constexpr size_t kFixedHeaderBytes = 4 + 4 + 4 + 8 + 8;
constexpr size_t kRecordBytes = 4 * 4 + 8;

// height * width * channels, or -1 when that overflows: the shape comes from
// the file, and a wrapped product could pass the bounds check below.
int64_t RecordBytes(const DecodedDataset::Record& r) {
  const std::optional<int64_t> area = common::CheckedMul(r.height, r.width);
  const std::optional<int64_t> bytes =
      area.has_value() ? common::CheckedMul(*area, r.channels) : std::nullopt;
  return bytes.value_or(-1);
}

// Checks one record against the class and pixel counts; `why` gets the
// reason when it does not fit.
bool RecordIsValid(const DecodedDataset::Record& r, size_t num_classes, uint64_t pixel_bytes,
                   std::string* why) {
  if (r.label < 0 || static_cast<size_t>(r.label) >= num_classes) {
    *why = absl::StrCat("label ", r.label, " has no class name (", num_classes, " classes)");
    return false;
  }
  if (r.height <= 0 || r.width <= 0 || r.channels < 1 || r.channels > 4) {
    *why = absl::StrCat("bad shape ", r.height, "x", r.width, "x", r.channels);
    return false;
  }
  const int64_t bytes = RecordBytes(r);
  if (bytes < 0) {
    *why =
        absl::StrCat("shape ", r.height, "x", r.width, "x", r.channels, " overflows a 64-bit size");
    return false;
  }
  if (r.offset < 0 || static_cast<uint64_t>(r.offset) > pixel_bytes ||
      static_cast<uint64_t>(bytes) > pixel_bytes - static_cast<uint64_t>(r.offset)) {
    *why = absl::StrCat("pixels at offset ", r.offset, " (", RecordBytes(r),
                        " bytes) lie outside the ", pixel_bytes, " pixel bytes");
    return false;
  }
  return true;
}

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

// Reads exact byte counts from the file, keeping a running CRC and knowing how
// many bytes remain, so that a damaged count never triggers a huge allocation.
class ChecksummedReader {
 public:
  ChecksummedReader(std::FILE* file, uint64_t size, const std::string& path)
      : file_(file), remaining_(size), path_(path) {}

  absl::Status Read(void* out, uint64_t size, absl::string_view what) {
    if (size > remaining_) {
      return absl::DataLossError(absl::StrCat(path_, ": damaged dataset file: ", what, " needs ",
                                              size, " bytes but only ", remaining_, " remain"));
    }
    if (size > 0 && std::fread(out, 1, size, file_) != size) {
      return absl::DataLossError(
          absl::StrCat(path_, ": cannot read ", what, ": ", std::strerror(errno)));
    }
    crc_ = Crc32(crc_, out, size);
    remaining_ -= size;
    return absl::OkStatus();
  }

  uint64_t remaining() const { return remaining_; }
  uint32_t crc() const { return crc_; }

 private:
  std::FILE* file_;
  uint64_t remaining_;
  const std::string& path_;
  uint32_t crc_ = 0;
};

}  // namespace

absl::StatusOr<int64_t> WriteDatasetFile(const std::string& path, const DecodedDataset& data) {
  for (size_t i = 0; i < data.records.size(); ++i) {
    std::string why;
    if (!RecordIsValid(data.records[i], data.class_names.size(), data.pixels.size(), &why)) {
      return absl::InvalidArgumentError(absl::StrCat("record ", i, ": ", why));
    }
  }
  std::string header(kMagic, sizeof(kMagic));
  PutU32(&header, kVersion);
  PutU32(&header, static_cast<uint32_t>(data.class_names.size()));
  PutU64(&header, data.records.size());
  PutU64(&header, data.pixels.size());
  for (const std::string& name : data.class_names) {
    PutU32(&header, static_cast<uint32_t>(name.size()));
    header.append(name);
  }
  header.reserve(header.size() + data.records.size() * kRecordBytes);
  for (const DecodedDataset::Record& r : data.records) {
    PutU32(&header, static_cast<uint32_t>(r.label));
    PutU32(&header, static_cast<uint32_t>(r.height));
    PutU32(&header, static_cast<uint32_t>(r.width));
    PutU32(&header, static_cast<uint32_t>(r.channels));
    PutU64(&header, static_cast<uint64_t>(r.offset));
  }
  uint32_t crc = Crc32(0, header.data(), header.size());
  crc = Crc32(crc, data.pixels.data(), data.pixels.size());
  std::string trailer;
  PutU32(&trailer, crc);

  common::AtomicFileWriter writer;
  RETURN_IF_ERROR(common::AtomicFileWriter::Open(path, &writer));
  RETURN_IF_ERROR(writer.Append(header));
  RETURN_IF_ERROR(writer.Append(data.pixels.data(), data.pixels.size()));
  RETURN_IF_ERROR(writer.Append(trailer));
  const int64_t written = writer.bytes_written();
  RETURN_IF_ERROR(writer.Commit());
  return written;
}

namespace {

absl::Status ReadClassNames(ChecksummedReader* reader, uint32_t num_classes,
                            const std::string& path, DecodedDataset* data) {
  // Each class name takes at least its 4-byte length.
  if (uint64_t{num_classes} * 4 > reader->remaining()) {
    return absl::DataLossError(
        absl::StrCat(path, ": damaged dataset file: ", num_classes, " classes cannot fit"));
  }
  data->class_names.resize(num_classes);
  for (std::string& name : data->class_names) {
    unsigned char length[4];
    RETURN_IF_ERROR(reader->Read(length, sizeof(length), "class name length"));
    const uint32_t size = GetU32(length);
    if (size > reader->remaining()) {
      return absl::DataLossError(
          absl::StrCat(path, ": damaged dataset file: class name of ", size, " bytes cannot fit"));
    }
    name.resize(size);
    RETURN_IF_ERROR(reader->Read(name.data(), size, "class name"));
  }

  return absl::OkStatus();
}

// Reads and checks the record table; leaves the reader at the pixels.
absl::Status ReadRecordTable(ChecksummedReader* reader, uint64_t num_records, uint32_t num_classes,
                             uint64_t pixel_bytes, const std::string& path, DecodedDataset* data) {
  if (num_records > reader->remaining() / kRecordBytes) {
    return absl::DataLossError(
        absl::StrCat(path, ": damaged dataset file: ", num_records, " records cannot fit"));
  }
  std::string table(num_records * kRecordBytes, '\0');
  RETURN_IF_ERROR(reader->Read(table.data(), table.size(), "record table"));
  if (pixel_bytes != reader->remaining()) {
    return absl::DataLossError(absl::StrCat(path, ": damaged dataset file: header says ",
                                            pixel_bytes, " pixel bytes but ", reader->remaining(),
                                            " remain"));
  }
  data->records.resize(num_records);
  const auto* p = reinterpret_cast<const unsigned char*>(table.data());
  for (uint64_t i = 0; i < num_records; ++i, p += kRecordBytes) {
    DecodedDataset::Record& r = data->records[i];
    r.label = static_cast<int32_t>(GetU32(p));
    r.height = static_cast<int32_t>(GetU32(p + 4));
    r.width = static_cast<int32_t>(GetU32(p + 8));
    r.channels = static_cast<int32_t>(GetU32(p + 12));
    r.offset = static_cast<int64_t>(GetU64(p + 16));
    std::string why;
    if (!RecordIsValid(r, num_classes, pixel_bytes, &why)) {
      return absl::DataLossError(
          absl::StrCat(path, ": damaged dataset file: record ", i, ": ", why));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<DecodedDataset> ReadDatasetFile(const std::string& path) {
  std::unique_ptr<std::FILE, FileCloser> file(std::fopen(path.c_str(), "rb"));
  if (file == nullptr) {
    const int err = errno;
    if (err == ENOENT) return absl::NotFoundError(absl::StrCat(path, ": no such dataset file"));
    return absl::InternalError(absl::StrCat("cannot open ", path, ": ", std::strerror(err)));
  }
  if (std::fseek(file.get(), 0, SEEK_END) != 0) {
    return absl::InternalError(absl::StrCat("cannot seek in ", path, ": ", std::strerror(errno)));
  }
  const long file_size = std::ftell(file.get());  // NOLINT(runtime/int): ftell's type
  std::rewind(file.get());
  if (file_size < static_cast<long>(kFixedHeaderBytes + 4)) {  // NOLINT(runtime/int)
    return absl::DataLossError(
        absl::StrCat(path, ": damaged dataset file: only ", file_size, " bytes"));
  }
  // The trailing CRC is not part of the checksummed content.
  ChecksummedReader reader(file.get(), static_cast<uint64_t>(file_size) - 4, path);

  unsigned char fixed[kFixedHeaderBytes];
  RETURN_IF_ERROR(reader.Read(fixed, sizeof(fixed), "header"));
  if (std::memcmp(fixed, kMagic, sizeof(kMagic)) != 0) {
    return absl::DataLossError(absl::StrCat(path, ": not a Kaizen dataset file (bad magic)"));
  }
  const uint32_t version = GetU32(fixed + 4);
  if (version != kVersion) {
    return absl::DataLossError(absl::StrCat(path, ": unsupported dataset file version ", version,
                                            " (expected ", kVersion, ")"));
  }
  const uint32_t num_classes = GetU32(fixed + 8);
  const uint64_t num_records = GetU64(fixed + 12);
  const uint64_t pixel_bytes = GetU64(fixed + 20);

  DecodedDataset data;
  RETURN_IF_ERROR(ReadClassNames(&reader, num_classes, path, &data));
  RETURN_IF_ERROR(ReadRecordTable(&reader, num_records, num_classes, pixel_bytes, path, &data));
  data.pixels.resize(pixel_bytes);
  RETURN_IF_ERROR(reader.Read(data.pixels.data(), pixel_bytes, "pixels"));

  unsigned char trailer[4];
  if (std::fread(trailer, 1, sizeof(trailer), file.get()) != sizeof(trailer)) {
    return absl::DataLossError(absl::StrCat(path, ": damaged dataset file: no checksum"));
  }
  if (GetU32(trailer) != reader.crc()) {
    return absl::DataLossError(absl::StrCat(path,
                                            ": damaged dataset file: checksum mismatch (stored ",
                                            GetU32(trailer), ", computed ", reader.crc(), ")"));
  }
  return data;
}

}  // namespace kaizen::datasets
