// The record file (.krf): a dataset's images as stored records that a loader
// reads by index from a memory map, without holding the dataset in memory.
// Each record is either the image's encoded bytes as uploaded (JPEG, PNG),
// raw HWC uint8 pixels (for raw sources such as IDX, and tiny images), or a
// text (UTF-8, plain or deflated), with its label and decoded shape in an
// index. It is the store issue 17 asks
// for: datasets larger than memory.
//
// Layout (integers little-endian; kPage = 4096):
//   [0, kPage)                 "KZRF", u32 version (1), zeros: the header page
//   [kPage, index_offset)      the records' bytes: each record in one piece,
//                              no two sharing a byte (the writer puts them
//                              back to back; the index may list them in any
//                              order), zeros up to the page boundary
//   [index_offset, +index_bytes)   page-aligned index:
//       num_classes x { u32 length, bytes }                      class names
//       num_records x { u64 offset, u64 size, i32 label, i32 height,
//                       i32 width, i32 channels, u32 encoding, u32 crc }
//   the last 48 bytes, right after the index, the trailer:
//       "KZRF", u32 version, u64 index_offset, u64 index_bytes,
//       u64 num_records, u32 num_classes, u32 index CRC-32,
//       u32 reserved (0), u32 CRC-32 of the 44 bytes before it
// A record's `crc` is the CRC-32 (zlib) of its bytes, checked when it is
// read, so a damaged record is found without reading the whole file.
//
// The writer streams: records are appended as they arrive (an upload never
// holds the dataset in memory) and the index and trailer are written at the
// end; the file appears at its path only when it is complete (temporary
// file, fsync, rename).
//
// The reader maps the file: it relies on the store never changing a file
// after it is renamed into place (a file truncated underneath the map, or a
// disk error while a mapped page is read, raises SIGBUS rather than a status).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "server/common/atomic_file.h"
#include "server/datasets/dataset_file.h"
#include "server/datasets/image_decoder.h"

namespace kaizen::datasets {

enum class RecordEncoding : uint32_t {
  kRaw = 0,   // height * width * channels bytes of HWC uint8 pixels
  kJpeg = 1,  // a JPEG file as uploaded
  kPng = 2,   // a PNG file as uploaded
  // Text records: height 1, channels 1, width the text's UTF-8 bytes.
  kText = 3,         // the UTF-8 bytes
  kTextDeflate = 4,  // the UTF-8 bytes as raw deflate (RFC 1951)
};

inline bool IsTextEncoding(RecordEncoding e) {
  return e == RecordEncoding::kText || e == RecordEncoding::kTextDeflate;
}

// One record of the finished file's index: which appended record, and its
// label there (see RecordFileWriter::Finish).
struct RecordPick {
  uint64_t record = 0;
  int32_t label = 0;
};

// What one record is, as the index holds it.
struct RecordInfo {
  uint64_t offset = 0;  // in the file
  uint64_t size = 0;    // bytes
  int32_t label = 0;
  int32_t height = 0;  // the decoded image's shape
  int32_t width = 0;
  int32_t channels = 0;
  RecordEncoding encoding = RecordEncoding::kRaw;
  uint32_t crc = 0;
};

// Bounds on what a record file may declare. The server writes these files,
// but a damaged disk or a copied file must give DataLoss, never a huge
// allocation or a read outside the map.
struct RecordFileLimits {
  uint64_t max_records = uint64_t{1} << 28;
  uint32_t max_classes = 100'000;
  uint32_t max_class_name_bytes = 4096;
  uint64_t max_record_bytes = uint64_t{1} << 30;
};

class RecordFileWriter {
 public:
  // Starts `path` (a temporary file beside it until Finish()). The writer
  // refuses what `limits` would make the reader refuse.
  static absl::StatusOr<std::unique_ptr<RecordFileWriter>> Create(
      const std::string& path, const RecordFileLimits& limits = {});
  // Drops the temporary file unless Finish() succeeded.
  ~RecordFileWriter() = default;
  RecordFileWriter(const RecordFileWriter&) = delete;
  RecordFileWriter& operator=(const RecordFileWriter&) = delete;

  // Appends one record; returns its index. InvalidArgument for a bad shape,
  // a negative label, or raw bytes that are not height * width * channels;
  // ResourceExhausted past the limits. A failed write (a full disk) ends the
  // writer: the temporary file is dropped and Finish() refuses.
  absl::StatusOr<uint64_t> Append(int32_t label, int32_t height, int32_t width, int32_t channels,
                                  RecordEncoding encoding, absl::Span<const uint8_t> bytes);
  // Appends a text (UTF-8, not empty, shorter than 2 GiB) as one record:
  // deflated when that makes it smaller, as is otherwise. Returns its index.
  absl::StatusOr<uint64_t> AppendText(int32_t label, absl::string_view utf8);
  // Writes the index and the trailer and moves the file into place. Returns
  // the file's size. InvalidArgument when a record's label has no class
  // name, ResourceExhausted past the class limits. The writer is done
  // either way.
  absl::StatusOr<int64_t> Finish(const std::vector<std::string>& class_names);
  // The same, but the index lists only `picks`, in their order, with their
  // labels: a writer that appends records before it knows their labels or
  // which of them the dataset keeps (an archive's class folders are known
  // only at its end). Records not picked stay in the file as unused bytes.
  // InvalidArgument for a pick of a record that was not appended, or of one
  // record twice.
  absl::StatusOr<int64_t> Finish(const std::vector<std::string>& class_names,
                                 absl::Span<const RecordPick> picks);

  uint64_t num_records() const { return index_.size(); }
  // Bytes written so far (records and the header page).
  int64_t bytes_written() const { return file_.bytes_written(); }

 private:
  RecordFileWriter() = default;

  RecordFileLimits limits_;
  common::AtomicFileWriter file_;
  // AppendText's deflate state, made on first use and reset per text.
  std::shared_ptr<void> deflater_;
  std::vector<RecordInfo> index_;
  bool done_ = false;
};

// A record file, memory-mapped read-only. The index is checked when the file
// is opened; each record's bytes are checked against its CRC when read.
// Thread-safe: every method is const.
class RecordFile {
 public:
  // NotFound when `path` does not exist; DataLoss when it is damaged or
  // declares more than `limits` allow.
  static absl::StatusOr<std::unique_ptr<RecordFile>> Open(const std::string& path,
                                                          const RecordFileLimits& limits = {});
  ~RecordFile();
  RecordFile(const RecordFile&) = delete;
  RecordFile& operator=(const RecordFile&) = delete;

  uint64_t size() const { return records_.size(); }
  const std::vector<std::string>& class_names() const { return class_names_; }
  const RecordInfo& info(uint64_t i) const { return records_[i]; }
  const std::string& path() const { return path_; }
  // The file's size in bytes.
  uint64_t file_bytes() const { return map_bytes_; }

  // Record `i`'s bytes, valid while this RecordFile lives. OutOfRange for an
  // index past the end; DataLoss when the bytes do not match their CRC.
  absl::StatusOr<absl::Span<const uint8_t>> Read(uint64_t i) const;
  // Drops the pages record `i` spans, rounded out to 64 KiB blocks, from
  // this process's resident memory (they stay in the page cache, and a later
  // Read faults them back in; pages of neighbouring records too, which is
  // only a refault).
  // Mapped file pages count in a process's RSS: a reader that streams a
  // file larger than memory releases each record once it is decoded, so
  // that its RSS does not grow to the file's size. Out of range: nothing.
  void Release(uint64_t i) const;

  // Record `i`'s pixels, row-major HWC uint8 of its index entry's shape: a
  // raw record's mapped bytes (valid while this RecordFile lives), or an
  // encoded record decoded under `limits` with its index entry's pixel count
  // as max_pixels (the store decoded it once at upload under the limits of
  // the day; a limit lowered since must not make it unreadable). DataLoss when the bytes fail their
  // CRC, do not decode, or decode to another shape than the entry's (the error names the record);
  // ResourceExhausted when limits.budget cannot pay for the decode; OutOfRange past the end.
  class Pixels {
   public:
    const uint8_t* data() const { return decoded_.pixels.empty() ? raw_ : decoded_.pixels.data(); }

   private:
    friend class RecordFile;
    const uint8_t* raw_ = nullptr;
    Image decoded_;
  };
  // FailedPrecondition for a text record.
  absl::StatusOr<Pixels> Decode(uint64_t i, const DecodeLimits& limits) const;

  // Text record `i` as UTF-8. DataLoss when its bytes fail their CRC or do
  // not inflate to exactly the index entry's width; FailedPrecondition for
  // an image record; OutOfRange past the end.
  absl::StatusOr<std::string> ReadText(uint64_t i) const;

  // Every record in memory as a DecodedDataset, encoded records decoded
  // under `limits` (each with its index entry's pixel count as max_pixels)
  // on `threads` threads (one when limits.budget is set: a budget is not
  // shared). ResourceExhausted, before anything is decoded, when the decoded
  // pixels would pass `max_decoded_bytes`; Decode()'s errors for a record
  // (each record's mapped pages are released once it is copied). Errors name the first failing
  // record.
  absl::StatusOr<DecodedDataset> ReadAll(const DecodeLimits& limits = {},
                                         uint64_t max_decoded_bytes = uint64_t{1} << 36,
                                         int threads = 1) const;

 private:
  RecordFile() = default;

  std::string path_;
  const uint8_t* map_ = nullptr;
  uint64_t map_bytes_ = 0;
  std::vector<std::string> class_names_;
  std::vector<RecordInfo> records_;
};

// Rewrites the record file at `path` with only the records its index lists,
// back to back in index order (dropping bytes no record uses), atomically.
// Returns the new size.
absl::StatusOr<int64_t> CompactRecordFile(const std::string& path);

// Writes `data` (raw pixels) as a record file: the migration of a .kds
// dataset. Returns the file's size.
absl::StatusOr<int64_t> WriteRawRecordFile(const std::string& path, const DecodedDataset& data);

}  // namespace kaizen::datasets
