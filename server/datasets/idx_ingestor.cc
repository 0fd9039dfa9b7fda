#include "server/datasets/idx_ingestor.h"

#include <sys/stat.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <system_error>
#include <thread>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "server/common/checked_math.h"
#include "server/common/status_macros.h"
#include "server/datasets/gzip_reader.h"
#include "server/datasets/ingest_report.h"
#include "server/datasets/record_file.h"

namespace kaizen::datasets {
namespace {

// Largest IDX image side. JPEG stops at 65500 too; anything larger is a
// corrupt or hostile header, refused before its products are formed.
constexpr uint32_t kMaxIdxSide = 65535;

uint32_t BigEndian32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// Opens an IDX file of unsigned bytes with `rank` dimensions and reads its
// header. `what` names the expected content for messages ("images").
absl::StatusOr<std::unique_ptr<GzipReader>> OpenIdx(const IdxFile& idx, int rank,
                                                    absl::string_view what,
                                                    std::vector<uint32_t>* dims) {
  const std::string& display_name = idx.display_name;
  ASSIGN_OR_RETURN(std::unique_ptr<GzipReader> file,
                   GzipReader::Open(idx.path, display_name, idx.growing));
  unsigned char header[4 * 4];
  ASSIGN_OR_RETURN(const size_t got, file->Read(header, 4));
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
  ASSIGN_OR_RETURN(const size_t got_dims, file->Read(header, 4 * static_cast<size_t>(rank)));
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
// `before_read(n)`, when set, runs before each read that takes the payload
// to n bytes (reads of at most 4 MiB); an error from it ends the read.
absl::StatusOr<PixelBuffer> ReadIdxPayload(
    GzipReader& file, uint64_t size, const std::string& display_name,
    const std::function<std::string(uint64_t)>& describe_truncation,
    const std::function<absl::Status(uint64_t)>& before_read = nullptr) {
  // Grown as data arrives, so that a header lying about its size cannot make
  // us fill memory the file does not: reserved ahead (untouched pages cost
  // nothing), written only as decoded.
  constexpr uint64_t kStep = uint64_t{64} << 20;
  const uint64_t read_size = before_read != nullptr ? uint64_t{4} << 20 : kStep;
  PixelBuffer data;
  data.reserve(static_cast<size_t>(std::min(size, kStep)));
  uint64_t got = 0;
  while (got < size) {
    const uint64_t want = std::min(size - got, read_size);
    if (before_read != nullptr) RETURN_IF_ERROR(before_read(got + want));
    if (got + want > data.capacity()) {
      data.reserve(static_cast<size_t>(
          std::min(size, std::max(got + want, std::max<uint64_t>(kStep, 2 * data.capacity())))));
    }
    data.resize(static_cast<size_t>(got + want));
    ASSIGN_OR_RETURN(const size_t n, file.Read(data.data() + got, static_cast<size_t>(want)));
    got += n;
    if (n < want) {
      return absl::InvalidArgumentError(
          absl::StrCat(display_name, ": truncated: ", describe_truncation(got)));
    }
  }
  char extra[1];
  ASSIGN_OR_RETURN(const size_t trailing, file.Read(extra, sizeof(extra)));
  if (trailing > 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(display_name, ": the file holds more data than its header describes (", size,
                     " bytes); the header is wrong or the file is not IDX"));
  }
  if (!file.Ended()) {
    return absl::InvalidArgumentError(
        absl::StrCat(display_name,
                     ": truncated: the gzip data ends before its trailer (the "
                     "CRC-32 and length that close it)"));
  }
  return data;
}

// Checks that every label has a class name (when names are given) and that
// at least two labels occur; returns the largest label.
absl::StatusOr<uint8_t> CheckIdxLabels(absl::Span<const uint8_t> labels, size_t num_classes_given,
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

// Checks the images header's sizes before anything is read or allocated:
// each dimension within its bound, and the products (checked, so that a
// wrap-around cannot pass a limit) within the limits. Returns the pixel
// payload's size in bytes.
absl::StatusOr<int64_t> CheckIdxImageSizes(const std::vector<uint32_t>& image_dims,
                                           const std::string& images_name,
                                           const IngestOptions& options) {
  const int64_t num_images = image_dims[0];
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

absl::StatusOr<IngestResult> IngestIdx(const IdxFile& images_file, const IdxFile& labels_file,
                                       const std::vector<std::string>& class_names,
                                       const IngestOptions& options, const std::string& record_path,
                                       const std::function<absl::Status()>& before_storing) {
  {
    absl::flat_hash_set<absl::string_view> names;
    for (const std::string& name : class_names) {
      if (name.empty()) return absl::InvalidArgumentError("class_names: a class name is empty");
      if (!names.insert(name).second) {
        return absl::InvalidArgumentError(absl::StrCat("class_names: '", name, "' is given twice"));
      }
    }
  }
  const std::string& images_display_name = images_file.display_name;
  const std::string& labels_display_name = labels_file.display_name;

  // The images first, whole, then the labels: an upload sends them in this
  // order, so the images decode while the rest arrives.
  std::vector<uint32_t> image_dims;
  ASSIGN_OR_RETURN(std::unique_ptr<GzipReader> images,
                   OpenIdx(images_file, 3, "images", &image_dims));
  const uint64_t num_images = image_dims[0];
  const uint64_t rows = image_dims[1];
  const uint64_t cols = image_dims[2];
  ASSIGN_OR_RETURN(const int64_t payload_bytes,
                   CheckIdxImageSizes(image_dims, images_display_name, options));
  const auto size_of = [](const IdxFile& f) {
    return f.size_bytes > 0 ? f.size_bytes : FileSize(f.path);
  };
  DecodeBudget budget(options.budget, size_of(images_file) + size_of(labels_file));
  RETURN_IF_ERROR(budget.Charge(
      payload_bytes + static_cast<int64_t>(num_images),
      absl::StrCat(images_display_name, " and ", labels_display_name, ": the header's ", num_images,
                   " images of ", rows, "x", cols, " pixels")));

  // While the files still arrive, what is decoded stays within the budget
  // of what has arrived (its ratio, or its allowance): a stream that stalls
  // holds no more decoded memory than a complete upload of its size could.
  // `arrived_before` and `decoded_before`: the complete files read earlier.
  const auto paced = [&](const IdxFile& file, int64_t arrived_before, uint64_t decoded_before) {
    std::function<absl::Status(uint64_t)> pace;
    if (file.growing == nullptr || !(options.budget.max_ratio > 0)) return pace;
    pace = [&options, &file, arrived_before, decoded_before](uint64_t decoded) -> absl::Status {
      const uint64_t total = decoded_before + decoded;
      const int64_t allowance = std::max<int64_t>(0, options.budget.ratio_allowance_bytes);
      if (total <= static_cast<uint64_t>(allowance)) return absl::OkStatus();
      const double need =
          std::min(std::ceil(static_cast<double>(total) / options.budget.max_ratio), 9e18) -
          static_cast<double>(arrived_before);
      if (need <= 0) return absl::OkStatus();
      // Returns once the file holds `need` bytes, or is complete.
      return file.growing(static_cast<int64_t>(need) - 1).status();
    };
    return pace;
  };
  ASSIGN_OR_RETURN(PixelBuffer pixels,
                   ReadIdxPayload(
                       *images, static_cast<uint64_t>(payload_bytes), images_display_name,
                       [&](uint64_t got) {
                         return absl::StrCat("header says ", num_images, " images of ", rows, "x",
                                             cols, " but only ", got, " bytes of pixel data");
                       },
                       paced(images_file, 0, 0)));
  images.reset();

  std::vector<uint32_t> label_dims;
  ASSIGN_OR_RETURN(std::unique_ptr<GzipReader> labels,
                   OpenIdx(labels_file, 1, "labels", &label_dims));
  if (num_images != label_dims[0]) {
    return absl::InvalidArgumentError(absl::StrCat(
        images_display_name, " holds ", num_images, " images but ", labels_display_name, " holds ",
        label_dims[0], " labels; they must match one to one"));
  }
  ASSIGN_OR_RETURN(
      PixelBuffer label_bytes,
      ReadIdxPayload(
          *labels, num_images, labels_display_name,
          [&](uint64_t got) {
            return absl::StrCat("header says ", num_images, " labels but only ", got,
                                " bytes of label data");
          },
          paced(labels_file, size_of(images_file), static_cast<uint64_t>(payload_bytes))));
  labels.reset();

  const size_t num_classes_given = class_names.size();
  ASSIGN_OR_RETURN(const uint8_t max_label,
                   CheckIdxLabels(label_bytes, num_classes_given, labels_display_name));
  if (before_storing != nullptr) RETURN_IF_ERROR(before_storing());

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

  // The record file is written on a second thread while this one looks for
  // duplicates: both only read the decoded data.
  absl::StatusOr<int64_t> stored = absl::CancelledError("not stored");  // set below
  const auto store = [&] {
    try {
      stored = WriteRawRecordFile(record_path, data);
    } catch (const std::exception& e) {  // e.g. std::bad_alloc: a status, not std::terminate
      stored = absl::InternalError(absl::StrCat("cannot write ", record_path, ": ", e.what()));
    }
  };
  std::thread storing;
  if (!record_path.empty()) {
    try {
      storing = std::thread(store);
    } catch (...) {  // std::system_error, std::bad_alloc
      // No second thread: the file is written after the report.
    }
  }
  // Joined on every way out, an exception from the report included.
  absl::Cleanup join_storing = [&storing] {
    if (storing.joinable()) storing.join();
  };
  const bool stored_beside = storing.joinable();
  ReportDuplicates(
      data, [&](size_t i) { return absl::StrCat(images_display_name, "[", i, "]"); },
      options.max_listed, result.summary.mutable_report());
  SummarizeDataset(data, &result.summary);
  std::move(join_storing).Invoke();
  if (!stored_beside && !record_path.empty()) store();
  if (!record_path.empty()) {
    RETURN_IF_ERROR(stored.status());
    result.summary.set_stored_bytes(*stored);
  }
  return result;
}

absl::StatusOr<IngestResult> IngestIdx(const std::string& images_path,
                                       const std::string& labels_path,
                                       const std::vector<std::string>& class_names,
                                       const std::string& images_display_name,
                                       const std::string& labels_display_name,
                                       const IngestOptions& options,
                                       const std::string& record_path) {
  IdxFile images;
  images.path = images_path;
  images.display_name = images_display_name;
  IdxFile labels;
  labels.path = labels_path;
  labels.display_name = labels_display_name;
  return IngestIdx(images, labels, class_names, options, record_path);
}

}  // namespace kaizen::datasets
