#include "server/datasets/gzip_reader.h"

#include <isa-l/igzip_lib.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"

namespace kaizen::datasets {
namespace {

// Compressed bytes read from the file at a time.
constexpr size_t kInputBuffer = size_t{256} << 10;

const char* DescribeInflateError(int rc, int64_t members_before) {
  switch (rc) {
    case ISAL_INVALID_BLOCK:
      return "corrupt gzip data (an invalid deflate block)";
    case ISAL_INVALID_SYMBOL:
      return "corrupt gzip data (an invalid deflate symbol)";
    case ISAL_INVALID_LOOKBACK:
      return "corrupt gzip data (a back-reference past the start of the data)";
    case ISAL_INVALID_WRAPPER:
      return members_before == 0
                 ? "corrupt gzip data (an invalid gzip header)"
                 : "the bytes after the end of the gzip data are not another gzip member";
    case ISAL_UNSUPPORTED_METHOD:
      return "the gzip header names a compression method other than deflate";
    case ISAL_INCORRECT_CHECKSUM:
      return "corrupt gzip data (the CRC-32 or the length in a member's trailer does not match "
             "its content)";
    case ISAL_NEED_DICT:
      return "the compressed data needs a preset dictionary, which gzip files never use";
    default:
      return "corrupt gzip data";
  }
}

}  // namespace

GzipReader::GzipReader(std::FILE* file, std::string display_name, Growing growing)
    : file_(file),
      display_name_(std::move(display_name)),
      growing_(std::move(growing)),
      in_(kInputBuffer) {}

GzipReader::~GzipReader() { std::fclose(file_); }

absl::StatusOr<std::unique_ptr<GzipReader>> GzipReader::Open(const std::string& path,
                                                             const std::string& display_name,
                                                             Growing growing) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) {
    const int err = errno;
    const std::string message =
        absl::StrCat(display_name, ": cannot open ", path, ": ", std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(message) : absl::InternalError(message);
  }
  std::unique_ptr<GzipReader> reader(new GzipReader(file, display_name, std::move(growing)));
  // The first bytes decide: 1f 8b starts a gzip member (RFC 1952).
  ASSIGN_OR_RETURN(const size_t n, reader->ReadFile(reader->in_.data(), reader->in_.size()));
  reader->at_eof_ = n < reader->in_.size();
  if (n >= 2 && reader->in_[0] == 0x1f && reader->in_[1] == 0x8b) {
    reader->state_ = std::make_unique<inflate_state>();
    isal_inflate_init(reader->state_.get());
    reader->state_->crc_flag = ISAL_GZIP;
    reader->header_ = std::make_unique<isal_gzip_header>();
    reader->state_->next_in = reader->in_.data();
    reader->state_->avail_in = static_cast<uint32_t>(n);
  } else {
    reader->plain_end_ = n;
  }
  return reader;
}

absl::Status GzipReader::Corrupt(const std::string& why) const {
  return absl::InvalidArgumentError(absl::StrCat(display_name_, ": ", why));
}

absl::StatusOr<size_t> GzipReader::ReadFile(unsigned char* out, size_t size) {
  size_t got = 0;
  while (got < size) {
    if (growing_ != nullptr) {
      ASSIGN_OR_RETURN(const bool more, growing_(file_offset_));
      if (!more) break;
      std::clearerr(file_);  // the end seen before may have moved
    }
    const size_t n = std::fread(out + got, 1, size - got, file_);
    if (std::ferror(file_)) {
      return absl::InternalError(absl::StrCat(display_name_, ": cannot read at byte ",
                                              file_offset_ + static_cast<int64_t>(n), ": ",
                                              std::strerror(errno)));
    }
    got += n;
    file_offset_ += static_cast<int64_t>(n);
    if (growing_ == nullptr) break;
    if (n == 0) {
      return absl::InternalError(absl::StrCat(display_name_, ": the file ends at ", file_offset_,
                                              " bytes, before what its writer reported"));
    }
  }
  return got;
}

absl::StatusOr<bool> GzipReader::Refill() {
  if (at_eof_) return false;
  const size_t keep = state_->avail_in;
  if (keep > 0) std::memmove(in_.data(), state_->next_in, keep);
  ASSIGN_OR_RETURN(const size_t n, ReadFile(in_.data() + keep, in_.size() - keep));
  if (n < in_.size() - keep) at_eof_ = true;
  state_->next_in = in_.data();
  state_->avail_in = static_cast<uint32_t>(keep + n);
  return n > 0;
}

absl::StatusOr<size_t> GzipReader::Read(void* out, size_t size) {
  auto* dst = static_cast<unsigned char*>(out);
  if (state_ != nullptr) return Inflate(dst, size);
  // A plain file: the bytes read while sniffing first, then the file.
  size_t got = std::min(size, plain_end_ - plain_pos_);
  std::memcpy(dst, in_.data() + plain_pos_, got);
  plain_pos_ += got;
  if (got < size && !at_eof_) {
    ASSIGN_OR_RETURN(const size_t n, ReadFile(dst + got, size - got));
    got += n;
  }
  if (got < size) ended_cleanly_ = true;
  return got;
}

absl::StatusOr<size_t> GzipReader::Inflate(unsigned char* out, size_t size) {
  size_t got = 0;
  while (got < size) {
    if (phase_ == Phase::kMemberStart) {
      // The first member, or another after one ended (gzip -c a b > c writes
      // two): its fixed first bytes are checked here, RFC 1952's rules that
      // ISA-L leaves out (reserved flag bits must be zero).
      while (state_->avail_in < 4) {
        ASSIGN_OR_RETURN(const bool more, Refill());
        if (!more) break;
      }
      const uint8_t* p = state_->next_in;
      const uint32_t n = state_->avail_in;
      if (n == 0 && members_ > 0) {
        ended_cleanly_ = true;
        return got;
      }
      if (n > 0 && (p[0] != 0x1f || (n > 1 && p[1] != 0x8b))) {
        return Corrupt(DescribeInflateError(ISAL_INVALID_WRAPPER, members_));
      }
      if (n < 4) {
        ended_cleanly_ = false;  // cut inside the member's first bytes
        return got;
      }
      if (p[2] != 8) return Corrupt(DescribeInflateError(ISAL_UNSUPPORTED_METHOD, members_));
      if ((p[3] & 0xe0) != 0) {
        return Corrupt("corrupt gzip data (the header sets reserved flag bits)");
      }
      if (members_ > 0) {
        isal_inflate_reset(state_.get());  // keeps next_in / avail_in
        state_->crc_flag = ISAL_GZIP;
      }
      isal_gzip_header_init(header_.get());
      phase_ = Phase::kHeader;
      continue;
    }
    if (phase_ == Phase::kHeader) {
      // Parsed here with one header record for the whole member: isal_inflate
      // would start a fresh one on each call, and a header split across two
      // reads would then fail its CRC-16 (FHCRC).
      if (state_->avail_in == 0) {
        ASSIGN_OR_RETURN(const bool more, Refill());
        if (!more) {
          ended_cleanly_ = false;
          return got;
        }
      }
      const uint32_t avail_in_before = state_->avail_in;
      const int rc = isal_read_gzip_header(state_.get(), header_.get());
      if (rc == ISAL_INCORRECT_CHECKSUM) {
        return Corrupt("corrupt gzip data (the header's CRC-16 does not match the header)");
      }
      if (rc < 0) return Corrupt(DescribeInflateError(rc, members_));
      if (rc == ISAL_DECOMP_OK) {
        phase_ = Phase::kBody;
      } else if (state_->avail_in == avail_in_before) {
        ASSIGN_OR_RETURN(const bool more, Refill());
        if (!more) {
          ended_cleanly_ = false;  // the header's end is missing
          return got;
        }
      }
      continue;
    }
    if (state_->avail_in == 0) RETURN_IF_ERROR(Refill().status());
    const uint32_t want = static_cast<uint32_t>(std::min<size_t>(size - got, UINT32_MAX));
    const uint32_t avail_in_before = state_->avail_in;
    state_->next_out = out + got;
    state_->avail_out = want;
    const int rc = isal_inflate(state_.get());
    const size_t produced = want - state_->avail_out;
    got += produced;
    if (rc < 0) return Corrupt(DescribeInflateError(rc, members_));
    if (state_->block_state == ISAL_BLOCK_FINISH) {
      ++members_;
      phase_ = Phase::kMemberStart;
      continue;
    }
    if (produced == 0 && state_->avail_in == avail_in_before) {
      // No progress: the decoder needs more input than the buffer holds.
      ASSIGN_OR_RETURN(const bool more, Refill());
      if (!more) {
        ended_cleanly_ = false;  // the member's end is missing
        return got;
      }
    }
  }
  return got;
}

}  // namespace kaizen::datasets
