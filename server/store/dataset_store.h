// Datasets: receives uploads, decodes them once into the compact store file
// (server/datasets), and keeps the catalogue row and the file consistent. A
// failed upload leaves neither a row nor a file.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "kaizen/v1/dataset_service.pb.h"
#include "server/datasets/dataset_file.h"
#include "server/datasets/decode_budget.h"
#include "server/datasets/ingest_options.h"
#include "server/datasets/record_file.h"
#include "server/store/metadata_store.h"
#include "server/store/upload_receiver.h"

namespace kaizen::store {

// The text and label column names a text upload uses (its header's, or
// "text" and "label").
std::pair<std::string, std::string> TextFields(const kaizen::v1::UploadDatasetHeader& header);
// Whether a dataset holds text (one of the DATASET_FORMAT_TEXT_* formats).
bool IsTextDataset(const kaizen::v1::Dataset& dataset);
// FailedPrecondition naming `field` when the dataset holds text: the image
// training paths (a job's image datasets, EvaluateModel) read images only.
absl::Status RequireImageDataset(const kaizen::v1::Dataset& dataset, absl::string_view field);

class DatasetStore {
 public:
  struct Options {
    // Root data directory (holds datasets/ and tmp/).
    std::string data_dir;
    // Largest upload accepted, all parts together.
    int64_t max_upload_bytes = int64_t{4} << 30;
    // Largest single image (width * height).
    int64_t max_image_pixels = 25'000'000;
    // Most scans in one progressive JPEG.
    int max_jpeg_scans = 100;
    // Failed / ignored / duplicate files listed in a report (all are counted).
    int max_report_files = 100;
    // The stored-resolution cap for image folders whose upload header does
    // not set one (see IngestOptions); 0: stored as uploaded.
    int32_t max_stored_shorter_side = 0;
    // Quality of the JPEGs the cap re-encodes (1..100).
    int stored_jpeg_quality = 90;
    // Decoded bytes one upload may produce (decompression and pixels).
    datasets::DecodeBudget::Options decode_budget;
    // Most images in one dataset (for an image folder: image files, decoded
    // or not).
    int64_t max_examples = 5'000'000;
    // Text tables: most bytes in one row.
    int64_t max_text_row_bytes = int64_t{1} << 20;
    // Most decoded pixel bytes Load() holds a dataset in memory as.
    int64_t max_loaded_bytes = int64_t{16} << 30;
  };

  // One upload in progress. Destroying it without a successful Finish()
  // removes everything it wrote. An IDX upload decodes on a thread of its
  // own while its bytes arrive, and stores only once Finish() verified them.
  class Upload {
   public:
    ~Upload();
    // Stores the next bytes; an error once decoding what arrived so far
    // failed, so that the client stops sending a file already refused.
    absl::Status Append(absl::string_view bytes);
    absl::StatusOr<kaizen::v1::Dataset> Finish(absl::string_view sha256_hex);

   private:
    friend class DatasetStore;
    Upload(DatasetStore* store, kaizen::v1::UploadDatasetHeader header,
           UploadReceiver::Options receiver_options);
    // The ingest limits for this upload's format.
    datasets::IngestOptions IngestOptionsForUpload() const;
    // Starts decoding the IDX parts as they arrive (after receiver_.Start).
    // Without a thread to spare, Finish() decodes them instead.
    void StartIngestWhileReceiving();
    // Decodes the received parts into record_path_.
    absl::StatusOr<kaizen::v1::Dataset> Ingest();

    DatasetStore* store_;
    kaizen::v1::UploadDatasetHeader header_;
    UploadReceiver receiver_;
    // The record file, relative to the data directory and in full.
    std::string record_rel_;
    std::string record_path_;
    std::thread ingesting_;
    absl::StatusOr<kaizen::v1::Dataset> ingested_;  // set by ingesting_
    absl::Mutex refused_mu_;
    absl::Status refused_ ABSL_GUARDED_BY(refused_mu_);  // ingesting_'s error
  };

  DatasetStore(Options options, MetadataStore* metadata);

  // Validates the header (name, format, parts, size) and reserves the name.
  absl::StatusOr<std::unique_ptr<Upload>> BeginUpload(
      const kaizen::v1::UploadDatasetHeader& header);

  absl::StatusOr<kaizen::v1::Dataset> Get(const std::string& name);
  absl::StatusOr<kaizen::v1::ListDatasetsResponse> List(int page_size,
                                                        const std::string& page_token);
  absl::Status Delete(const std::string& name);
  // Reads the decoded images and labels (for training): from the dataset's
  // record file (.krf, datasets/record_file.h), or from the .kds file of a
  // data directory written before record files.
  absl::StatusOr<datasets::DecodedDataset> Load(const std::string& name);
  // The dataset's record file, memory-mapped (for jobs that stream it), or
  // nullptr for a .kds data directory, which only Load reads.
  absl::StatusOr<std::shared_ptr<const datasets::RecordFile>> OpenRecordFile(
      const std::string& name);
  // A text dataset's record file (FailedPrecondition for an image dataset).
  absl::StatusOr<std::shared_ptr<const datasets::RecordFile>> OpenTextRecordFile(
      const std::string& name);

  // Answers whether a queued or running job uses a name; Delete refuses
  // (FAILED_PRECONDITION) while it does.
  using InUseCheck = std::function<absl::StatusOr<bool>(const std::string& name)>;
  // Delete holds `references` (when given) exclusively from the check to the
  // removal; see ModelStore::set_in_use_check.
  void set_in_use_check(InUseCheck check, absl::Mutex* references = nullptr) {
    in_use_ = std::move(check);
    references_ = references;
  }

  int64_t max_upload_bytes() const { return options_.max_upload_bytes; }

 private:
  void Release(const std::string& name);

  Options options_;
  MetadataStore* metadata_;
  InUseCheck in_use_;
  absl::Mutex* references_ = nullptr;
  absl::Mutex mu_;
  // Names with an upload in flight, so two concurrent uploads of one name
  // cannot both decode for minutes before one of them loses.
  absl::flat_hash_set<std::string> uploading_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kaizen::store
