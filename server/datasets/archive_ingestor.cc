#include "server/datasets/archive_ingestor.h"

#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <queue>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "server/common/status_macros.h"
#include "server/datasets/image_decoder.h"
#include "server/datasets/image_encoder.h"
#include "server/datasets/ingest_report.h"
#include "server/datasets/record_file.h"

namespace kaizen::datasets {
namespace {

// Archive read granularity.
constexpr size_t kArchiveReadChunk = size_t{1} << 16;

struct ArchiveDeleter {
  void operator()(archive* a) const { archive_read_free(a); }
};

bool HasImageExtension(absl::string_view file_name) {
  const size_t dot = file_name.rfind('.');
  if (dot == absl::string_view::npos) return false;
  const std::string ext = absl::AsciiStrToLower(file_name.substr(dot + 1));
  return ext == "jpg" || ext == "jpeg" || ext == "png";
}

// An image file that may belong to a class folder: at depth 2 (class/file) or
// 3 (top/class/file, if the single top-level folder gets stripped).
// Kept for every image file until the end of the archive, so it is small:
// an archive of millions of images holds this much per image, not the image.
struct Candidate {
  // As in the archive, without "./" components: 2 or 3 components
  // (depth) joined by '/'.
  std::string path;
  int depth = 0;
  // OK when the image decoded and is in the record file; else why not.
  absl::Status status;
  // When it is: its record, stored bytes, decoded shape and ImageDigest().
  uint64_t record = 0;
  uint64_t stored_bytes = 0;
  int32_t height = 0;
  int32_t width = 0;
  int32_t channels = 0;
  std::string digest;
  // Stored downscaled, under the stored-resolution cap.
  bool downscaled = false;
};

// Component `i` of a candidate's path.
absl::string_view PathComponent(const Candidate& c, int i) {
  absl::string_view rest = c.path;
  for (; i > 0; --i) rest.remove_prefix(rest.find('/') + 1);
  return rest.substr(0, rest.find('/'));
}

// Unused record bytes (images outside the class folders) above this share of
// the used ones, and above kCompactMinBytes, are dropped by compacting the
// record file.
constexpr double kCompactShare = 0.05;
constexpr uint64_t kCompactMinBytes = uint64_t{16} << 20;

// Entries with longer paths are ignored (listed cut to this length): every
// image file's path is kept until the end of the archive.
constexpr size_t kMaxPathBytes = 4096;

// Zip archives start with a local file header, or with the end of central
// directory record when they are empty.
bool LooksLikeZip(const std::string& path) {
  char magic[4] = {};
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) return false;
  const size_t got = std::fread(magic, 1, sizeof(magic), file);
  std::fclose(file);
  const absl::string_view head(magic, got);
  return head == absl::string_view("PK\x03\x04", 4) || head == absl::string_view("PK\x05\x06", 4);
}

std::string ArchiveError(archive* a) {
  const char* message = archive_error_string(a);
  return message != nullptr ? message : "unknown libarchive error";
}

// The first `max_listed` ignored paths in sorted order, with a count of all:
// an archive of millions of stray entries must not grow a list in memory.
class IgnoredList {
 public:
  explicit IgnoredList(int max_listed) : max_listed_(std::max(0, max_listed)) {}

  void Add(std::string path) {
    ++count_;
    if (static_cast<int>(largest_first_.size()) < max_listed_) {
      largest_first_.push(std::move(path));
    } else if (max_listed_ > 0 && path < largest_first_.top()) {
      largest_first_.pop();
      largest_first_.push(std::move(path));
    }
  }
  int64_t count() const { return count_; }
  std::vector<std::string> Sorted() const {
    std::priority_queue<std::string> copy = largest_first_;
    std::vector<std::string> out;
    for (; !copy.empty(); copy.pop()) out.push_back(copy.top());
    std::reverse(out.begin(), out.end());
    return out;
  }

 private:
  int max_listed_;
  int64_t count_ = 0;
  std::priority_queue<std::string> largest_first_;  // max-heap: top is dropped first
};

class ArchiveIngestor {
 public:
  ArchiveIngestor(const std::string& display_name, const IngestOptions& options)
      : display_name_(display_name),
        options_(options),
        ignored_(options.max_listed),
        budget_(options.budget, 0) {}

  absl::StatusOr<v1::Dataset> Run(const std::string& archive_path, const std::string& record_path);

 private:
  absl::Status ReadEntries(archive* a);
  // Reads the current entry's bytes; a per-entry problem goes into `image`.
  absl::Status ReadCandidate(archive* a, archive_entry* entry, Candidate* candidate);
  // Appends a decoded candidate to the record file: its bytes as uploaded,
  // or its pixels when those are no larger (tiny images).
  absl::Status Store(absl::string_view bytes, const Image& image, Candidate* candidate);
  // Moves past the current entry's data without keeping it. Inside a
  // compressed stream the data must still be decompressed to reach the next
  // header, so it is read block by block and charged to the budget (a
  // skipped member cannot be a free bomb); elsewhere libarchive skips it
  // without decompressing (a zip member) or seeks (a plain tar).
  absl::Status SkipEntry(archive* a, absl::string_view path);
  // Charges the budget for what the decompression filters (gzip, bzip2, xz,
  // ...) produced since the last call.
  absl::Status ChargeFilters(archive* a, absl::string_view path);
  // Candidates that passed, grouped by class folder (a sorted map: label
  // order), and the ones that failed to decode.
  struct Classes {
    std::map<std::string, std::vector<size_t>> images;  // indices, by path
    std::map<std::string, int64_t> failed_by_class;
    int64_t failed = 0;
  };
  // Lists failed files in `report`; an error for a failure that ends the
  // upload (a limit or the budget).
  absl::StatusOr<Classes> GroupByClass(v1::DatasetReport* report);
  // Warns about dropped class folders; an error for fewer than two classes.
  absl::Status CheckClasses(const Classes& classes, v1::DatasetReport* report) const;
  // Warnings and lists for failed and ignored entries.
  void ReportLeftOut(int64_t failed, v1::DatasetReport* report) const;
  absl::StatusOr<v1::Dataset> Assemble(const std::string& record_path);
  absl::Status Error(absl::string_view message) const {
    return absl::InvalidArgumentError(absl::StrCat(display_name_, ": ", message));
  }

  const std::string display_name_;
  const IngestOptions options_;
  int64_t num_entries_ = 0;
  std::vector<Candidate> candidates_;
  std::unique_ptr<RecordFileWriter> writer_;
  IgnoredList ignored_;
  DecodeBudget budget_;
  // Whether a decompression filter sits under the archive format, and how
  // many bytes the filters had produced at the last charge.
  bool compressed_ = false;
  bool zip_ = false;
  int64_t filter_bytes_charged_ = 0;
  // Whether every usable entry shares one first path component, and which.
  bool single_top_ = true;
  std::string top_;
  // Bytes appended to the record file, used by the dataset or not.
  uint64_t appended_bytes_ = 0;
};

absl::StatusOr<v1::Dataset> ArchiveIngestor::Run(const std::string& archive_path,
                                                 const std::string& record_path) {
  struct stat st;
  if (::stat(archive_path.c_str(), &st) != 0) {
    return absl::NotFoundError(
        absl::StrCat(display_name_, ": cannot open ", archive_path, ": ", std::strerror(errno)));
  }
  budget_ = DecodeBudget(options_.budget, static_cast<int64_t>(st.st_size));
  std::unique_ptr<archive, ArchiveDeleter> a(archive_read_new());
  if (a == nullptr) return absl::InternalError("cannot allocate a libarchive reader");
  // Only real archive formats: "raw" would accept any file as one entry.
  // Zip is enabled only for files that start like one: its bidder searches
  // the whole stream for a central directory, which on a truncated tar.gz
  // fails at open time with a misleading "not an archive".
  zip_ = LooksLikeZip(archive_path);
  if (zip_) {
    archive_read_support_format_zip(a.get());
  } else {
    // Only the filters libarchive runs in-process. "all" would also accept
    // lrzip, lzop, grzip and lz4 streams, some of which libarchive decodes by
    // running an external program on the uploaded bytes.
    archive_read_support_filter_gzip(a.get());
    archive_read_support_filter_bzip2(a.get());
    archive_read_support_filter_xz(a.get());
    archive_read_support_filter_lzma(a.get());
    archive_read_support_filter_zstd(a.get());
    archive_read_support_format_tar(a.get());
  }
  if (archive_read_open_filename(a.get(), archive_path.c_str(), kArchiveReadChunk) != ARCHIVE_OK) {
    const std::string reason = ArchiveError(a.get());
    // libarchive reads ahead while detecting the format, so a short
    // compressed archive that is cut off fails here rather than mid-stream.
    if (absl::StrContains(absl::AsciiStrToLower(reason), "truncated")) {
      return Error(absl::StrCat("archive is truncated or corrupt at entry 1: ", reason));
    }
    return Error(absl::StrCat("not a tar or zip archive (", reason, ")"));
  }
  for (int i = 0; i < archive_filter_count(a.get()); ++i) {
    if (archive_filter_code(a.get(), i) != ARCHIVE_FILTER_NONE) compressed_ = true;
  }
  ASSIGN_OR_RETURN(writer_, RecordFileWriter::Create(record_path));
  RETURN_IF_ERROR(ReadEntries(a.get()));
  a.reset();
  if (num_entries_ == 0) return Error("the archive is empty");
  return Assemble(record_path);
}

absl::Status ArchiveIngestor::ChargeFilters(archive* a, absl::string_view path) {
  int64_t produced = 0;
  for (int i = 0; i < archive_filter_count(a); ++i) {
    if (archive_filter_code(a, i) != ARCHIVE_FILTER_NONE) produced += archive_filter_bytes(a, i);
  }
  const int64_t delta = produced - filter_bytes_charged_;
  filter_bytes_charged_ = produced;
  return budget_.Charge(
      delta, absl::StrCat(display_name_, path.empty() ? "" : ": ", path, " (decompressed)"));
}

absl::Status ArchiveIngestor::SkipEntry(archive* a, absl::string_view path) {
  if (!compressed_) {
    // Errors surface at the next header read, with the entry number.
    archive_read_data_skip(a);
    return absl::OkStatus();
  }
  while (true) {
    const void* block = nullptr;
    size_t size = 0;
    la_int64_t offset = 0;
    const int r = archive_read_data_block(a, &block, &size, &offset);
    if (r == ARCHIVE_EOF || r < ARCHIVE_WARN) return absl::OkStatus();
    RETURN_IF_ERROR(ChargeFilters(a, path));
  }
}

absl::Status ArchiveIngestor::ReadEntries(archive* a) {
  std::string last_path;
  while (true) {
    archive_entry* entry = nullptr;
    const int r = archive_read_next_header(a, &entry);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) {
      return Error(absl::StrCat("archive is truncated or corrupt at entry ", num_entries_ + 1,
                                last_path.empty() ? "" : absl::StrCat(" (after '", last_path, "')"),
                                ": ", ArchiveError(a)));
    }
    ++num_entries_;
    RETURN_IF_ERROR(ChargeFilters(a, last_path));
    const char* raw = archive_entry_pathname(entry);
    if (raw == nullptr) raw = archive_entry_pathname_utf8(entry);
    std::string raw_path = raw != nullptr ? raw : "";
    const bool is_dir = archive_entry_filetype(entry) == AE_IFDIR;
    if (raw_path.size() > kMaxPathBytes) {
      raw_path.resize(kMaxPathBytes);
      last_path = raw_path;
      if (!is_dir)
        ignored_.Add(absl::StrCat(raw_path, "... (path over ", kMaxPathBytes, " bytes)"));
      RETURN_IF_ERROR(SkipEntry(a, raw_path));
      continue;
    }
    last_path = raw_path;

    // Path checks. No path is ever used to write (images go into the record
    // file), but an absolute or ".." path is a sign of a malicious or broken
    // archive and is never used.
    std::vector<std::string> parts;
    bool unsafe = raw_path.empty() || raw_path[0] == '/' || raw_path[0] == '\\' ||
                  (raw_path.size() >= 2 && raw_path[1] == ':');
    bool hidden = false;
    for (absl::string_view part : absl::StrSplit(raw_path, absl::ByAnyChar("/\\"))) {
      if (part.empty() || part == ".") continue;
      if (part == "..") unsafe = true;
      if (part[0] == '.' || part == "__MACOSX") hidden = true;
      parts.emplace_back(part);
    }
    if (parts.empty()) unsafe = true;
    if (unsafe || hidden) {
      if (!is_dir) ignored_.Add(raw_path);
      RETURN_IF_ERROR(SkipEntry(a, raw_path));
      continue;
    }
    if (single_top_) {
      if (top_.empty()) top_ = parts[0];
      // A file at the top level is its own first component.
      if (parts[0] != top_ || (!is_dir && parts.size() == 1)) single_top_ = false;
    }
    if (is_dir) {
      RETURN_IF_ERROR(SkipEntry(a, raw_path));
      continue;
    }
    const std::string path = absl::StrJoin(parts, "/");
    const bool regular =
        archive_entry_filetype(entry) == AE_IFREG && archive_entry_hardlink(entry) == nullptr;
    if (!regular || !HasImageExtension(parts.back()) || parts.size() < 2 || parts.size() > 3) {
      ignored_.Add(path);
      RETURN_IF_ERROR(SkipEntry(a, path));
      continue;
    }
    // Every image file costs a Candidate until the end, decoded or not.
    if (static_cast<int64_t>(candidates_.size()) >= options_.max_examples) {
      return Error(absl::StrCat("more than ", options_.max_examples, " image files; the limit is ",
                                options_.max_examples, " images"));
    }
    Candidate candidate;
    candidate.path = path;
    candidate.depth = static_cast<int>(parts.size());
    RETURN_IF_ERROR(ReadCandidate(a, entry, &candidate));
    candidates_.push_back(std::move(candidate));
  }
  return absl::OkStatus();
}

absl::Status ArchiveIngestor::ReadCandidate(archive* a, archive_entry* entry,
                                            Candidate* candidate) {
  // No plausible JPEG or PNG of the allowed size needs more than 8 bytes per
  // pixel (16-bit RGBA stored uncompressed); larger files are not buffered.
  const int64_t max_file_bytes = 8 * options_.max_image_pixels + (int64_t{16} << 20);
  auto too_large = [&](int64_t size) {
    return absl::ResourceExhaustedError(absl::StrCat("file is ", size, " bytes; image files over ",
                                                     max_file_bytes, " bytes are not accepted"));
  };
  if (archive_entry_size_is_set(entry) && archive_entry_size(entry) > max_file_bytes) {
    candidate->status = too_large(archive_entry_size(entry));
    return SkipEntry(a, candidate->path);
  }
  std::string bytes;
  char chunk[kArchiveReadChunk];
  while (true) {
    const la_ssize_t n = archive_read_data(a, chunk, sizeof(chunk));
    if (n == 0) break;
    if (n < 0) {
      if (n == ARCHIVE_FATAL) {
        return Error(absl::StrCat("archive is truncated or corrupt at entry ", num_entries_, " '",
                                  candidate->path, "': ", ArchiveError(a)));
      }
      // The archive is intact but this entry cannot be read (e.g. encrypted
      // or an unsupported zip compression method).
      candidate->status =
          absl::InvalidArgumentError(absl::StrCat("cannot extract: ", ArchiveError(a)));
      return absl::OkStatus();
    }
    // A zip member is inflated by the format itself, not by a filter.
    RETURN_IF_ERROR(compressed_ ? ChargeFilters(a, candidate->path)
                    : zip_ ? budget_.Charge(n, absl::StrCat(display_name_, ": ", candidate->path,
                                                            " (inflated)"))
                           : absl::OkStatus());
    if (static_cast<int64_t>(bytes.size()) + n > max_file_bytes) {
      candidate->status = too_large(static_cast<int64_t>(bytes.size()) + n);
      return SkipEntry(a, candidate->path);
    }
    bytes.append(chunk, static_cast<size_t>(n));
  }
  DecodeLimits limits;
  limits.max_pixels = options_.max_image_pixels;
  limits.max_jpeg_scans = options_.max_jpeg_scans;
  limits.budget = &budget_;
  absl::StatusOr<Image> image = DecodeImage(bytes, limits);
  if (budget_.exhausted()) {
    return absl::ResourceExhaustedError(
        absl::StrCat(display_name_, ": ", candidate->path, ": ", image.status().message()));
  }
  if (!image.ok()) {
    candidate->status = image.status();
    return absl::OkStatus();
  }
  return Store(bytes, *image, candidate);
}

absl::Status ArchiveIngestor::Store(absl::string_view bytes, const Image& image,
                                    Candidate* candidate) {
  const auto fail = [&](const absl::Status& status) {
    return absl::Status(status.code(),
                        absl::StrCat(display_name_, ": ", candidate->path,
                                     ": cannot store the image: ", status.message()));
  };
  // Above the stored-resolution cap the image is stored downscaled, encoded
  // again in its own format (a PNG stays lossless).
  const bool jpeg = SniffImageFormat(bytes) == ImageFormat::kJpeg;
  const ImageSize capped = CappedSize(image.height, image.width, options_.max_stored_shorter_side);
  const bool downscale = capped.height != image.height || capped.width != image.width;
  Image small;
  std::string encoded;
  if (downscale) {
    small = AreaDownscale(image, capped.height, capped.width);
    absl::StatusOr<std::string> again =
        jpeg ? EncodeJpeg(small, options_.stored_jpeg_quality) : EncodePng(small);
    if (!again.ok()) return fail(again.status());
    encoded = *std::move(again);
    bytes = encoded;
  }
  const Image& kept = downscale ? small : image;
  // Raw pixels when they are no larger than the encoded file (tiny images).
  const bool raw = kept.pixels.size() <= bytes.size();
  const RecordEncoding encoding = raw    ? RecordEncoding::kRaw
                                  : jpeg ? RecordEncoding::kJpeg
                                         : RecordEncoding::kPng;
  const absl::Span<const uint8_t> stored =
      raw ? absl::MakeConstSpan(kept.pixels)
          : absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  // The label is known only when every class folder has been seen; Finish()
  // gives the real one.
  absl::StatusOr<uint64_t> record =
      writer_->Append(0, kept.height, kept.width, kept.channels, encoding, stored);
  if (!record.ok()) return fail(record.status());
  candidate->record = *record;
  candidate->stored_bytes = stored.size();
  appended_bytes_ += stored.size();
  candidate->height = kept.height;
  candidate->width = kept.width;
  candidate->channels = kept.channels;
  candidate->downscaled = downscale;
  // Duplicates are found on the pixels as uploaded.
  candidate->digest = ImageDigest(image.height, image.width, image.channels, image.pixels);
  candidate->status = absl::OkStatus();
  return absl::OkStatus();
}

absl::StatusOr<ArchiveIngestor::Classes> ArchiveIngestor::GroupByClass(v1::DatasetReport* report) {
  // Strip the single top-level folder only when images sit one level below
  // it; an archive of just "cats/*.jpg" is one class, not zero.
  const bool strip = single_top_ && std::any_of(candidates_.begin(), candidates_.end(),
                                                [](const Candidate& c) { return c.depth == 3; });
  const int class_depth = strip ? 3 : 2;

  std::vector<size_t> order(candidates_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](size_t x, size_t y) { return candidates_[x].path < candidates_[y].path; });

  Classes classes;
  for (size_t index : order) {
    Candidate& c = candidates_[index];
    if (c.depth != class_depth) {
      ignored_.Add(c.path);
      continue;
    }
    const std::string class_name(PathComponent(c, class_depth - 2));
    if (c.status.ok()) {
      classes.images[class_name].push_back(index);
      continue;
    }
    const absl::Status& status = c.status;
    if (absl::IsFailedPrecondition(status) || absl::IsResourceExhausted(status)) {
      return Error(absl::StrCat(c.path, ": ", status.message()));
    }
    ++classes.failed;
    ++classes.failed_by_class[class_name];
    if (report->failed_files_size() < options_.max_listed) {
      v1::DatasetReport::FailedFile* f = report->add_failed_files();
      f->set_path(c.path);
      f->set_reason(std::string(status.message()));
    }
  }
  return classes;
}

absl::Status ArchiveIngestor::CheckClasses(const Classes& classes,
                                           v1::DatasetReport* report) const {
  std::vector<std::string> dropped;
  for (const auto& [class_name, n] : classes.failed_by_class) {
    if (classes.images.count(class_name) == 0) {
      dropped.push_back(class_name);
      report->add_warnings(absl::StrCat("class folder '", class_name, "' was dropped: none of its ",
                                        n, " images could be decoded"));
    }
  }
  if (classes.images.empty()) {
    std::string details = absl::StrCat(ignored_.count(), " entries ignored, ", classes.failed,
                                       " images failed to decode");
    if (report->failed_files_size() > 0) {
      absl::StrAppend(&details, "; e.g. ", report->failed_files(0).path(), ": ",
                      report->failed_files(0).reason());
    }
    return Error(
        absl::StrCat("no usable images: expected class folders of .jpg/.jpeg/.png files such as "
                     "'cats/001.jpg' (",
                     details, ")"));
  }
  if (classes.images.size() == 1) {
    std::string message = absl::StrCat("only one class ('", classes.images.begin()->first,
                                       "') was found; at least two class folders are needed");
    if (!dropped.empty()) {
      absl::StrAppend(&message, " (no image in '", absl::StrJoin(dropped, "', '"),
                      "' could be decoded)");
    }
    return Error(message);
  }
  return absl::OkStatus();
}

void ArchiveIngestor::ReportLeftOut(int64_t failed, v1::DatasetReport* report) const {
  if (failed > 0) {
    report->add_warnings(absl::StrCat(
        failed, failed == 1 ? " image" : " images",
        " could not be decoded and were left out (see failed_files",
        failed > options_.max_listed ? "; the first " : "",
        failed > options_.max_listed ? absl::StrCat(options_.max_listed, " are listed") : "", ")"));
  }
  for (std::string& path : ignored_.Sorted()) report->add_ignored_files(std::move(path));
  if (ignored_.count() > options_.max_listed) {
    report->add_warnings(absl::StrCat(ignored_.count(), " archive entries were ignored; the first ",
                                      options_.max_listed, " are listed"));
  }
}

absl::StatusOr<v1::Dataset> ArchiveIngestor::Assemble(const std::string& record_path) {
  v1::Dataset summary;
  v1::DatasetReport* report = summary.mutable_report();
  ASSIGN_OR_RETURN(const Classes classes, GroupByClass(report));
  RETURN_IF_ERROR(CheckClasses(classes, report));
  int64_t total_images = 0;
  for (const auto& [class_name, indices] : classes.images) {
    total_images += static_cast<int64_t>(indices.size());
  }
  // The dataset's records: label by label, each class in path order.
  std::vector<std::string> class_names;
  std::vector<RecordPick> picks;
  std::vector<DecodedDataset::Record> records;
  std::vector<std::string> digests;
  std::vector<const std::string*> paths;
  picks.reserve(total_images);
  records.reserve(total_images);
  digests.reserve(total_images);
  paths.reserve(total_images);
  // Each term was decoded and charged to the decode budget: the sum fits.
  uint64_t used_bytes = 0;
  int64_t downscaled = 0;
  for (const auto& [class_name, indices] : classes.images) {
    const auto label = static_cast<int32_t>(class_names.size());
    class_names.push_back(class_name);
    for (size_t index : indices) {
      Candidate& c = candidates_[index];
      picks.push_back({c.record, label});
      records.push_back({label, c.height, c.width, c.channels, 0});
      digests.push_back(std::move(c.digest));
      paths.push_back(&c.path);
      used_bytes += c.stored_bytes;
      downscaled += c.downscaled ? 1 : 0;
    }
  }
  report->set_max_stored_shorter_side(options_.max_stored_shorter_side);
  report->set_downscaled_images(downscaled);
  const uint64_t unused_bytes = appended_bytes_ - used_bytes;
  ReportLeftOut(classes.failed, report);
  ReportDuplicateDigests(
      digests, [&](size_t i) { return *paths[i]; }, options_.max_listed, report);
  SummarizeDataset(class_names, records, &summary);
  absl::StatusOr<int64_t> stored = writer_->Finish(class_names, picks);
  // Images outside the class folders were stored as they came; a file that
  // would keep many of their bytes is rewritten without them.
  if (stored.ok() && unused_bytes > kCompactMinBytes &&
      static_cast<double>(unused_bytes) > kCompactShare * static_cast<double>(used_bytes)) {
    // A compaction that fails (a full disk: it needs a second copy) leaves
    // the complete file as it was.
    const absl::StatusOr<int64_t> compacted = CompactRecordFile(record_path);
    if (compacted.ok()) {
      stored = compacted;
    } else {
      report->add_warnings(absl::StrCat("the stored file keeps ", unused_bytes,
                                        " bytes of images outside the class folders (compacting "
                                        "it failed: ",
                                        compacted.status().message(), ")"));
    }
  }
  if (!stored.ok()) {
    return absl::Status(stored.status().code(),
                        absl::StrCat(display_name_, ": cannot store: ", stored.status().message()));
  }
  summary.set_stored_bytes(*stored);
  return summary;
}

}  // namespace

absl::StatusOr<v1::Dataset> IngestImageFolderArchive(const std::string& archive_path,
                                                     const std::string& display_name,
                                                     const IngestOptions& options,
                                                     const std::string& record_path) {
  ArchiveIngestor ingestor(display_name, options);
  return ingestor.Run(archive_path, record_path);
}

}  // namespace kaizen::datasets
