// Renders API messages for people (aligned tables and readable blocks) and
// for programs (one proto3-JSON document).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "google/protobuf/message.h"
#include "google/protobuf/timestamp.pb.h"
#include "kaizen/v1/dataset_service.pb.h"
#include "kaizen/v1/finetune_service.pb.h"
#include "kaizen/v1/inference_service.pb.h"
#include "kaizen/v1/model_service.pb.h"

namespace kaizen::cli {

// `message` in the proto3 JSON mapping (camelCase names, every field
// printed), indented, ending with a newline.
absl::StatusOr<std::string> ToJson(const google::protobuf::Message& message);
// The same on a single line (for JSON Lines), ending with a newline.
absl::StatusOr<std::string> ToJsonLine(const google::protobuf::Message& message);

// Left-aligned columns two spaces apart, with a header row.
class Table {
 public:
  explicit Table(std::vector<std::string> header);
  void AddRow(std::vector<std::string> row);
  std::string Render() const;

 private:
  std::vector<std::vector<std::string>> rows_;
};

// "512 B", "12.3 KiB", "26.4 MiB", "1.2 GiB".
std::string FormatBytes(int64_t bytes);
// "1x28x28"; "-" when empty.
std::string FormatShape(const google::protobuf::RepeatedField<int64_t>& shape);
// Local time, "2024-05-01 12:03"; "-" when unset.
std::string FormatTime(const google::protobuf::Timestamp& time);
// "11.7M", "950K", "12".
std::string FormatCount(int64_t count);
// A fraction as a percentage: 0.849 -> "84.9%".
std::string FormatPercent(double fraction);
// "0:42", "12:05", "1:02:03".
std::string FormatClock(double seconds);
// "84.9%" for an accuracy (a fraction), "0.4312" for anything else.
std::string FormatMetric(const std::string& name, double value);

std::string DatasetFormatName(kaizen::v1::DatasetFormat format);
std::string ModelSourceName(kaizen::v1::ModelSource source);
// "fine_tune", as --strategy takes it.
std::string StrategyName(kaizen::v1::Strategy strategy);
// "queued", as --state takes it.
std::string JobStateName(kaizen::v1::JobState state);
// Whether the epoch was validated: a validated epoch never has both a zero
// loss and a zero accuracy.
bool EpochIsValidated(const kaizen::v1::EpochMetrics& metrics);
// Whether the job validates: by its history, else by its hyperparameters.
// Without validation, best_metric means nothing and is not shown.
bool JobHasValidation(const kaizen::v1::Job& job);

std::string DatasetTable(const kaizen::v1::ListDatasetsResponse& response);
// Everything about one dataset: classes with counts and the ingestion report.
std::string DatasetDetails(const kaizen::v1::Dataset& dataset);
std::string ModelTable(const kaizen::v1::ListModelsResponse& response);
std::string ModelDetails(const kaizen::v1::Model& model);
// The summary, the per-class table and the confusion matrix (rows: the
// dataset's classes, columns: the model's predictions).
std::string EvaluationDetails(const kaizen::v1::Evaluation& evaluation);
std::string JobTable(const kaizen::v1::ListJobsResponse& response);
// `jobs exports`: one row per export, newest first.
std::string ExportTable(const kaizen::v1::ListExportsResponse& response);
// Everything about one job: request, state, resolved hyperparameters, the
// per-epoch history, versions written and the error.
std::string JobDetails(const kaizen::v1::Job& job);
// "scratch of cnn-small on photos -> photos-cnn, 3 epochs, batch 32, ..."
std::string JobOneLine(const kaizen::v1::Job& job);
// One row per class of each prediction: FILE (from `names`, by input
// order), RANK, LABEL, INDEX, PROBABILITY and the VERSION that answered.
// With `texts`, the first column is TEXT: each text on one line (line
// breaks and tabs as spaces), cut to kPredictionTextWidth bytes at a
// character boundary with "..." after it.
inline constexpr size_t kPredictionTextWidth = 40;
std::string PredictionTable(const kaizen::v1::PredictResponse& response,
                            const std::vector<std::string>& names, bool texts = false);

}  // namespace kaizen::cli
