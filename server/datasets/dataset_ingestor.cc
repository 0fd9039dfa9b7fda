#include "server/datasets/dataset_ingestor.h"

#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <queue>
#include <tuple>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "server/common/checked_math.h"
#include "server/common/status_macros.h"
#include "server/datasets/image_decoder.h"

namespace kaizen::datasets {
namespace {

// Distinct image sizes listed in the report.
constexpr int kMaxListedSizes = 20;
// Largest max/min class count ratio that passes without a warning.
constexpr double kImbalanceWarningRatio = 1.5;
// Archive read granularity.
constexpr size_t kArchiveReadChunk = size_t{1} << 16;

// ---------------------------------------------------------------------------
// Shared by both formats: the summary and the report computed from the
// decoded data.

// Index set whose hash and equality look at a record's shape and pixels, so
// that duplicates are found exactly (a hash match alone is not trusted).
struct RecordHash {
  const DecodedDataset* data;
  size_t operator()(uint32_t i) const {
    const DecodedDataset::Record& r = data->records[i];
    const auto bytes = static_cast<size_t>(int64_t{r.height} * r.width * r.channels);
    return absl::HashOf(
        r.height, r.width, r.channels,
        absl::string_view(reinterpret_cast<const char*>(data->pixels.data() + r.offset), bytes));
  }
};

struct RecordEq {
  const DecodedDataset* data;
  bool operator()(uint32_t a, uint32_t b) const {
    const DecodedDataset::Record& ra = data->records[a];
    const DecodedDataset::Record& rb = data->records[b];
    if (ra.height != rb.height || ra.width != rb.width || ra.channels != rb.channels) return false;
    const auto bytes = static_cast<size_t>(int64_t{ra.height} * ra.width * ra.channels);
    return std::memcmp(data->pixels.data() + ra.offset, data->pixels.data() + rb.offset, bytes) ==
           0;
  }
};

void FindDuplicates(const DecodedDataset& data, const std::function<std::string(size_t)>& name,
                    int max_listed, v1::DatasetReport* report) {
  absl::flat_hash_set<uint32_t, RecordHash, RecordEq> seen(data.records.size(), RecordHash{&data},
                                                           RecordEq{&data});
  int64_t count = 0;
  for (size_t i = 0; i < data.records.size(); ++i) {
    const auto [it, inserted] = seen.insert(static_cast<uint32_t>(i));
    if (inserted) continue;
    ++count;
    if (report->duplicates_size() < max_listed) {
      v1::DatasetReport::Duplicate* dup = report->add_duplicates();
      dup->set_path(name(i));
      dup->set_duplicate_of(name(*it));
    }
  }
  report->set_duplicate_count(count);
  if (count > 0) {
    report->add_warnings(absl::StrCat(
        count, count == 1 ? " image is an exact duplicate" : " images are exact duplicates",
        " of another (kept; see the report's duplicates)"));
  }
}

// Fills classes, input_shape, imbalance and size information. `data` must
// hold at least one record.
void Summarize(const DecodedDataset& data, v1::Dataset* summary) {
  summary->set_num_examples(static_cast<int64_t>(data.records.size()));
  std::vector<int64_t> counts(data.class_names.size(), 0);
  std::map<std::tuple<int32_t, int32_t, int32_t>, int64_t> sizes;  // (H, W, C)
  int32_t max_channels = 0;
  for (const DecodedDataset::Record& r : data.records) {
    ++counts[r.label];
    ++sizes[{r.height, r.width, r.channels}];
    max_channels = std::max(max_channels, r.channels);
  }
  v1::DatasetReport* report = summary->mutable_report();
  int largest = -1;
  int smallest = -1;
  for (size_t label = 0; label < counts.size(); ++label) {
    v1::ClassCount* c = summary->add_classes();
    c->set_label(static_cast<int32_t>(label));
    c->set_class_name(data.class_names[label]);
    c->set_count(counts[label]);
    if (counts[label] == 0) {
      report->add_warnings(absl::StrCat("class '", data.class_names[label], "' (label ", label,
                                        ") has no examples"));
      continue;
    }
    if (largest < 0 || counts[label] > counts[largest]) largest = static_cast<int>(label);
    if (smallest < 0 || counts[label] < counts[smallest]) smallest = static_cast<int>(label);
  }
  if (smallest >= 0) {
    const double ratio = static_cast<double>(counts[largest]) / counts[smallest];
    report->set_imbalance_ratio(ratio);
    if (ratio > kImbalanceWarningRatio) {
      report->add_warnings(absl::StrFormat(
          "class imbalance: '%s' has %d examples but '%s' has only %d (ratio %.1f); consider "
          "collecting more of the small classes or weighting them",
          data.class_names[largest], counts[largest], data.class_names[smallest], counts[smallest],
          ratio));
    }
  }

  // The input shape is the most common height x width (ties: the smaller),
  // with as many channels as the richest image, since grey converts to RGB
  // without loss but not the other way round.
  std::map<std::pair<int32_t, int32_t>, int64_t> hw_counts;
  for (const auto& [shape, n] : sizes) hw_counts[{std::get<0>(shape), std::get<1>(shape)}] += n;
  auto best = hw_counts.begin();
  for (auto it = hw_counts.begin(); it != hw_counts.end(); ++it) {
    if (it->second > best->second) best = it;
  }
  summary->add_input_shape(max_channels);
  summary->add_input_shape(best->first.first);
  summary->add_input_shape(best->first.second);
  if (sizes.size() > 1) {
    std::vector<std::pair<int64_t, std::tuple<int32_t, int32_t, int32_t>>> by_count;
    for (const auto& [shape, n] : sizes) by_count.push_back({-n, shape});
    std::sort(by_count.begin(), by_count.end());
    for (size_t i = 0; i < by_count.size() && i < kMaxListedSizes; ++i) {
      const auto& [h, w, c] = by_count[i].second;
      report->add_image_sizes(absl::StrCat(h, "x", w, "x", c));
    }
    report->add_warnings(absl::StrCat(
        "images come in ", sizes.size(), " different sizes (HxWxC); the most common is ",
        best->first.first, "x", best->first.second, " (", best->second, " of ", data.records.size(),
        " images); training resizes every image to the model's input"));
  }
}

// ---------------------------------------------------------------------------
// Image folder archives.

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
struct Candidate {
  std::string path;  // as in the archive, without "./" components
  std::vector<std::string> parts;
  absl::StatusOr<Image> image;
};

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

  absl::StatusOr<IngestResult> Run(const std::string& archive_path);

 private:
  absl::Status ReadEntries(archive* a);
  // Reads the current entry's bytes; a per-entry problem goes into `image`.
  absl::Status ReadCandidate(archive* a, archive_entry* entry, Candidate* candidate);
  // Moves past the current entry's data without keeping it. Inside a
  // compressed stream the data must still be decompressed to reach the next
  // header, so it is read block by block and charged to the budget (a
  // skipped member cannot be a free bomb); elsewhere libarchive skips it
  // without decompressing (a zip member) or seeks (a plain tar).
  absl::Status SkipEntry(archive* a, absl::string_view path);
  // Charges the budget for what the decompression filters (gzip, bzip2, xz,
  // ...) produced since the last call.
  absl::Status ChargeFilters(archive* a, absl::string_view path);
  absl::StatusOr<IngestResult> Assemble();
  absl::Status Error(absl::string_view message) const {
    return absl::InvalidArgumentError(absl::StrCat(display_name_, ": ", message));
  }

  const std::string display_name_;
  const IngestOptions options_;
  int64_t num_entries_ = 0;
  std::vector<Candidate> candidates_;
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
  // Decoded images per depth, to stop early on a huge archive.
  int64_t decoded_at_depth_[4] = {0, 0, 0, 0};
};

absl::StatusOr<IngestResult> ArchiveIngestor::Run(const std::string& archive_path) {
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
  RETURN_IF_ERROR(ReadEntries(a.get()));
  a.reset();
  if (num_entries_ == 0) return Error("the archive is empty");
  return Assemble();
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
    const std::string raw_path = raw != nullptr ? raw : "";
    last_path = raw_path;
    const bool is_dir = archive_entry_filetype(entry) == AE_IFDIR;

    // Path checks. Nothing is ever written to disk, but an absolute or ".."
    // path is a sign of a malicious or broken archive and is never used.
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
    Candidate candidate{path, std::move(parts), absl::UnknownError("not read")};
    RETURN_IF_ERROR(ReadCandidate(a, entry, &candidate));
    if (candidate.image.ok()) {
      const int64_t decoded = ++decoded_at_depth_[candidate.parts.size()];
      // Once the top-level layout is settled enough to know which depth is
      // used, more images than allowed cannot become fewer.
      const bool depth_in_use = (candidate.parts.size() == 2) != single_top_;
      if (decoded > options_.max_examples && depth_in_use) {
        return Error(absl::StrCat("more than ", options_.max_examples, " images; the limit is ",
                                  options_.max_examples));
      }
    }
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
    candidate->image = too_large(archive_entry_size(entry));
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
      candidate->image =
          absl::InvalidArgumentError(absl::StrCat("cannot extract: ", ArchiveError(a)));
      return absl::OkStatus();
    }
    // A zip member is inflated by the format itself, not by a filter.
    RETURN_IF_ERROR(compressed_ ? ChargeFilters(a, candidate->path)
                    : zip_ ? budget_.Charge(n, absl::StrCat(display_name_, ": ", candidate->path,
                                                            " (inflated)"))
                           : absl::OkStatus());
    if (static_cast<int64_t>(bytes.size()) + n > max_file_bytes) {
      candidate->image = too_large(static_cast<int64_t>(bytes.size()) + n);
      return SkipEntry(a, candidate->path);
    }
    bytes.append(chunk, static_cast<size_t>(n));
  }
  DecodeLimits limits;
  limits.max_pixels = options_.max_image_pixels;
  limits.max_jpeg_scans = options_.max_jpeg_scans;
  limits.budget = &budget_;
  candidate->image = DecodeImage(bytes, limits);
  if (budget_.exhausted()) {
    return absl::ResourceExhaustedError(absl::StrCat(display_name_, ": ", candidate->path, ": ",
                                                     candidate->image.status().message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<IngestResult> ArchiveIngestor::Assemble() {
  // Strip the single top-level folder only when images sit one level below
  // it; an archive of just "cats/*.jpg" is one class, not zero.
  const bool strip =
      single_top_ && std::any_of(candidates_.begin(), candidates_.end(),
                                 [](const Candidate& c) { return c.parts.size() == 3; });
  const size_t class_depth = strip ? 3 : 2;

  std::vector<size_t> order(candidates_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](size_t x, size_t y) { return candidates_[x].path < candidates_[y].path; });

  v1::DatasetReport report;
  std::map<std::string, std::vector<size_t>> by_class;  // sorted: label order
  std::map<std::string, int64_t> failed_by_class;
  int64_t failed = 0;
  for (size_t index : order) {
    Candidate& c = candidates_[index];
    if (c.parts.size() != class_depth) {
      ignored_.Add(c.path);
      continue;
    }
    const std::string& class_name = c.parts[class_depth - 2];
    if (c.image.ok()) {
      by_class[class_name].push_back(index);
      continue;
    }
    const absl::Status& status = c.image.status();
    if (absl::IsFailedPrecondition(status) || absl::IsResourceExhausted(status)) {
      return Error(absl::StrCat(c.path, ": ", status.message()));
    }
    ++failed;
    ++failed_by_class[class_name];
    if (report.failed_files_size() < options_.max_listed) {
      v1::DatasetReport::FailedFile* f = report.add_failed_files();
      f->set_path(c.path);
      f->set_reason(std::string(status.message()));
    }
  }
  std::vector<std::string> dropped;
  for (const auto& [class_name, n] : failed_by_class) {
    if (by_class.count(class_name) == 0) {
      dropped.push_back(class_name);
      report.add_warnings(absl::StrCat("class folder '", class_name, "' was dropped: none of its ",
                                       n, " images could be decoded"));
    }
  }

  if (by_class.empty()) {
    std::string details =
        absl::StrCat(ignored_.count(), " entries ignored, ", failed, " images failed to decode");
    if (report.failed_files_size() > 0) {
      absl::StrAppend(&details, "; e.g. ", report.failed_files(0).path(), ": ",
                      report.failed_files(0).reason());
    }
    return Error(
        absl::StrCat("no usable images: expected class folders of .jpg/.jpeg/.png files such as "
                     "'cats/001.jpg' (",
                     details, ")"));
  }
  if (by_class.size() == 1) {
    std::string message = absl::StrCat("only one class ('", by_class.begin()->first,
                                       "') was found; at least two class folders are needed");
    if (!dropped.empty()) {
      absl::StrAppend(&message, " (no image in '", absl::StrJoin(dropped, "', '"),
                      "' could be decoded)");
    }
    return Error(message);
  }

  IngestResult result;
  DecodedDataset& data = result.data;
  int64_t total_images = 0;
  size_t total_bytes = 0;
  for (const auto& [class_name, indices] : by_class) {
    total_images += static_cast<int64_t>(indices.size());
    for (size_t index : indices) total_bytes += candidates_[index].image->pixels.size();
  }
  if (total_images > options_.max_examples) {
    return Error(absl::StrCat(total_images, " images; the limit is ", options_.max_examples));
  }
  data.records.reserve(total_images);
  data.pixels.reserve(total_bytes);
  std::vector<const std::string*> record_paths;
  record_paths.reserve(total_images);
  for (const auto& [class_name, indices] : by_class) {
    const auto label = static_cast<int32_t>(data.class_names.size());
    data.class_names.push_back(class_name);
    for (size_t index : indices) {
      Image& image = *candidates_[index].image;
      data.records.push_back({label, image.height, image.width, image.channels,
                              static_cast<int64_t>(data.pixels.size())});
      data.pixels.insert(data.pixels.end(), image.pixels.begin(), image.pixels.end());
      image.pixels = std::vector<uint8_t>();  // keep the peak near one copy
      record_paths.push_back(&candidates_[index].path);
    }
  }

  if (failed > 0) {
    report.add_warnings(absl::StrCat(
        failed, failed == 1 ? " image" : " images",
        " could not be decoded and were left out (see failed_files",
        failed > options_.max_listed ? "; the first " : "",
        failed > options_.max_listed ? absl::StrCat(options_.max_listed, " are listed") : "", ")"));
  }
  for (std::string& path : ignored_.Sorted()) report.add_ignored_files(std::move(path));
  if (ignored_.count() > options_.max_listed) {
    report.add_warnings(absl::StrCat(ignored_.count(), " archive entries were ignored; the first ",
                                     options_.max_listed, " are listed"));
  }
  *result.summary.mutable_report() = std::move(report);
  FindDuplicates(
      data, [&](size_t i) { return *record_paths[i]; }, options_.max_listed,
      result.summary.mutable_report());
  Summarize(data, &result.summary);
  return result;
}

// ---------------------------------------------------------------------------
// IDX files.

struct GzCloser {
  void operator()(gzFile_s* f) const { gzclose(f); }
};
using GzFile = std::unique_ptr<gzFile_s, GzCloser>;

// Reads up to `size` bytes; returns how many were read. A gzip stream that
// ends early counts as a short read (the caller reports truncation); other
// gzip damage is an error.
absl::StatusOr<size_t> GzReadFully(gzFile file, void* out, size_t size,
                                   const std::string& display_name) {
  size_t got = 0;
  while (got < size) {
    const auto want = static_cast<unsigned>(std::min<size_t>(size - got, size_t{1} << 24));
    const int n = gzread(file, static_cast<char*>(out) + got, want);
    if (n < 0) {
      int errnum = 0;
      const char* message = gzerror(file, &errnum);
      if (errnum == Z_BUF_ERROR) break;  // "unexpected end of file"
      return absl::InvalidArgumentError(absl::StrCat(display_name, ": corrupt gzip data (",
                                                     message != nullptr ? message : "", ")"));
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  return got;
}

// Largest IDX image side. JPEG stops at 65500 too; anything larger is a
// corrupt or hostile header, refused before its products are formed.
constexpr uint32_t kMaxIdxSide = 65535;

uint32_t BigEndian32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// Opens an IDX file of unsigned bytes with `rank` dimensions and reads its
// header. `what` names the expected content for messages ("images").
absl::StatusOr<GzFile> OpenIdx(const std::string& path, const std::string& display_name, int rank,
                               absl::string_view what, std::vector<uint32_t>* dims) {
  GzFile file(gzopen(path.c_str(), "rb"));
  if (file == nullptr) {
    const int err = errno;
    const std::string message =
        absl::StrCat(display_name, ": cannot open ", path, ": ", std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(message) : absl::InternalError(message);
  }
  gzbuffer(file.get(), 1 << 18);
  unsigned char header[4 * 4];
  ASSIGN_OR_RETURN(const size_t got, GzReadFully(file.get(), header, 4, display_name));
  const uint32_t expected = 0x00000800u | static_cast<uint32_t>(rank);
  const char* kind = rank == 3 ? "idx3-ubyte images" : "idx1-ubyte labels";
  if (got < 4) {
    return absl::InvalidArgumentError(
        absl::StrCat(display_name, ": not an IDX file (only ", got, " bytes); expected ", kind));
  }
  const uint32_t magic = BigEndian32(header);
  if (magic != expected) {
    std::string hint;
    if (magic == (0x00000800u | (rank == 3 ? 1u : 3u))) {
      hint = rank == 3 ? "; this looks like a labels file: are images and labels swapped?"
                       : "; this looks like an images file: are images and labels swapped?";
    }
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: not an IDX %s file: magic number is 0x%08x, expected 0x%08x (%s)%s",
                        display_name, what, magic, expected, kind, hint));
  }
  ASSIGN_OR_RETURN(const size_t got_dims,
                   GzReadFully(file.get(), header, 4 * static_cast<size_t>(rank), display_name));
  if (got_dims < 4 * static_cast<size_t>(rank)) {
    return absl::InvalidArgumentError(
        absl::StrCat(display_name, ": truncated: the IDX header ends early"));
  }
  dims->clear();
  for (int i = 0; i < rank; ++i) {
    const uint32_t d = BigEndian32(header + 4 * i);
    if (d == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(display_name, ": header dimension ", i, " is 0; no ", what));
    }
    dims->push_back(d);
  }
  return file;
}

// Reads exactly `size` payload bytes and checks that nothing follows.
// `describe_truncation(n)` renders the message for a file holding only n.
absl::StatusOr<std::vector<uint8_t>> ReadIdxPayload(
    gzFile file, uint64_t size, const std::string& display_name,
    const std::function<std::string(uint64_t)>& describe_truncation) {
  // Grown as data arrives, so that a header lying about its size cannot make
  // us allocate memory the file does not fill.
  constexpr uint64_t kStep = uint64_t{64} << 20;
  std::vector<uint8_t> data;
  data.reserve(static_cast<size_t>(std::min(size, kStep)));
  uint64_t got = 0;
  while (got < size) {
    const uint64_t want = std::min(size - got, kStep);
    data.resize(static_cast<size_t>(got + want));
    ASSIGN_OR_RETURN(const size_t n,
                     GzReadFully(file, data.data() + got, static_cast<size_t>(want), display_name));
    got += n;
    if (n < want) {
      return absl::InvalidArgumentError(
          absl::StrCat(display_name, ": truncated: ", describe_truncation(got)));
    }
  }
  char extra[1];
  ASSIGN_OR_RETURN(const size_t trailing, GzReadFully(file, extra, sizeof(extra), display_name));
  if (trailing > 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(display_name, ": the file holds more data than its header describes (", size,
                     " bytes); the header is wrong or the file is not IDX"));
  }
  return data;
}

// Checks that every label has a class name (when names are given) and that
// at least two labels occur; returns the largest label.
absl::StatusOr<uint8_t> CheckIdxLabels(const std::vector<uint8_t>& labels, size_t num_classes_given,
                                       const std::string& display_name) {
  uint8_t max_label = 0;
  std::vector<int64_t> present(256, 0);
  for (size_t i = 0; i < labels.size(); ++i) {
    const uint8_t label = labels[i];
    if (num_classes_given > 0 && label >= num_classes_given) {
      return absl::InvalidArgumentError(absl::StrCat(display_name, ": label ", label, " (example ",
                                                     i, ") is out of range: ", num_classes_given,
                                                     " class names were given, for labels 0..",
                                                     num_classes_given - 1));
    }
    max_label = std::max(max_label, label);
    ++present[label];
  }
  const int64_t distinct =
      std::count_if(present.begin(), present.end(), [](int64_t n) { return n > 0; });
  if (distinct < 2) {
    return absl::InvalidArgumentError(absl::StrCat(display_name, ": only one label (", max_label,
                                                   ") occurs; at least two classes are needed"));
  }
  return max_label;
}

int64_t FileSize(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? static_cast<int64_t>(st.st_size) : 0;
}

// Checks the IDX header's sizes before anything is read or allocated: counts
// match, each dimension within its bound, and the products (checked, so that
// a wrap-around cannot pass a limit) within the limits. Returns the pixel
// payload's size in bytes.
absl::StatusOr<int64_t> CheckIdxSizes(const std::vector<uint32_t>& image_dims, uint32_t num_labels,
                                      const std::string& images_name,
                                      const std::string& labels_name,
                                      const IngestOptions& options) {
  const int64_t num_images = image_dims[0];
  if (num_images != num_labels) {
    return absl::InvalidArgumentError(
        absl::StrCat(images_name, " holds ", num_images, " images but ", labels_name, " holds ",
                     num_labels, " labels; they must match one to one"));
  }
  if (num_images > options.max_examples) {
    return absl::InvalidArgumentError(absl::StrCat(images_name, ": ", num_images,
                                                   " images; the limit is ", options.max_examples));
  }
  static constexpr const char* kFields[] = {"number of images", "rows", "columns"};
  for (int i = 1; i < 3; ++i) {
    if (image_dims[i] > kMaxIdxSide) {
      return absl::InvalidArgumentError(absl::StrCat(images_name, ": header dimension ", i, " (",
                                                     kFields[i], ") is ", image_dims[i],
                                                     "; at most ", kMaxIdxSide, " is accepted"));
    }
  }
  const std::optional<int64_t> pixels = common::CheckedMul(image_dims[1], image_dims[2]);
  if (!pixels.has_value() || *pixels > options.max_image_pixels) {
    return absl::InvalidArgumentError(
        absl::StrCat(images_name, ": ", image_dims[2], "x", image_dims[1],
                     " pixels per image (header dimensions 2 and 1) exceeds the limit of ",
                     options.max_image_pixels));
  }
  const std::optional<int64_t> payload = common::CheckedMul(num_images, *pixels);
  if (!payload.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat(images_name, ": header dimensions ", num_images, " x ", image_dims[1], " x ",
                     image_dims[2], " overflow a 64-bit size; the header is corrupt"));
  }
  return *payload;
}

}  // namespace

absl::StatusOr<IngestResult> IngestImageFolderArchive(const std::string& archive_path,
                                                      const std::string& display_name,
                                                      const IngestOptions& options) {
  ArchiveIngestor ingestor(display_name, options);
  return ingestor.Run(archive_path);
}

absl::StatusOr<IngestResult> IngestIdx(const std::string& images_path,
                                       const std::string& labels_path,
                                       const std::vector<std::string>& class_names,
                                       const std::string& images_display_name,
                                       const std::string& labels_display_name,
                                       const IngestOptions& options) {
  {
    absl::flat_hash_set<absl::string_view> names;
    for (const std::string& name : class_names) {
      if (name.empty()) return absl::InvalidArgumentError("class_names: a class name is empty");
      if (!names.insert(name).second) {
        return absl::InvalidArgumentError(absl::StrCat("class_names: '", name, "' is given twice"));
      }
    }
  }

  std::vector<uint32_t> image_dims;
  ASSIGN_OR_RETURN(GzFile images,
                   OpenIdx(images_path, images_display_name, 3, "images", &image_dims));
  std::vector<uint32_t> label_dims;
  ASSIGN_OR_RETURN(GzFile labels,
                   OpenIdx(labels_path, labels_display_name, 1, "labels", &label_dims));
  const uint64_t num_images = image_dims[0];
  const uint64_t rows = image_dims[1];
  const uint64_t cols = image_dims[2];
  ASSIGN_OR_RETURN(
      const int64_t payload_bytes,
      CheckIdxSizes(image_dims, label_dims[0], images_display_name, labels_display_name, options));
  DecodeBudget budget(options.budget, FileSize(images_path) + FileSize(labels_path));
  RETURN_IF_ERROR(budget.Charge(
      payload_bytes + static_cast<int64_t>(num_images),
      absl::StrCat(images_display_name, " and ", labels_display_name, ": the header's ", num_images,
                   " images of ", rows, "x", cols, " pixels")));

  ASSIGN_OR_RETURN(std::vector<uint8_t> label_bytes,
                   ReadIdxPayload(labels.get(), num_images, labels_display_name, [&](uint64_t got) {
                     return absl::StrCat("header says ", num_images, " labels but only ", got,
                                         " bytes of label data");
                   }));
  labels.reset();

  const size_t num_classes_given = class_names.size();
  ASSIGN_OR_RETURN(const uint8_t max_label,
                   CheckIdxLabels(label_bytes, num_classes_given, labels_display_name));

  ASSIGN_OR_RETURN(std::vector<uint8_t> pixels,
                   ReadIdxPayload(images.get(), static_cast<uint64_t>(payload_bytes),
                                  images_display_name, [&](uint64_t got) {
                                    return absl::StrCat("header says ", num_images, " images of ",
                                                        rows, "x", cols, " but only ", got,
                                                        " bytes of pixel data");
                                  }));
  images.reset();

  IngestResult result;
  DecodedDataset& data = result.data;
  if (num_classes_given > 0) {
    data.class_names = class_names;
  } else {
    for (int label = 0; label <= max_label; ++label)
      data.class_names.push_back(absl::StrCat(label));
  }
  data.pixels = std::move(pixels);
  data.records.resize(num_images);
  const int64_t image_bytes = static_cast<int64_t>(rows * cols);
  for (uint64_t i = 0; i < num_images; ++i) {
    data.records[i] = {label_bytes[i], static_cast<int32_t>(rows), static_cast<int32_t>(cols), 1,
                       static_cast<int64_t>(i) * image_bytes};
  }
  FindDuplicates(
      data, [&](size_t i) { return absl::StrCat(images_display_name, "[", i, "]"); },
      options.max_listed, result.summary.mutable_report());
  Summarize(data, &result.summary);
  return result;
}

}  // namespace kaizen::datasets
