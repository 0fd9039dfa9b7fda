#include "server/store/dataset_store.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <optional>
#include <thread>
#include <tuple>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "google/protobuf/util/time_util.h"
#include "server/common/atomic_file.h"
#include "server/common/logging.h"
#include "server/common/names.h"
#include "server/common/paging.h"
#include "server/common/status_macros.h"
#include "server/common/text_limits.h"
#include "server/datasets/archive_ingestor.h"
#include "server/datasets/idx_ingestor.h"
#include "server/datasets/record_file.h"
#include "server/datasets/text_ingestor.h"

namespace kaizen::store {

using kaizen::v1::Dataset;
using kaizen::v1::DatasetFormat;

namespace {

// Most threads that decode a dataset being loaded.
constexpr unsigned kLoadThreads = 4;

// Class names come from folder names (or the header, for IDX) and are sent
// back by every Get and List: they must be printable UTF-8 of bounded size.
// Report entries are file paths from the archive, kept for information, so
// bytes that are not UTF-8 are replaced rather than refused.
absl::Status CheckIngestedText(Dataset* summary) {
  const int num_classes = summary->classes_size();
  RETURN_IF_ERROR(common::ValidateCount("class folders", num_classes, common::kMaxClasses));
  for (int i = 0; i < num_classes; ++i) {
    absl::Status st = common::ValidateClassName("class name", summary->classes(i).class_name());
    if (!st.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("class folder ", i + 1, " of ", num_classes, ": ", st.message(),
                       "; rename the folder (class names are folder names)"));
    }
  }
  kaizen::v1::DatasetReport* report = summary->mutable_report();
  for (auto& f : *report->mutable_failed_files()) {
    f.set_path(common::SanitizeUtf8(f.path()));
    f.set_reason(common::SanitizeUtf8(f.reason()));
  }
  for (auto& d : *report->mutable_duplicates()) {
    d.set_path(common::SanitizeUtf8(d.path()));
    d.set_duplicate_of(common::SanitizeUtf8(d.duplicate_of()));
  }
  for (std::string& path : *report->mutable_ignored_files()) path = common::SanitizeUtf8(path);
  for (std::string& w : *report->mutable_warnings()) w = common::SanitizeUtf8(w);
  return absl::OkStatus();
}

// The table layout a text format names.
std::optional<datasets::TextTableFormat> TextFormat(DatasetFormat format) {
  switch (format) {
    case kaizen::v1::DATASET_FORMAT_TEXT_CSV:
      return datasets::TextTableFormat::kCsv;
    case kaizen::v1::DATASET_FORMAT_TEXT_TSV:
      return datasets::TextTableFormat::kTsv;
    case kaizen::v1::DATASET_FORMAT_TEXT_JSONL:
      return datasets::TextTableFormat::kJsonLines;
    default:
      return std::nullopt;
  }
}

absl::Status CheckTextFields(const kaizen::v1::UploadDatasetHeader& header) {
  const bool text = TextFormat(header.format()).has_value();
  for (const auto& [field, value] : {std::pair{"header.text_field", &header.text_field()},
                                     std::pair{"header.label_field", &header.label_field()}}) {
    if (value->empty()) continue;
    if (!text) {
      return absl::InvalidArgumentError(
          absl::StrCat(field,
                       " applies to the text formats only (DATASET_FORMAT_TEXT_CSV, "
                       "_TSV, _JSONL)"));
    }
    RETURN_IF_ERROR(common::ValidateClassName(field, *value));
  }
  if (text && TextFields(header).first == TextFields(header).second) {
    return absl::InvalidArgumentError(
        absl::StrCat("header.text_field and header.label_field are both '",
                     TextFields(header).first, "'; the text and the label need two columns"));
  }
  return absl::OkStatus();
}

}  // namespace

std::pair<std::string, std::string> TextFields(const kaizen::v1::UploadDatasetHeader& header) {
  return {header.text_field().empty() ? "text" : header.text_field(),
          header.label_field().empty() ? "label" : header.label_field()};
}

bool IsTextDataset(const kaizen::v1::Dataset& dataset) {
  return TextFormat(dataset.format()).has_value();
}

absl::Status RequireImageDataset(const kaizen::v1::Dataset& dataset, absl::string_view field) {
  if (!IsTextDataset(dataset)) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      field, ": dataset \"", dataset.name(),
      "\" holds text, and this path reads image datasets only (a text job trains on a text "
      "dataset with a text model, and tests with its test_dataset)"));
}

DatasetStore::DatasetStore(Options options, MetadataStore* metadata)
    : options_(std::move(options)), metadata_(metadata) {}

absl::StatusOr<std::unique_ptr<DatasetStore::Upload>> DatasetStore::BeginUpload(
    const kaizen::v1::UploadDatasetHeader& header) {
  RETURN_IF_ERROR(common::ValidateName("dataset name", header.name()));
  RETURN_IF_ERROR(common::ValidateDescription("header.description", header.description()));
  RETURN_IF_ERROR(common::ValidateClassNames(
      "header.class_names", {header.class_names().begin(), header.class_names().end()}));
  int parts = 0;
  switch (header.format()) {
    case kaizen::v1::DATASET_FORMAT_IMAGE_FOLDER:
      parts = 1;
      break;
    case kaizen::v1::DATASET_FORMAT_IDX:
      parts = 2;
      break;
    case kaizen::v1::DATASET_FORMAT_TEXT_CSV:
    case kaizen::v1::DATASET_FORMAT_TEXT_TSV:
    case kaizen::v1::DATASET_FORMAT_TEXT_JSONL:
      parts = 1;
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "header.format is ", kaizen::v1::DatasetFormat_Name(header.format()),
          "; use DATASET_FORMAT_IMAGE_FOLDER, DATASET_FORMAT_IDX or DATASET_FORMAT_TEXT_CSV, "
          "_TSV or _JSONL"));
  }
  RETURN_IF_ERROR(CheckTextFields(header));
  if (header.max_stored_shorter_side() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("header.max_stored_shorter_side is ", header.max_stored_shorter_side(),
                     "; it must be 0 (the server's default) or a side in pixels"));
  }
  if (header.max_stored_shorter_side() > 0 &&
      header.format() != kaizen::v1::DATASET_FORMAT_IMAGE_FOLDER) {
    return absl::InvalidArgumentError(
        "header.max_stored_shorter_side applies to DATASET_FORMAT_IMAGE_FOLDER only; IDX images "
        "are stored as sent");
  }
  ASSIGN_OR_RETURN(bool exists, metadata_->DatasetExists(header.name()));
  if (exists) {
    return absl::AlreadyExistsError(absl::StrCat("dataset \"", header.name(), "\" already exists"));
  }
  {
    absl::MutexLock lock(&mu_);
    if (!uploading_.insert(header.name()).second) {
      return absl::AlreadyExistsError(
          absl::StrCat("an upload of dataset \"", header.name(), "\" is already in progress"));
    }
  }
  UploadReceiver::Options ro;
  ro.tmp_dir = options_.data_dir + "/tmp";
  ro.max_bytes = options_.max_upload_bytes;
  ro.expected_parts = parts;
  ro.what = "dataset upload";
  std::unique_ptr<Upload> upload(new Upload(this, header, std::move(ro)));
  // From here on the Upload's destructor releases the reservation.
  RETURN_IF_ERROR(upload->receiver_.Start(header.parts()));
  if (header.format() == kaizen::v1::DATASET_FORMAT_IDX) upload->StartIngestWhileReceiving();
  return upload;
}

void DatasetStore::Release(const std::string& name) {
  absl::MutexLock lock(&mu_);
  uploading_.erase(name);
}

DatasetStore::Upload::Upload(DatasetStore* store, kaizen::v1::UploadDatasetHeader header,
                             UploadReceiver::Options receiver_options)
    : store_(store),
      header_(std::move(header)),
      receiver_(std::move(receiver_options)),
      record_rel_(absl::StrCat("datasets/", header_.name(), "-", common::RandomHex(4), ".krf")),
      record_path_(absl::StrCat(store_->options_.data_dir, "/", record_rel_)),
      ingested_(absl::CancelledError("not ingested")) {}

DatasetStore::Upload::~Upload() {
  // The decoding thread stops at its next wait for bytes or for the verdict.
  receiver_.Abandon();
  if (ingesting_.joinable()) ingesting_.join();
  store_->Release(header_.name());
}

void DatasetStore::Upload::StartIngestWhileReceiving() {
  datasets::IdxFile images;
  images.path = receiver_.part_paths()[0];
  images.display_name = receiver_.part_names()[0];
  images.size_bytes = receiver_.part_sizes()[0];
  images.growing = receiver_.Follow(0);
  datasets::IdxFile labels;
  labels.path = receiver_.part_paths()[1];
  labels.display_name = receiver_.part_names()[1];
  labels.size_bytes = receiver_.part_sizes()[1];
  labels.growing = receiver_.Follow(1);
  const auto ingest = [this, images = std::move(images), labels = std::move(labels)] {
    try {
      absl::StatusOr<datasets::IngestResult> result = datasets::IngestIdx(
          images, labels, {header_.class_names().begin(), header_.class_names().end()},
          IngestOptionsForUpload(), record_path_, [this] { return receiver_.AwaitVerdict(); });
      ingested_ = result.ok() ? absl::StatusOr<Dataset>(std::move(result->summary))
                              : absl::StatusOr<Dataset>(result.status());
    } catch (const std::exception& e) {  // e.g. std::bad_alloc: a status, not std::terminate
      ingested_ = absl::InternalError(absl::StrCat("cannot ingest the upload: ", e.what()));
    } catch (...) {
      ingested_ = absl::InternalError("cannot ingest the upload");
    }
    absl::MutexLock lock(&refused_mu_);
    refused_ = ingested_.status();
  };
  try {
    ingesting_ = std::thread(ingest);
  } catch (...) {  // std::system_error, std::bad_alloc
    // No thread to spare: Finish() decodes the complete files.
  }
}

absl::Status DatasetStore::Upload::Append(absl::string_view bytes) {
  {
    absl::MutexLock lock(&refused_mu_);
    if (!refused_.ok()) return refused_;
  }
  return receiver_.Append(bytes);
}

datasets::IngestOptions DatasetStore::Upload::IngestOptionsForUpload() const {
  datasets::IngestOptions io;
  io.max_image_pixels = store_->options_.max_image_pixels;
  io.max_jpeg_scans = store_->options_.max_jpeg_scans;
  io.max_listed = store_->options_.max_report_files;
  io.budget = store_->options_.decode_budget;
  io.max_examples = store_->options_.max_examples;
  io.max_stored_shorter_side = header_.max_stored_shorter_side() > 0
                                   ? header_.max_stored_shorter_side()
                                   : store_->options_.max_stored_shorter_side;
  io.stored_jpeg_quality = store_->options_.stored_jpeg_quality;
  io.max_text_row_bytes = store_->options_.max_text_row_bytes;
  // An IDX upload is held in memory while it is ingested; an image folder
  // streams into its record file.
  if (header_.format() == kaizen::v1::DATASET_FORMAT_IDX) {
    io.budget.max_bytes = std::min(io.budget.max_bytes, store_->options_.max_loaded_bytes);
  }
  return io;
}

absl::StatusOr<Dataset> DatasetStore::Upload::Ingest() {
  const datasets::IngestOptions io = IngestOptionsForUpload();
  const auto& paths = receiver_.part_paths();
  const auto& names = receiver_.part_names();
  const std::string& path = record_path_;
  absl::StatusOr<Dataset> ingested;
  if (const auto text_format = TextFormat(header_.format()); text_format.has_value()) {
    datasets::TextTableOptions table;
    table.format = *text_format;
    std::tie(table.text_field, table.label_field) = TextFields(header_);
    ingested = datasets::IngestTextTable(
        paths[0], names[0], table, {header_.class_names().begin(), header_.class_names().end()}, io,
        path);
    if (ingested.ok()) {
      ingested->mutable_report()->mutable_text()->set_text_field(table.text_field);
      ingested->mutable_report()->mutable_text()->set_label_field(table.label_field);
    }
  } else if (header_.format() == kaizen::v1::DATASET_FORMAT_IDX) {
    // IDX images are raw pixels: they are stored as raw records.
    absl::StatusOr<datasets::IngestResult> result = datasets::IngestIdx(
        paths[0], paths[1], {header_.class_names().begin(), header_.class_names().end()}, names[0],
        names[1], io, path);
    if (!result.ok()) return result.status();
    ingested = std::move(result->summary);
  } else {
    ingested = datasets::IngestImageFolderArchive(paths[0], names[0], io, path);
  }
  return ingested;
}

absl::StatusOr<Dataset> DatasetStore::Upload::Finish(absl::string_view sha256_hex) {
  RETURN_IF_ERROR(receiver_.Finish(sha256_hex));
  const absl::Time start = absl::Now();  // the ingest after the last byte
  absl::StatusOr<Dataset> ingested;
  if (ingesting_.joinable()) {
    ingesting_.join();  // the verdict above lets it store
    ingested = std::move(ingested_);
  } else {
    ingested = Ingest();
  }
  const std::string& path = record_path_;
  absl::Status checked = ingested.ok() ? CheckIngestedText(&*ingested) : ingested.status();
  if (!checked.ok()) {
    // A file renamed into place whose directory could not be synced, or
    // whose text is refused, must not stay.
    std::remove(path.c_str());
    return checked;
  }

  DatasetRow row;
  row.file = record_rel_;
  Dataset& d = row.dataset;
  d = *std::move(ingested);
  d.set_name(header_.name());
  d.set_description(header_.description());
  d.set_format(header_.format());
  d.set_upload_bytes(receiver_.total_bytes());
  d.set_sha256(receiver_.sha256());
  *d.mutable_create_time() =
      google::protobuf::util::TimeUtil::MillisecondsToTimestamp(absl::ToUnixMillis(absl::Now()));
  if (absl::Status st = store_->metadata_->InsertDataset(row); !st.ok()) {
    std::remove(path.c_str());
    return st;
  }
  common::LogInfo("dataset stored",
                  {{"dataset", d.name()},
                   {"examples", d.num_examples()},
                   {"classes", d.classes_size()},
                   {"upload_bytes", d.upload_bytes()},
                   {"ingest_seconds", absl::ToDoubleSeconds(absl::Now() - start)}});
  return d;
}

absl::StatusOr<Dataset> DatasetStore::Get(const std::string& name) {
  RETURN_IF_ERROR(common::ValidateName("dataset name", name));
  ASSIGN_OR_RETURN(DatasetRow row, metadata_->GetDataset(name));
  return std::move(row.dataset);
}

absl::StatusOr<kaizen::v1::ListDatasetsResponse> DatasetStore::List(int page_size,
                                                                    const std::string& page_token) {
  ASSIGN_OR_RETURN(const common::PageRequest page,
                   common::ResolvePageRequest(page_size, page_token));
  // One extra row tells whether another page exists.
  ASSIGN_OR_RETURN(std::vector<DatasetRow> rows,
                   metadata_->ListDatasets(page.after_key, page.limit + 1));
  kaizen::v1::ListDatasetsResponse out;
  ASSIGN_OR_RETURN(*out.mutable_next_page_token(),
                   common::FillPage(
                       rows, page.limit,
                       [&](DatasetRow& row) {
                         const size_t bytes = row.dataset.ByteSizeLong();
                         *out.add_datasets() = std::move(row.dataset);
                         return bytes;
                       },
                       [](const DatasetRow& row) { return row.dataset.name(); }));
  return out;
}

absl::Status DatasetStore::Delete(const std::string& name) {
  RETURN_IF_ERROR(common::ValidateName("dataset name", name));
  std::optional<absl::WriterMutexLock> hold;
  if (references_ != nullptr) hold.emplace(references_);
  if (in_use_) {
    ASSIGN_OR_RETURN(bool used, in_use_(name));
    if (used) {
      return absl::FailedPreconditionError(absl::StrCat(
          "dataset \"", name, "\" is used by a queued or running job; cancel it first"));
    }
  }
  ASSIGN_OR_RETURN(DatasetRow row, metadata_->DeleteDataset(name));
  // The row is gone first; a crash before this unlink leaves an orphan file
  // that the start-up sweep removes.
  std::error_code ec;
  std::filesystem::remove(options_.data_dir + "/" + row.file, ec);
  common::LogInfo("dataset deleted", {{"dataset", name}});
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const datasets::RecordFile>> DatasetStore::OpenRecordFile(
    const std::string& name) {
  ASSIGN_OR_RETURN(DatasetRow row, metadata_->GetDataset(name));
  RETURN_IF_ERROR(RequireImageDataset(row.dataset, "dataset"));
  if (absl::EndsWith(row.file, ".kds")) return nullptr;
  ASSIGN_OR_RETURN(std::unique_ptr<datasets::RecordFile> file,
                   datasets::RecordFile::Open(options_.data_dir + "/" + row.file));
  return std::shared_ptr<const datasets::RecordFile>(std::move(file));
}

absl::StatusOr<std::shared_ptr<const datasets::RecordFile>> DatasetStore::OpenTextRecordFile(
    const std::string& name) {
  ASSIGN_OR_RETURN(DatasetRow row, metadata_->GetDataset(name));
  if (!IsTextDataset(row.dataset)) {
    return absl::FailedPreconditionError(
        absl::StrCat("dataset \"", name, "\" holds images, not text"));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<datasets::RecordFile> file,
                   datasets::RecordFile::Open(options_.data_dir + "/" + row.file));
  return std::shared_ptr<const datasets::RecordFile>(std::move(file));
}

absl::StatusOr<datasets::DecodedDataset> DatasetStore::Load(const std::string& name) {
  ASSIGN_OR_RETURN(DatasetRow row, metadata_->GetDataset(name));
  RETURN_IF_ERROR(RequireImageDataset(row.dataset, "dataset"));
  const std::string path = options_.data_dir + "/" + row.file;
  // Data directories from before the record file keep their .kds files.
  if (absl::EndsWith(row.file, ".kds")) return datasets::ReadDatasetFile(path);
  ASSIGN_OR_RETURN(std::unique_ptr<datasets::RecordFile> file, datasets::RecordFile::Open(path));
  // The server stored these images after decoding them once under the
  // upload limits, and each record's pixel count is its index entry's: a
  // scan limit lowered since must not make a stored dataset unreadable.
  datasets::DecodeLimits limits;
  limits.max_jpeg_scans = std::numeric_limits<int>::max();
  // A job starts by loading its data: up to kLoadThreads cores decode (each
  // holds one decoded image besides the dataset).
  absl::StatusOr<datasets::DecodedDataset> loaded = file->ReadAll(
      limits, static_cast<uint64_t>(options_.max_loaded_bytes),
      static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 1u, kLoadThreads)));
  if (absl::IsResourceExhausted(loaded.status())) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "dataset '", name, "': ", loaded.status().message(),
        "; INCREMENTAL and tuning jobs and evaluations hold a dataset in memory, up to the "
        "server's --max_dataset_memory_mb (other jobs stream it)"));
  }
  return loaded;
}

}  // namespace kaizen::store
