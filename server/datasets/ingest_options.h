// The limits every dataset upload is ingested under (archive_ingestor.h,
// idx_ingestor.h), and what IDX ingestion hands back.
#pragma once

#include <cstdint>

#include "kaizen/v1/dataset_service.pb.h"
#include "server/datasets/dataset_file.h"
#include "server/datasets/decode_budget.h"

namespace kaizen::datasets {

struct IngestOptions {
  // Largest image accepted, width * height.
  int64_t max_image_pixels = 25'000'000;
  // Most images accepted in one dataset (for an image folder: most image
  // files, decoded or not).
  int64_t max_examples = 5'000'000;
  // Cap on listed failed files / duplicates / ignored files in the report
  // (all are counted; only this many are kept in memory and listed).
  int max_listed = 100;
  // Most scans in one progressive JPEG (see DecodeLimits).
  int max_jpeg_scans = 100;
  // The stored-resolution cap: an image-folder image whose shorter side is
  // longer is stored downscaled to it (area averaging) and encoded again, a
  // JPEG at `stored_jpeg_quality`, a PNG as PNG. 0 stores every image as
  // uploaded. IDX images are stored as sent.
  int32_t max_stored_shorter_side = 0;
  int stored_jpeg_quality = 90;
  // Text tables: most bytes in one row (one JSON line); longer rows are kept
  // out and listed.
  int64_t max_text_row_bytes = int64_t{1} << 20;
  // Decoded bytes one upload may produce: decompression layers (gzip, bzip2,
  // xz, zip members), IDX payloads and decoded pixels. The ratio is taken
  // to the size of the uploaded files.
  DecodeBudget::Options budget;
};

struct IngestResult {
  DecodedDataset data;
  // num_examples, classes (ordered by label), input_shape [C, H, W] and
  // report are filled; the caller fills name, sha256, sizes and times.
  kaizen::v1::Dataset summary;
};

}  // namespace kaizen::datasets
