// Reads a file that is either gzip-compressed (one or more members, as
// gzip(1) and zlib write them) or plain, decompressing with ISA-L's igzip
// (about 1.7x zlib's inflate here, CRC-32 checked with the carry-less multiply
// instructions; bench/RESULTS.md). Every member's CRC-32 and length trailer is
// verified; damage, and bytes after the last member that do not start
// another one, are errors naming the file. A stream cut short reads short,
// and Ended() says so.
//
// The file may still be growing (an upload being received): then every read
// of the file first asks a Growing callback, which waits for the writer.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

struct inflate_state;
struct isal_gzip_header;

namespace kaizen::datasets {

class GzipReader {
 public:
  // For a file another thread is still writing: blocks until the file holds
  // more than `have` bytes (true) or is complete with `have` bytes (false).
  // An error (the writer gave up) ends the read with that error, at once,
  // whatever the file holds.
  using Growing = std::function<absl::StatusOr<bool>(int64_t have)>;

  // Opens `path`; `display_name` names it in messages (the uploaded file's
  // name). NotFound when the file is missing. With `growing`, reads wait for
  // the file's writer through it instead of stopping at its current end.
  static absl::StatusOr<std::unique_ptr<GzipReader>> Open(const std::string& path,
                                                          const std::string& display_name,
                                                          Growing growing = nullptr);
  ~GzipReader();
  GzipReader(const GzipReader&) = delete;
  GzipReader& operator=(const GzipReader&) = delete;

  // Reads up to `size` bytes of content into `out`; fewer only at the end of
  // the data, including a gzip member cut short (the caller reports the
  // truncation in its own terms, and Ended() says whether the end was clean).
  // Corrupt compressed data is InvalidArgument.
  absl::StatusOr<size_t> Read(void* out, size_t size);

  // After Read returned fewer bytes than asked: true when the data ended
  // cleanly (a plain file's end, or the last gzip member's verified trailer),
  // false when a gzip member was cut short.
  bool Ended() const { return ended_cleanly_; }
  bool compressed() const { return state_ != nullptr; }

 private:
  GzipReader(std::FILE* file, std::string display_name, Growing growing);
  // Reads up to `size` bytes of the file; fewer only at its end (for a
  // growing file, once it is complete).
  absl::StatusOr<size_t> ReadFile(unsigned char* out, size_t size);
  // Refills the input buffer when it is empty; false at the end of the file.
  absl::StatusOr<bool> Refill();
  absl::StatusOr<size_t> Inflate(unsigned char* out, size_t size);
  absl::Status Corrupt(const std::string& why) const;

  std::FILE* file_;
  std::string display_name_;
  Growing growing_;          // null for a complete file
  int64_t file_offset_ = 0;  // bytes read from the file so far
  std::vector<unsigned char> in_;
  // Where the gzip stream is: at a member's first bytes, in its header, or
  // in its deflate data (the trailer is checked by isal_inflate).
  enum class Phase { kMemberStart, kHeader, kBody };

  std::unique_ptr<inflate_state> state_;  // null for a plain file
  std::unique_ptr<isal_gzip_header> header_;
  Phase phase_ = Phase::kMemberStart;
  size_t plain_pos_ = 0;  // a plain file's bytes buffered while sniffing
  size_t plain_end_ = 0;
  bool at_eof_ = false;
  bool ended_cleanly_ = false;
  int64_t members_ = 0;
};

}  // namespace kaizen::datasets
