#include "client/cli/dataset_source.h"

#include <sys/stat.h>

#include <optional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "client/cli/usage.h"

namespace kaizen::cli {
namespace {

constexpr absl::string_view kIdxImagesMarker = "idx3-ubyte";

bool Exists(const std::string& path, bool* is_dir) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return false;
  *is_dir = S_ISDIR(st.st_mode);
  return true;
}

bool IsFile(const std::string& path) {
  bool is_dir = false;
  return Exists(path, &is_dir) && !is_dir;
}

std::string DirName(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return "";
  return path.substr(0, slash + 1);  // keeps the '/'
}

std::string BaseName(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// The labels file beside `images`: "train-images-idx3-ubyte.gz" gives
// "train-labels-idx1-ubyte.gz", or the same without ".gz".
absl::StatusOr<std::string> FindLabelsFile(const std::string& images) {
  std::string base = BaseName(images);
  const bool gzipped = absl::EndsWith(base, ".gz");
  if (gzipped) base.resize(base.size() - 3);
  if (!absl::StrContains(base, "images-idx3")) {
    return UsageError(absl::StrCat("cannot derive the labels file from \"", images,
                                   "\" (its name has no \"images-idx3\"); pass --labels=FILE"));
  }
  const std::string labels =
      DirName(images) + absl::StrReplaceAll(base, {{"images-idx3", "labels-idx1"}});
  // Prefer the same compression as the images file.
  const std::string first = gzipped ? labels + ".gz" : labels;
  const std::string second = gzipped ? labels : labels + ".gz";
  if (IsFile(first)) return first;
  if (IsFile(second)) return second;
  return absl::NotFoundError(absl::StrCat("no labels file beside ", images, ": looked for ", first,
                                          " and ", second, "; pass --labels=FILE"));
}

// The text format `format` names, or that `path`'s name shows under "auto"
// (.csv, .tsv, .jsonl, .ndjson, each optionally .gz).
std::optional<kaizen::v1::DatasetFormat> TextFormat(const std::string& path,
                                                    const std::string& format) {
  static const std::pair<const char*, kaizen::v1::DatasetFormat> kFormats[] = {
      {"csv", kaizen::v1::DATASET_FORMAT_TEXT_CSV},
      {"tsv", kaizen::v1::DATASET_FORMAT_TEXT_TSV},
      {"jsonl", kaizen::v1::DATASET_FORMAT_TEXT_JSONL},
      {"ndjson", kaizen::v1::DATASET_FORMAT_TEXT_JSONL}};
  std::string name = absl::AsciiStrToLower(BaseName(path));
  if (absl::EndsWith(name, ".gz")) name.resize(name.size() - 3);
  for (const auto& [ext, value] : kFormats) {
    if (format == ext || (format == "auto" && absl::EndsWith(name, absl::StrCat(".", ext)))) {
      return value;
    }
  }
  return std::nullopt;
}

}  // namespace

bool IsArchiveName(const std::string& path) {
  const std::string name = absl::AsciiStrToLower(BaseName(path));
  for (absl::string_view ext :
       {".tar", ".tar.gz", ".tgz", ".zip", ".tar.bz2", ".tbz2", ".tar.xz", ".txz"}) {
    if (absl::EndsWith(name, ext)) return true;
  }
  return false;
}

absl::StatusOr<DatasetSource> ResolveDatasetSource(const std::string& path,
                                                   const std::string& format,
                                                   const std::string& labels) {
  const std::optional<kaizen::v1::DatasetFormat> text = TextFormat(path, format);
  if (format != "auto" && format != "folder" && format != "idx" && !text.has_value()) {
    return UsageError(absl::StrCat("--format must be auto, folder, idx, csv, tsv or jsonl, not \"",
                                   format, "\""));
  }
  bool is_dir = false;
  if (!Exists(path, &is_dir)) {
    return absl::NotFoundError(absl::StrCat(path, " does not exist"));
  }
  DatasetSource source;
  if (is_dir) {
    if (text.has_value()) {
      return UsageError(absl::StrCat("--format=", format, " needs a file, not the folder ", path));
    }
    if (format == "idx") {
      return UsageError(
          absl::StrCat("--format=idx needs the images file (*-images-idx3-ubyte[.gz]), not "
                       "the folder ",
                       path));
    }
    if (!labels.empty()) {
      return UsageError("--labels is only for IDX uploads");
    }
    source.format = kaizen::v1::DATASET_FORMAT_IMAGE_FOLDER;
    source.folder = path;
    return source;
  }

  const bool idx =
      format == "idx" || (format == "auto" && absl::StrContains(BaseName(path), kIdxImagesMarker));
  if (idx) {
    std::string labels_file = labels;
    if (labels_file.empty()) {
      absl::StatusOr<std::string> found = FindLabelsFile(path);
      if (!found.ok()) return found.status();
      labels_file = *std::move(found);
    } else if (!IsFile(labels_file)) {
      return absl::NotFoundError(absl::StrCat("labels file ", labels_file, " does not exist"));
    }
    source.format = kaizen::v1::DATASET_FORMAT_IDX;
    source.files = {path, labels_file};
    return source;
  }
  if (!labels.empty()) {
    return UsageError("--labels is only for IDX uploads");
  }
  if (text.has_value()) {
    source.format = *text;
    source.files = {path};
    return source;
  }
  if (format == "folder" || IsArchiveName(path)) {
    source.format = kaizen::v1::DATASET_FORMAT_IMAGE_FOLDER;
    source.files = {path};
    return source;
  }
  return UsageError(
      absl::StrCat("cannot tell the format of ", path,
                   " from its name; pass --format=folder for an archive of class folders, "
                   "--format=idx for an IDX images file, or --format=csv, tsv or jsonl for "
                   "a table of labelled text"));
}

}  // namespace kaizen::cli
