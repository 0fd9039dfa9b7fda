#include "server/datasets/record_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <optional>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/common/checked_math.h"
#include "server/common/status_macros.h"
#include "server/datasets/crc32.h"
#include "server/datasets/little_endian.h"
#include "zlib.h"

namespace kaizen::datasets {
namespace {

constexpr char kMagic[4] = {'K', 'Z', 'R', 'F'};
constexpr uint32_t kVersion = 1;
constexpr uint64_t kPage = 4096;
constexpr uint64_t kEntryBytes = 8 + 8 + 4 * 4 + 4 + 4;  // one index entry: 40
constexpr uint64_t kTrailerBytes = 48;

uint32_t Crc32(const void* data, uint64_t size) {
  return datasets::Crc32(0, data, static_cast<size_t>(size));
}

// height * width * channels, or nullopt when it overflows.
std::optional<int64_t> PixelBytes(int32_t height, int32_t width, int32_t channels) {
  const std::optional<int64_t> area = common::CheckedMul(height, width);
  return area.has_value() ? common::CheckedMul(*area, channels) : std::nullopt;
}

// Why a record's fields are not valid, or "" when they are; the checks the
// writer and the reader share.
std::string RecordProblem(int32_t label, int32_t height, int32_t width, int32_t channels,
                          uint32_t encoding, uint64_t size) {
  if (label < 0) return absl::StrCat("negative label ", label);
  if (height <= 0 || width <= 0 || channels < 1 || channels > 4) {
    return absl::StrCat("bad shape ", height, "x", width, "x", channels);
  }
  const std::optional<int64_t> pixels = PixelBytes(height, width, channels);
  if (!pixels.has_value()) {
    return absl::StrCat("shape ", height, "x", width, "x", channels, " overflows a 64-bit size");
  }
  switch (static_cast<RecordEncoding>(encoding)) {
    case RecordEncoding::kRaw:
      if (size != static_cast<uint64_t>(*pixels)) {
        return absl::StrCat("raw record of ", size, " bytes for a ", height, "x", width, "x",
                            channels, " image (", *pixels, " bytes)");
      }
      return "";
    case RecordEncoding::kJpeg:
    case RecordEncoding::kPng:
      if (size == 0) return "empty encoded record";
      return "";
    case RecordEncoding::kText:
    case RecordEncoding::kTextDeflate:
      if (height != 1 || channels != 1) {
        return absl::StrCat("text record of shape ", height, "x", width, "x", channels,
                            "; text records are 1xNx1");
      }
      if (encoding == static_cast<uint32_t>(RecordEncoding::kText) &&
          size != static_cast<uint64_t>(width)) {
        return absl::StrCat("text record of ", size, " bytes whose index entry says ", width);
      }
      if (size == 0) return "empty text record";
      return "";
  }
  return absl::StrCat("unknown encoding ", encoding);
}

uint64_t PadToPage(uint64_t n) { return (kPage - n % kPage) % kPage; }

}  // namespace

absl::StatusOr<std::unique_ptr<RecordFileWriter>> RecordFileWriter::Create(
    const std::string& path, const RecordFileLimits& limits) {
  std::unique_ptr<RecordFileWriter> w(new RecordFileWriter());
  w->limits_ = limits;
  // Records are small (a 28x28 image is 784 bytes): one write(2) per MiB.
  RETURN_IF_ERROR(common::AtomicFileWriter::Open(path, &w->file_, size_t{1} << 20));
  std::string header(kMagic, sizeof(kMagic));
  PutU32(&header, kVersion);
  header.resize(kPage, '\0');
  RETURN_IF_ERROR(w->file_.Append(header));
  return w;
}

absl::StatusOr<uint64_t> RecordFileWriter::Append(int32_t label, int32_t height, int32_t width,
                                                  int32_t channels, RecordEncoding encoding,
                                                  absl::Span<const uint8_t> bytes) {
  if (done_) return absl::FailedPreconditionError("the record file is already finished");
  const std::string problem =
      RecordProblem(label, height, width, channels, static_cast<uint32_t>(encoding), bytes.size());
  if (!problem.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("record ", index_.size(), ": ", problem));
  }
  if (index_.size() >= limits_.max_records) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "more than ", limits_.max_records, " records; the limit is ", limits_.max_records));
  }
  if (bytes.size() > limits_.max_record_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("record ", index_.size(), " is ", bytes.size(),
                                                     " bytes; the limit is ",
                                                     limits_.max_record_bytes));
  }
  RecordInfo info;
  info.offset = static_cast<uint64_t>(file_.bytes_written());
  info.size = bytes.size();
  info.label = label;
  info.height = height;
  info.width = width;
  info.channels = channels;
  info.encoding = encoding;
  info.crc = Crc32(bytes.data(), bytes.size());
  if (absl::Status written = file_.Append(bytes.data(), bytes.size()); !written.ok()) {
    // Part of the record may be in the file: nothing after it could be trusted.
    done_ = true;
    file_.Abandon();
    return written;
  }
  index_.push_back(info);
  return index_.size() - 1;
}

absl::StatusOr<uint64_t> RecordFileWriter::AppendText(int32_t label, absl::string_view utf8) {
  if (utf8.empty() || utf8.size() > static_cast<size_t>(INT32_MAX)) {
    return absl::InvalidArgumentError(absl::StrCat("record ", index_.size(), ": a text of ",
                                                   utf8.size(),
                                                   " bytes; a text record holds 1 byte to 2 GiB"));
  }
  const auto width = static_cast<int32_t>(utf8.size());
  const auto* plain = reinterpret_cast<const uint8_t*>(utf8.data());
  // Raw deflate, no header: short texts (a sentence) gain little, and a
  // zlib header would eat that.
  if (deflater_ == nullptr) {
    auto* z = new z_stream{};
    if (deflateInit2(z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY) !=
        Z_OK) {
      delete z;
      return absl::ResourceExhaustedError("zlib: cannot start deflating");
    }
    deflater_ = std::shared_ptr<void>(z, [](void* p) {
      deflateEnd(static_cast<z_stream*>(p));
      delete static_cast<z_stream*>(p);
    });
  }
  auto& z = *static_cast<z_stream*>(deflater_.get());
  deflateReset(&z);
  std::string packed(deflateBound(&z, static_cast<uLong>(utf8.size())), '\0');
  z.next_in = const_cast<Bytef*>(plain);
  z.avail_in = static_cast<uInt>(utf8.size());
  z.next_out = reinterpret_cast<Bytef*>(packed.data());
  z.avail_out = static_cast<uInt>(packed.size());
  const int rc = deflate(&z, Z_FINISH);
  const size_t packed_size = packed.size() - z.avail_out;
  if (rc == Z_STREAM_END && packed_size < utf8.size()) {
    return Append(label, 1, width, 1, RecordEncoding::kTextDeflate,
                  {reinterpret_cast<const uint8_t*>(packed.data()), packed_size});
  }
  return Append(label, 1, width, 1, RecordEncoding::kText, {plain, utf8.size()});
}

absl::StatusOr<int64_t> RecordFileWriter::Finish(const std::vector<std::string>& class_names) {
  std::vector<RecordPick> all(index_.size());
  for (size_t i = 0; i < index_.size(); ++i) all[i] = {i, index_[i].label};
  return Finish(class_names, all);
}

absl::StatusOr<int64_t> RecordFileWriter::Finish(const std::vector<std::string>& class_names,
                                                 absl::Span<const RecordPick> picks) {
  if (done_) return absl::FailedPreconditionError("the record file is already finished");
  done_ = true;
  if (class_names.size() > limits_.max_classes) {
    file_.Abandon();
    return absl::ResourceExhaustedError(
        absl::StrCat(class_names.size(), " classes; the limit is ", limits_.max_classes));
  }
  for (size_t c = 0; c < class_names.size(); ++c) {
    if (class_names[c].size() > limits_.max_class_name_bytes) {
      file_.Abandon();
      return absl::ResourceExhaustedError(
          absl::StrCat("class name ", c, " is ", class_names[c].size(), " bytes; the limit is ",
                       limits_.max_class_name_bytes));
    }
  }
  std::vector<bool> picked(index_.size(), false);
  std::vector<RecordInfo> records;
  records.reserve(picks.size());
  for (size_t i = 0; i < picks.size(); ++i) {
    const RecordPick& pick = picks[i];
    std::string problem;
    if (pick.record >= index_.size()) {
      problem = absl::StrCat("picks record ", pick.record, " of ", index_.size());
    } else if (picked[pick.record]) {
      problem = absl::StrCat("picks record ", pick.record, " twice");
    } else if (pick.label < 0 || static_cast<size_t>(pick.label) >= class_names.size()) {
      problem = absl::StrCat("label ", pick.label, " has no class name (", class_names.size(),
                             " classes)");
    }
    if (!problem.empty()) {
      file_.Abandon();
      return absl::InvalidArgumentError(absl::StrCat("record ", i, ": ", problem));
    }
    picked[pick.record] = true;
    records.push_back(index_[pick.record]);
    records.back().label = pick.label;
  }
  const uint64_t index_offset =
      static_cast<uint64_t>(file_.bytes_written()) + PadToPage(file_.bytes_written());
  std::string index(index_offset - static_cast<uint64_t>(file_.bytes_written()), '\0');
  const size_t index_start = index.size();
  for (const std::string& name : class_names) {
    PutU32(&index, static_cast<uint32_t>(name.size()));
    index.append(name);
  }
  for (const RecordInfo& r : records) {
    PutU64(&index, r.offset);
    PutU64(&index, r.size);
    PutU32(&index, static_cast<uint32_t>(r.label));
    PutU32(&index, static_cast<uint32_t>(r.height));
    PutU32(&index, static_cast<uint32_t>(r.width));
    PutU32(&index, static_cast<uint32_t>(r.channels));
    PutU32(&index, static_cast<uint32_t>(r.encoding));
    PutU32(&index, r.crc);
  }
  const uint64_t index_bytes = index.size() - index_start;
  const uint32_t index_crc = Crc32(index.data() + index_start, index_bytes);
  std::string trailer(kMagic, sizeof(kMagic));
  PutU32(&trailer, kVersion);
  PutU64(&trailer, index_offset);
  PutU64(&trailer, index_bytes);
  PutU64(&trailer, records.size());
  PutU32(&trailer, static_cast<uint32_t>(class_names.size()));
  PutU32(&trailer, index_crc);
  PutU32(&trailer, 0);
  PutU32(&trailer, Crc32(trailer.data(), trailer.size()));
  RETURN_IF_ERROR(file_.Append(index));
  RETURN_IF_ERROR(file_.Append(trailer));
  const int64_t written = file_.bytes_written();
  RETURN_IF_ERROR(file_.Commit());
  return written;
}

RecordFile::~RecordFile() {
  if (map_ != nullptr) ::munmap(const_cast<uint8_t*>(map_), map_bytes_);
}

absl::StatusOr<std::unique_ptr<RecordFile>> RecordFile::Open(const std::string& path,
                                                             const RecordFileLimits& limits) {
  std::unique_ptr<RecordFile> f(new RecordFile());
  f->path_ = path;
  auto damaged = [&](const std::string& why) {
    return absl::DataLossError(absl::StrCat(path, ": damaged record file: ", why));
  };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return absl::NotFoundError(absl::StrCat(path, ": no such record file"));
    return absl::InternalError(absl::StrCat("cannot open ", path, ": ", std::strerror(err)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::InternalError(absl::StrCat("cannot stat ", path, ": ", std::strerror(err)));
  }
  const uint64_t file_bytes = static_cast<uint64_t>(st.st_size);
  if (file_bytes < kPage + kTrailerBytes) {
    ::close(fd);
    return damaged(absl::StrCat("only ", file_bytes, " bytes"));
  }
  void* map = ::mmap(nullptr, file_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_errno = errno;
  ::close(fd);
  if (map == MAP_FAILED) {
    return absl::InternalError(absl::StrCat("cannot map ", path, ": ", std::strerror(map_errno)));
  }
  f->map_ = static_cast<const uint8_t*>(map);
  f->map_bytes_ = file_bytes;
  const uint8_t* base = f->map_;

  if (std::memcmp(base, kMagic, sizeof(kMagic)) != 0) {
    return absl::DataLossError(absl::StrCat(path, ": not a Kaizen record file (bad magic)"));
  }
  if (GetU32(base + 4) != kVersion) {
    return absl::DataLossError(absl::StrCat(path, ": unsupported record file version ",
                                            GetU32(base + 4), " (expected ", kVersion, ")"));
  }
  const uint8_t* t = base + file_bytes - kTrailerBytes;
  if (std::memcmp(t, kMagic, sizeof(kMagic)) != 0 || GetU32(t + 4) != kVersion) {
    return damaged("no trailer (the file was cut short?)");
  }
  if (GetU32(t + 44) != Crc32(t, 44)) return damaged("trailer checksum mismatch");
  const uint64_t index_offset = GetU64(t + 8);
  const uint64_t index_bytes = GetU64(t + 16);
  const uint64_t num_records = GetU64(t + 24);
  const uint32_t num_classes = GetU32(t + 32);
  const uint32_t index_crc = GetU32(t + 36);
  if (GetU32(t + 40) != 0) return damaged("the trailer's reserved field is not zero");
  const uint64_t index_room = file_bytes - kTrailerBytes;
  if (index_offset < kPage || index_offset % kPage != 0 || index_offset > index_room ||
      index_bytes > index_room - index_offset) {
    return damaged(
        absl::StrCat("index at ", index_offset, " (", index_bytes, " bytes) outside the file"));
  }
  if (num_records > limits.max_records) {
    return damaged(
        absl::StrCat(num_records, " records, more than the limit of ", limits.max_records));
  }
  if (num_classes > limits.max_classes) {
    return damaged(
        absl::StrCat(num_classes, " classes, more than the limit of ", limits.max_classes));
  }
  const uint8_t* index = base + index_offset;
  if (Crc32(index, index_bytes) != index_crc) return damaged("index checksum mismatch");

  // Class names, then exactly num_records entries.
  uint64_t at = 0;
  f->class_names_.reserve(num_classes);
  for (uint32_t c = 0; c < num_classes; ++c) {
    if (index_bytes - at < 4) return damaged(absl::StrCat("class name ", c, " cut short"));
    const uint32_t length = GetU32(index + at);
    at += 4;
    if (length > limits.max_class_name_bytes || length > index_bytes - at) {
      return damaged(absl::StrCat("class name ", c, " of ", length, " bytes"));
    }
    f->class_names_.emplace_back(reinterpret_cast<const char*>(index + at), length);
    at += length;
  }
  if ((index_bytes - at) / kEntryBytes != num_records || (index_bytes - at) % kEntryBytes != 0) {
    return damaged(
        absl::StrCat("an index of ", index_bytes - at, " bytes for ", num_records, " records"));
  }
  f->records_.resize(num_records);
  for (uint64_t i = 0; i < num_records; ++i, at += kEntryBytes) {
    const uint8_t* e = index + at;
    RecordInfo& r = f->records_[i];
    r.offset = GetU64(e);
    r.size = GetU64(e + 8);
    r.label = static_cast<int32_t>(GetU32(e + 16));
    r.height = static_cast<int32_t>(GetU32(e + 20));
    r.width = static_cast<int32_t>(GetU32(e + 24));
    r.channels = static_cast<int32_t>(GetU32(e + 28));
    const uint32_t encoding = GetU32(e + 32);
    r.encoding = static_cast<RecordEncoding>(encoding);
    r.crc = GetU32(e + 36);
    std::string problem = RecordProblem(r.label, r.height, r.width, r.channels, encoding, r.size);
    if (problem.empty() && static_cast<uint64_t>(r.label) >= num_classes) {
      problem = absl::StrCat("label ", r.label, " has no class name (", num_classes, " classes)");
    }
    if (problem.empty() && r.size > limits.max_record_bytes) {
      problem = absl::StrCat(r.size, " bytes, more than the limit of ", limits.max_record_bytes);
    }
    if (problem.empty() &&
        (r.offset < kPage || r.offset > index_offset || r.size > index_offset - r.offset)) {
      problem = absl::StrCat("bytes at ", r.offset, " (", r.size, ") outside the records");
    }
    if (!problem.empty()) return damaged(absl::StrCat("record ", i, ": ", problem));
  }
  // No two records share a byte, so the records' bytes together are within
  // the file's: a small index cannot make many records of one big one.
  std::vector<std::pair<uint64_t, uint64_t>> spans;  // offset, size
  spans.reserve(f->records_.size());
  for (const RecordInfo& r : f->records_) spans.emplace_back(r.offset, r.size);
  std::sort(spans.begin(), spans.end());
  for (size_t k = 1; k < spans.size(); ++k) {
    if (spans[k].first - spans[k - 1].first < spans[k - 1].second) {
      return damaged(
          absl::StrCat("records at ", spans[k - 1].first, " and ", spans[k].first, " overlap"));
    }
  }
  return f;
}

absl::StatusOr<absl::Span<const uint8_t>> RecordFile::Read(uint64_t i) const {
  if (i >= records_.size()) {
    return absl::OutOfRangeError(
        absl::StrCat(path_, ": record ", i, " of ", records_.size(), " does not exist"));
  }
  const RecordInfo& r = records_[i];
  absl::Span<const uint8_t> bytes(map_ + r.offset, r.size);
  if (Crc32(bytes.data(), bytes.size()) != r.crc) {
    return absl::DataLossError(
        absl::StrCat(path_, ": damaged record file: record ", i, " checksum mismatch"));
  }
  return bytes;
}

absl::StatusOr<std::string> RecordFile::ReadText(uint64_t i) const {
  ASSIGN_OR_RETURN(const absl::Span<const uint8_t> bytes, Read(i));
  const RecordInfo& r = records_[i];
  if (r.encoding == RecordEncoding::kText) {
    return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  }
  if (r.encoding != RecordEncoding::kTextDeflate) {
    return absl::FailedPreconditionError(
        absl::StrCat(path_, ": record ", i, " is an image, not a text"));
  }
  // The index entry's width bounds the output: a record cannot inflate past
  // it, and deflate cannot make it more than 1032 times the record's size.
  if (static_cast<uint64_t>(r.width) > 1032 * r.size + 64) {
    return absl::DataLossError(absl::StrCat(path_, ": damaged record file: text record ", i, " of ",
                                            r.size, " bytes claims ", r.width));
  }
  std::string text(static_cast<size_t>(r.width), '\0');
  z_stream z{};
  if (inflateInit2(&z, -MAX_WBITS) != Z_OK) {
    return absl::ResourceExhaustedError("zlib: cannot start inflating");
  }
  z.next_in = const_cast<Bytef*>(bytes.data());
  z.avail_in = static_cast<uInt>(bytes.size());
  z.next_out = reinterpret_cast<Bytef*>(text.data());
  z.avail_out = static_cast<uInt>(text.size());
  const int rc = inflate(&z, Z_FINISH);
  const bool whole = rc == Z_STREAM_END && z.avail_out == 0 && z.avail_in == 0;
  inflateEnd(&z);
  if (!whole) {
    return absl::DataLossError(absl::StrCat(path_, ": damaged record file: text record ", i,
                                            " does not inflate to its ", r.width, " bytes"));
  }
  return text;
}

void RecordFile::Release(uint64_t i) const {
  if (i >= records_.size()) return;
  // A page fault maps more than the page it needs: the cached pages around
  // it (the kernel's fault-around, 64 KiB) or, where the page cache holds
  // large folios (ext4 on 6.x kernels), a whole folio of up to 2 MiB, never
  // past its 2 MiB-aligned window of the address space. Those windows are
  // released, or a random-order pass would leave the neighbours mapped: with
  // 64 KiB blocks, 30 MB of an 800-image, 42 MB file stayed resident during
  // an epoch on 6.18 (bench/RESULTS.md). The neighbours are read again from
  // the page cache where a reader still needs them.
  constexpr uintptr_t kBlock = uintptr_t{2} << 20;
  const RecordInfo& r = records_[i];
  const auto base = reinterpret_cast<uintptr_t>(map_);
  const uintptr_t begin = std::max(base, (base + r.offset) / kBlock * kBlock);
  const uintptr_t end =
      std::min(base + map_bytes_, (base + r.offset + r.size + kBlock - 1) / kBlock * kBlock);
  if (end <= begin) return;
  // Advice only: a failure leaves the pages resident, nothing worse.
  (void)::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

absl::StatusOr<RecordFile::Pixels> RecordFile::Decode(uint64_t i,
                                                      const DecodeLimits& limits) const {
  ASSIGN_OR_RETURN(const absl::Span<const uint8_t> bytes, Read(i));
  const RecordInfo& r = records_[i];
  if (IsTextEncoding(r.encoding)) {
    return absl::FailedPreconditionError(
        absl::StrCat(path_, ": record ", i, " is a text, not an image"));
  }
  Pixels out;
  if (r.encoding == RecordEncoding::kRaw) {
    out.raw_ = bytes.data();
    return out;
  }
  // No image may decode larger than its index entry says.
  DecodeLimits record_limits = limits;
  record_limits.max_pixels = int64_t{r.height} * r.width;
  absl::StatusOr<Image> image = DecodeImage(
      absl::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()), record_limits);
  if (!image.ok()) {
    // The store wrote only images that decoded: a record that no longer
    // does is damage, unless the caller's budget ran out.
    const bool budget = limits.budget != nullptr && limits.budget->exhausted();
    return absl::Status(budget ? absl::StatusCode::kResourceExhausted : absl::StatusCode::kDataLoss,
                        absl::StrCat(path_, ": record ", i,
                                     " does not decode as stored: ", image.status().message()));
  }
  if (image->height != r.height || image->width != r.width || image->channels != r.channels) {
    return absl::DataLossError(absl::StrCat(path_, ": damaged record file: record ", i,
                                            " decodes to ", image->height, "x", image->width, "x",
                                            image->channels, " but its index entry says ", r.height,
                                            "x", r.width, "x", r.channels));
  }
  out.decoded_ = *std::move(image);
  return out;
}

absl::StatusOr<DecodedDataset> RecordFile::ReadAll(const DecodeLimits& limits,
                                                   uint64_t max_decoded_bytes, int threads) const {
  DecodedDataset out;
  out.class_names = class_names_;
  out.records.reserve(records_.size());
  // Open() checked each record's shape, so each product fits; the sum is
  // checked against the budget as it grows, so it cannot wrap.
  uint64_t total = 0;
  for (const RecordInfo& r : records_) {
    out.records.push_back({r.label, r.height, r.width, r.channels, static_cast<int64_t>(total)});
    total += static_cast<uint64_t>(*PixelBytes(r.height, r.width, r.channels));
    if (total > max_decoded_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat(path_, ": the dataset's ", records_.size(), " images decode to more than ",
                       max_decoded_bytes, " bytes, the limit for a dataset held in memory"));
    }
  }
  out.pixels.resize(total);
  // Each thread decodes a contiguous share of the records into their own
  // bytes of `pixels`; the error of the first failing record is returned.
  // A budget is not shared between threads.
  const uint64_t n = records_.size();
  const auto workers = static_cast<uint64_t>(
      std::clamp<int64_t>(limits.budget != nullptr ? 1 : threads, 1, std::max<int64_t>(1, n)));
  std::vector<absl::Status> failed(workers);
  // Decodes share `w`; an exception (out of memory) ends it as an error, so
  // it never escapes a thread.
  auto decode_share = [&](uint64_t w) {
    for (uint64_t i = w * n / workers; i < (w + 1) * n / workers; ++i) {
      try {
        absl::StatusOr<Pixels> pixels = Decode(i, limits);
        if (pixels.ok()) {
          const DecodedDataset::Record& r = out.records[i];
          std::memcpy(out.pixels.data() + r.offset, pixels->data(),
                      static_cast<size_t>(r.height) * r.width * r.channels);
        }
        // The decoded dataset is what stays in memory, not the file too.
        Release(i);
        failed[w] = pixels.status();
      } catch (const std::exception& e) {
        failed[w] = absl::ResourceExhaustedError(
            absl::StrCat(path_, ": record ", i, ": cannot decode: ", e.what()));
      }
      if (!failed[w].ok()) return;
    }
  };
  // Shares whose thread cannot be started run on this one.
  std::vector<std::thread> pool;
  std::vector<uint64_t> here = {0};
  for (uint64_t w = 1; w < workers; ++w) {
    try {
      pool.emplace_back(decode_share, w);
    } catch (const std::system_error&) {
      here.push_back(w);
    }
  }
  for (uint64_t w : here) decode_share(w);
  for (std::thread& t : pool) t.join();
  for (const absl::Status& st : failed) RETURN_IF_ERROR(st);
  return out;
}

absl::StatusOr<int64_t> CompactRecordFile(const std::string& path) {
  ASSIGN_OR_RETURN(const std::unique_ptr<RecordFile> old, RecordFile::Open(path));
  ASSIGN_OR_RETURN(std::unique_ptr<RecordFileWriter> writer, RecordFileWriter::Create(path));
  for (uint64_t i = 0; i < old->size(); ++i) {
    ASSIGN_OR_RETURN(const absl::Span<const uint8_t> bytes, old->Read(i));
    const RecordInfo& r = old->info(i);
    RETURN_IF_ERROR(
        writer->Append(r.label, r.height, r.width, r.channels, r.encoding, bytes).status());
  }
  // The old file stays mapped until `old` goes; the rename replaces its name.
  return writer->Finish(old->class_names());
}

absl::StatusOr<int64_t> WriteRawRecordFile(const std::string& path, const DecodedDataset& data) {
  ASSIGN_OR_RETURN(std::unique_ptr<RecordFileWriter> writer, RecordFileWriter::Create(path));
  for (size_t i = 0; i < data.records.size(); ++i) {
    const DecodedDataset::Record& r = data.records[i];
    const std::optional<int64_t> bytes = PixelBytes(r.height, r.width, r.channels);
    if (!bytes.has_value() || r.offset < 0 ||
        static_cast<uint64_t>(r.offset) > data.pixels.size() ||
        static_cast<uint64_t>(*bytes) > data.pixels.size() - static_cast<uint64_t>(r.offset)) {
      return absl::InvalidArgumentError(
          absl::StrCat("record ", i, ": its pixels lie outside the dataset's"));
    }
    RETURN_IF_ERROR(writer
                        ->Append(r.label, r.height, r.width, r.channels, RecordEncoding::kRaw,
                                 absl::MakeConstSpan(data.pixels.data() + r.offset,
                                                     static_cast<size_t>(*bytes)))
                        .status());
  }
  return writer->Finish(data.class_names);
}

}  // namespace kaizen::datasets
