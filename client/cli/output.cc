#include "client/cli/output.h"

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "google/protobuf/util/json_util.h"

namespace kaizen::cli {
namespace {

// Class names shown inline in a model's details before "...".
constexpr int kMaxInlineClassNames = 10;

// "  key:" padded so that the values line up.
void Field(std::string* out, absl::string_view key, absl::string_view value) {
  absl::StrAppendFormat(out, "  %-15s %s\n", absl::StrCat(key, ":"), value);
}

std::string Indent(const std::string& text, int spaces) {
  std::string out;
  const std::string pad(spaces, ' ');
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!line.empty()) absl::StrAppend(&out, pad, line, "\n");
  }
  return out;
}

std::string ReportDetails(const kaizen::v1::DatasetReport& report) {
  std::string out;
  if (report.failed_files_size() > 0) {
    absl::StrAppend(&out, report.has_text() ? "rows kept out (" : "failed files (",
                    report.failed_files_size(),
                    report.has_text() && report.text().rejected_rows() > report.failed_files_size()
                        ? absl::StrCat(" of ", report.text().rejected_rows(), " listed")
                        : "",
                    report.has_text() ? "):\n" : ", left out):\n");
    for (const auto& failed : report.failed_files()) {
      absl::StrAppend(&out, "  ", failed.path(), ": ", failed.reason(), "\n");
    }
  }
  const int64_t duplicates = std::max<int64_t>(report.duplicate_count(), report.duplicates_size());
  if (duplicates > 0) {
    absl::StrAppend(&out, "duplicates (", duplicates);
    if (duplicates > report.duplicates_size()) {
      absl::StrAppend(&out, ", ", report.duplicates_size(), " listed");
    }
    absl::StrAppend(&out, ", kept):\n");
    for (const auto& duplicate : report.duplicates()) {
      absl::StrAppend(&out, "  ", duplicate.path(), " is a copy of ", duplicate.duplicate_of(),
                      "\n");
    }
  }
  if (report.ignored_files_size() > 0) {
    absl::StrAppend(&out, "ignored files (", report.ignored_files_size(), "):\n");
    for (const std::string& ignored : report.ignored_files()) {
      absl::StrAppend(&out, "  ", ignored, "\n");
    }
  }
  if (report.has_text()) {
    const kaizen::v1::TextReport& t = report.text();
    absl::StrAppend(&out, "text: column '", t.text_field(), "', label '", t.label_field(), "'; ",
                    t.rows_read(), " rows read, ", t.rejected_rows(), " kept out, ", t.empty_rows(),
                    " empty, ", t.blank_lines(), " blank lines\n");
    absl::StrAppend(&out, "text length (code points): min ", t.length_min(), ", median ",
                    t.length_p50(), ", p90 ", t.length_p90(), ", p99 ", t.length_p99(), ", max ",
                    t.length_max(), "; ", FormatBytes(t.text_bytes()), " of text\n");
  }
  if (report.image_sizes_size() > 0) {
    absl::StrAppend(&out, "image sizes: ", absl::StrJoin(report.image_sizes(), ", "), "\n");
  }
  if (report.max_stored_shorter_side() > 0) {
    absl::StrAppend(&out, "stored resolution: shorter side at most ",
                    report.max_stored_shorter_side(), " pixels (", report.downscaled_images(),
                    " images downscaled)\n");
  }
  if (report.imbalance_ratio() > 0) {
    absl::StrAppendFormat(&out, "imbalance ratio: %.2f\n", report.imbalance_ratio());
  }
  if (report.warnings_size() > 0) {
    absl::StrAppend(&out, "warnings:\n");
    for (const std::string& warning : report.warnings()) {
      absl::StrAppend(&out, "  ", warning, "\n");
    }
  }
  return out;
}

std::string JoinFloats(const google::protobuf::RepeatedField<float>& values) {
  return absl::StrJoin(values, ",",
                       [](std::string* out, float v) { absl::StrAppendFormat(out, "%g", v); });
}

std::string HeadKindName(kaizen::v1::HeadKind kind) {
  switch (kind) {
    case kaizen::v1::HEAD_KIND_LINEAR:
      return "linear";
    case kaizen::v1::HEAD_KIND_MLP:
      return "mlp";
    default:
      return "unknown";
  }
}

std::string WithThousands(int64_t n) {
  std::string digits = absl::StrCat(n < 0 ? -n : n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return n < 0 ? absl::StrCat("-", out) : out;
}

std::string Number(double v) { return absl::StrFormat("%g", v); }

std::string FormatLr(double lr) { return absl::StrFormat("%.1e", lr); }

std::string OptimizerName(kaizen::v1::OptimizerKind kind) {
  switch (kind) {
    case kaizen::v1::OPTIMIZER_SGD:
      return "sgd";
    case kaizen::v1::OPTIMIZER_ADAM:
      return "adam";
    case kaizen::v1::OPTIMIZER_ADAMW:
      return "adamw";
    default:
      return "default optimizer";
  }
}

std::string ScheduleName(kaizen::v1::ScheduleKind kind) {
  switch (kind) {
    case kaizen::v1::SCHEDULE_CONSTANT:
      return "constant";
    case kaizen::v1::SCHEDULE_STEP:
      return "step";
    case kaizen::v1::SCHEDULE_COSINE:
      return "cosine";
    default:
      return "default schedule";
  }
}

std::string MixedPrecisionName(kaizen::v1::MixedPrecision mode) {
  switch (mode) {
    case kaizen::v1::MIXED_PRECISION_OFF:
      return "off";
    case kaizen::v1::MIXED_PRECISION_BF16:
      return "bf16";
    case kaizen::v1::MIXED_PRECISION_FP16:
      return "fp16";
    default:
      return "auto";
  }
}

// The hyperparameters as "key: value" lines, one per concern; zero values
// (which mean "the strategy's default" in a request) are left out.
std::vector<std::pair<std::string, std::string>> HyperparameterLines(
    const kaizen::v1::Hyperparameters& h) {
  std::vector<std::pair<std::string, std::string>> lines;
  std::vector<std::string> parts;
  if (h.epochs() > 0) parts.push_back(absl::StrCat(h.epochs(), " epochs"));
  if (h.batch_size() > 0) parts.push_back(absl::StrCat("batch ", h.batch_size()));
  if (h.seed() != 0) parts.push_back(absl::StrCat("seed ", h.seed()));
  if (h.mixed_precision() != kaizen::v1::MIXED_PRECISION_UNSPECIFIED) {
    parts.push_back(absl::StrCat("precision ", MixedPrecisionName(h.mixed_precision())));
  }
  if (h.drop_last_fraction() > 0) {
    parts.push_back(absl::StrCat("drop last < ", Number(h.drop_last_fraction()), " of a batch"));
  }
  if (!parts.empty()) lines.emplace_back("training", absl::StrJoin(parts, ", "));

  parts.clear();
  const kaizen::v1::OptimizerOptions& o = h.optimizer();
  if (o.kind() != kaizen::v1::OPTIMIZER_UNSPECIFIED) {
    parts.push_back(OptimizerName(o.kind()));
  }
  if (h.learning_rate() > 0) {
    std::string lr = absl::StrCat("lr ", FormatLr(h.learning_rate()));
    if (h.backbone_lr_multiplier() > 0) {
      absl::StrAppend(&lr, " (backbone x", Number(h.backbone_lr_multiplier()), ")");
    }
    parts.push_back(lr);
  }
  if (o.momentum() > 0) {
    parts.push_back(
        absl::StrCat("momentum ", Number(o.momentum()), o.nesterov() ? " (nesterov)" : ""));
  } else if (o.nesterov()) {
    parts.push_back("nesterov");
  }
  if (o.weight_decay() > 0) {
    parts.push_back(absl::StrCat("weight decay ", Number(o.weight_decay())));
  }
  if (o.beta1() > 0 || o.beta2() > 0) {
    parts.push_back(absl::StrCat("betas ", Number(o.beta1()), ", ", Number(o.beta2())));
  }
  if (!parts.empty()) {
    lines.emplace_back("optimizer", absl::StrJoin(parts, ", "));
  }

  parts.clear();
  const kaizen::v1::ScheduleOptions& sc = h.schedule();
  if (sc.kind() != kaizen::v1::SCHEDULE_UNSPECIFIED) {
    parts.push_back(ScheduleName(sc.kind()));
  }
  if (sc.kind() == kaizen::v1::SCHEDULE_STEP && sc.step_epochs() > 0) {
    parts.push_back(
        absl::StrCat("x", Number(sc.step_gamma()), " every ", sc.step_epochs(), " epochs"));
  }
  if (sc.min_lr_ratio() > 0) {
    parts.push_back(absl::StrCat("down to x", Number(sc.min_lr_ratio())));
  }
  if (sc.warmup_epochs() > 0) {
    parts.push_back(absl::StrCat("warm-up ", Number(sc.warmup_epochs()), " epochs"));
  }
  if (!parts.empty()) {
    lines.emplace_back("schedule", absl::StrJoin(parts, ", "));
  }

  parts.clear();
  if (h.head().kind() != kaizen::v1::HEAD_KIND_UNSPECIFIED) {
    std::string head = HeadKindName(h.head().kind());
    std::vector<std::string> mlp;
    if (h.head().hidden_units() > 0) {
      mlp.push_back(absl::StrCat(h.head().hidden_units(), " hidden"));
    }
    if (h.head().dropout() > 0) {
      mlp.push_back(absl::StrCat("dropout ", Number(h.head().dropout())));
    }
    if (!mlp.empty()) absl::StrAppend(&head, " (", absl::StrJoin(mlp, ", "), ")");
    parts.push_back(head);
  }
  if (h.head_warmup_epochs() > 0) {
    parts.push_back(absl::StrCat("head alone for ", h.head_warmup_epochs(),
                                 h.head_warmup_epochs() == 1 ? " epoch" : " epochs"));
  }
  if (h.trainable_blocks() > 0) {
    parts.push_back(absl::StrCat("top ", h.trainable_blocks(), " blocks train"));
  }
  if (!parts.empty()) lines.emplace_back("head", absl::StrJoin(parts, ", "));

  parts.clear();
  if (h.label_smoothing() > 0) {
    parts.push_back(absl::StrCat("label smoothing ", Number(h.label_smoothing())));
  }
  if (h.gradient_clip_norm() > 0) {
    parts.push_back(absl::StrCat("clip norm ", Number(h.gradient_clip_norm())));
  }
  if (!parts.empty()) {
    lines.emplace_back("regularisation", absl::StrJoin(parts, ", "));
  }

  if (h.has_augmentation()) {
    const kaizen::v1::Augmentation& a = h.augmentation();
    if (!a.enabled()) {
      lines.emplace_back("augmentation", "off");
    } else {
      parts.clear();
      if (a.random_crop_padding() > 0) {
        parts.push_back(absl::StrCat("crop (pad ", a.random_crop_padding(), ")"));
      }
      if (a.horizontal_flip()) parts.push_back("flip");
      if (a.rotation_degrees() > 0) {
        parts.push_back(absl::StrCat("rotate ", Number(a.rotation_degrees()), " deg"));
      }
      if (a.brightness() > 0) {
        parts.push_back(absl::StrCat("brightness ", Number(a.brightness())));
      }
      if (a.contrast() > 0) {
        parts.push_back(absl::StrCat("contrast ", Number(a.contrast())));
      }
      lines.emplace_back("augmentation", parts.empty()
                                             ? std::string("on")
                                             : absl::StrCat("on: ", absl::StrJoin(parts, ", ")));
    }
  }

  switch (h.validation().source_case()) {
    case kaizen::v1::ValidationOptions::kSplit:
      lines.emplace_back("validation",
                         h.validation().split() > 0
                             ? absl::StrCat(FormatPercent(h.validation().split()), " held out")
                             : std::string("none"));
      break;
    case kaizen::v1::ValidationOptions::kDataset:
      lines.emplace_back("validation", absl::StrCat("dataset ", h.validation().dataset()));
      break;
    default:
      break;
  }

  if (h.has_early_stopping()) {
    const kaizen::v1::EarlyStopping& e = h.early_stopping();
    if (!e.enabled()) {
      lines.emplace_back("early stopping", "off");
    } else {
      std::string text = absl::StrCat("after ", e.patience(), " epochs without improvement");
      if (!e.metric().empty()) absl::StrAppend(&text, " of ", e.metric());
      if (e.min_delta() > 0) {
        absl::StrAppend(&text, " (min delta ", Number(e.min_delta()), ")");
      }
      lines.emplace_back("early stopping", text);
    }
  }
  return lines;
}

}  // namespace

absl::StatusOr<std::string> ToJson(const google::protobuf::Message& message) {
  // An empty response (e.g. from a delete) prints as "{}" on one line.
  if (message.GetDescriptor()->field_count() == 0) return std::string("{}\n");
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.always_print_primitive_fields = true;
  std::string json;
  const auto status = google::protobuf::util::MessageToJsonString(message, &json, options);
  if (!status.ok()) {
    return absl::InternalError(
        absl::StrCat("cannot print the response as JSON: ", status.ToString()));
  }
  if (json.empty() || json.back() != '\n') json += '\n';
  return json;
}

Table::Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }

void Table::AddRow(std::vector<std::string> row) { rows_.push_back(std::move(row)); }

absl::StatusOr<std::string> ToJsonLine(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  std::string json;
  const auto status = google::protobuf::util::MessageToJsonString(message, &json, options);
  if (!status.ok()) {
    return absl::InternalError(
        absl::StrCat("cannot print the response as JSON: ", status.ToString()));
  }
  json += '\n';
  return json;
}

namespace {

// Columns a cell takes on a terminal: one per UTF-8 character (bytes that
// do not start one are not counted), so class names such as "café" or
// "Ärmel" line up.
size_t DisplayWidth(const std::string& text) {
  size_t width = 0;
  for (const char c : text) width += (static_cast<unsigned char>(c) & 0xc0) != 0x80;
  return width;
}

}  // namespace

std::string Table::Render() const {
  std::vector<size_t> widths;
  for (const auto& row : rows_) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (size_t c = 0; c < row.size(); ++c) {
      widths[c] = std::max(widths[c], DisplayWidth(row[c]));
    }
  }
  std::string out;
  for (const auto& row : rows_) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) {
      if (c + 1 == row.size()) {
        line += row[c];  // no trailing blanks
      } else {
        absl::StrAppend(&line, row[c], std::string(widths[c] - DisplayWidth(row[c]) + 2, ' '));
      }
    }
    absl::StrAppend(&out, line, "\n");
  }
  return out;
}

std::string FormatBytes(int64_t bytes) {
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  double value = bytes / 1024.0;
  int unit = 0;
  while (value >= 1024.0 && unit < 3) {
    value /= 1024.0;
    ++unit;
  }
  return absl::StrFormat("%.1f %s", value, units[unit]);
}

std::string FormatShape(const google::protobuf::RepeatedField<int64_t>& shape) {
  if (shape.empty()) return "-";
  return absl::StrJoin(shape, "x");
}

std::string FormatTime(const google::protobuf::Timestamp& time) {
  if (time.seconds() == 0 && time.nanos() == 0) return "-";
  const absl::Time t = absl::FromUnixSeconds(time.seconds()) + absl::Nanoseconds(time.nanos());
  return absl::FormatTime("%Y-%m-%d %H:%M", t, absl::LocalTimeZone());
}

std::string FormatCount(int64_t count) {
  if (count >= 1000000000) return absl::StrFormat("%.1fG", count / 1e9);
  if (count >= 1000000) return absl::StrFormat("%.1fM", count / 1e6);
  if (count >= 10000) return absl::StrFormat("%.0fK", count / 1e3);
  return absl::StrCat(count);
}

std::string FormatPercent(double fraction) { return absl::StrFormat("%.1f%%", fraction * 100.0); }

std::string FormatClock(double seconds) {
  const int64_t total = seconds > 0 ? static_cast<int64_t>(seconds + 0.5) : 0;
  const int64_t h = total / 3600, m = total / 60 % 60, s = total % 60;
  if (h > 0) return absl::StrFormat("%d:%02d:%02d", h, m, s);
  return absl::StrFormat("%d:%02d", m, s);
}

std::string FormatMetric(const std::string& name, double value) {
  if (absl::StrContains(name, "accuracy")) return FormatPercent(value);
  return absl::StrFormat("%.4f", value);
}

std::string DatasetFormatName(kaizen::v1::DatasetFormat format) {
  switch (format) {
    case kaizen::v1::DATASET_FORMAT_IMAGE_FOLDER:
      return "image-folder";
    case kaizen::v1::DATASET_FORMAT_IDX:
      return "idx";
    case kaizen::v1::DATASET_FORMAT_TEXT_CSV:
      return "text-csv";
    case kaizen::v1::DATASET_FORMAT_TEXT_TSV:
      return "text-tsv";
    case kaizen::v1::DATASET_FORMAT_TEXT_JSONL:
      return "text-jsonl";
    default:
      return "unspecified";
  }
}

std::string ModelSourceName(kaizen::v1::ModelSource source) {
  switch (source) {
    case kaizen::v1::MODEL_SOURCE_UPLOADED:
      return "uploaded";
    case kaizen::v1::MODEL_SOURCE_BUILTIN:
      return "builtin";
    case kaizen::v1::MODEL_SOURCE_FINE_TUNED:
      return "fine-tuned";
    default:
      return "unspecified";
  }
}

std::string StrategyName(kaizen::v1::Strategy strategy) {
  switch (strategy) {
    case kaizen::v1::STRATEGY_FEATURE_EXTRACTION:
      return "feature_extraction";
    case kaizen::v1::STRATEGY_FINE_TUNE:
      return "fine_tune";
    case kaizen::v1::STRATEGY_FULL:
      return "full";
    case kaizen::v1::STRATEGY_SCRATCH:
      return "scratch";
    case kaizen::v1::STRATEGY_INCREMENTAL:
      return "incremental";
    case kaizen::v1::STRATEGY_DISTILL:
      return "distill";
    case kaizen::v1::STRATEGY_MASKED_LM:
      return "masked_lm";
    default:
      return "unspecified";
  }
}

std::string JobStateName(kaizen::v1::JobState state) {
  switch (state) {
    case kaizen::v1::JOB_STATE_QUEUED:
      return "queued";
    case kaizen::v1::JOB_STATE_RUNNING:
      return "running";
    case kaizen::v1::JOB_STATE_SUCCEEDED:
      return "succeeded";
    case kaizen::v1::JOB_STATE_FAILED:
      return "failed";
    case kaizen::v1::JOB_STATE_CANCELLED:
      return "cancelled";
    case kaizen::v1::JOB_STATE_PAUSED:
      return "paused";
    default:
      return "unspecified";
  }
}

bool EpochIsValidated(const kaizen::v1::EpochMetrics& m) {
  return m.val_loss() != 0 || m.val_accuracy() != 0;
}

bool JobHasValidation(const kaizen::v1::Job& job) {
  for (const kaizen::v1::EpochMetrics& m : job.history()) {
    if (EpochIsValidated(m)) return true;
  }
  if (job.history_size() > 0) return false;
  const kaizen::v1::ValidationOptions& v = job.has_resolved_hyperparameters()
                                               ? job.resolved_hyperparameters().validation()
                                               : job.request().hyperparameters().validation();
  return v.source_case() == kaizen::v1::ValidationOptions::kDataset ? !v.dataset().empty()
                                                                    : v.split() > 0;
}

std::string DatasetTable(const kaizen::v1::ListDatasetsResponse& response) {
  Table table({"NAME", "FORMAT", "EXAMPLES", "CLASSES", "SHAPE", "SIZE", "CREATED"});
  for (const kaizen::v1::Dataset& d : response.datasets()) {
    table.AddRow({d.name(), DatasetFormatName(d.format()), absl::StrCat(d.num_examples()),
                  absl::StrCat(d.classes_size()), FormatShape(d.input_shape()),
                  FormatBytes(d.upload_bytes()), FormatTime(d.create_time())});
  }
  return table.Render();
}

std::string DatasetDetails(const kaizen::v1::Dataset& d) {
  std::string out = absl::StrCat("Dataset ", d.name(), "\n");
  if (!d.description().empty()) Field(&out, "description", d.description());
  Field(&out, "format", DatasetFormatName(d.format()));
  Field(&out, "examples", absl::StrCat(d.num_examples()));
  if (d.input_shape_size() > 0) Field(&out, "input shape", FormatShape(d.input_shape()));
  Field(&out, "uploaded", absl::StrCat(FormatBytes(d.upload_bytes()), ", sha256 ", d.sha256()));
  Field(&out, "stored", FormatBytes(d.stored_bytes()));
  Field(&out, "created", FormatTime(d.create_time()));
  absl::StrAppend(&out, "  classes (", d.classes_size(), "):\n");
  Table classes({"LABEL", "NAME", "COUNT"});
  for (const kaizen::v1::ClassCount& c : d.classes()) {
    classes.AddRow({absl::StrCat(c.label()), c.class_name(), absl::StrCat(c.count())});
  }
  absl::StrAppend(&out, Indent(classes.Render(), 4));
  const std::string report = ReportDetails(d.report());
  if (report.empty()) {
    absl::StrAppend(&out, "  report: clean\n");
  } else {
    absl::StrAppend(&out, "  report:\n", Indent(report, 4));
  }
  return out;
}

std::string ModelTable(const kaizen::v1::ListModelsResponse& response) {
  Table table({"NAME", "VERSION", "SOURCE", "ARCH", "INPUT", "CLASSES", "PARAMS", "CREATED"});
  for (const kaizen::v1::Model& m : response.models()) {
    const int64_t classes =
        m.head().out_features() > 0 ? m.head().out_features() : m.class_names_size();
    table.AddRow({m.name(), absl::StrCat(m.version()), ModelSourceName(m.source()),
                  m.architecture().empty() ? "-" : m.architecture(), FormatShape(m.input_shape()),
                  absl::StrCat(classes), FormatCount(m.parameter_count()),
                  FormatTime(m.create_time())});
  }
  return table.Render();
}

std::string ModelDetails(const kaizen::v1::Model& m) {
  std::string out = absl::StrCat("Model ", m.name(), " (version ", m.version(), ")\n");
  if (!m.description().empty()) Field(&out, "description", m.description());
  Field(&out, "source", ModelSourceName(m.source()));
  Field(&out, "architecture", m.architecture().empty() ? "-" : m.architecture());
  Field(&out, "input shape", FormatShape(m.input_shape()));
  if (m.has_normalization()) {
    Field(&out, "normalization",
          absl::StrCat("mean ", JoinFloats(m.normalization().mean()), "  std ",
                       JoinFloats(m.normalization().std())));
  }
  if (m.has_head()) {
    Field(
        &out, "head",
        absl::StrFormat("%s (%s, %d -> %d)", m.head().module_path(), HeadKindName(m.head().kind()),
                        m.head().in_features(), m.head().out_features()));
  }
  Field(&out, "parameters", WithThousands(m.parameter_count()));
  Field(&out, "size", absl::StrCat(FormatBytes(m.size_bytes()), ", sha256 ", m.sha256()));
  if (m.versions_size() > 0) {
    Field(&out, "versions",
          absl::StrCat(absl::StrJoin(m.versions(), ", "), " (latest ", m.latest_version(),
                       ", best ", m.best_version(), ")"));
  }
  if (m.class_names_size() > 0) {
    std::vector<std::string> shown(
        m.class_names().begin(),
        m.class_names().begin() + std::min(m.class_names_size(), kMaxInlineClassNames));
    if (m.class_names_size() > kMaxInlineClassNames) shown.push_back("...");
    Field(&out, "classes", absl::StrCat(m.class_names_size(), ": ", absl::StrJoin(shown, ", ")));
  }
  if (!m.job_id().empty()) Field(&out, "job", m.job_id());
  if (!m.metrics().empty()) {
    std::vector<std::pair<std::string, double>> metrics(m.metrics().begin(), m.metrics().end());
    std::sort(metrics.begin(), metrics.end());
    Field(&out, "metrics", absl::StrJoin(metrics, ", ", [](std::string* s, const auto& kv) {
      absl::StrAppendFormat(s, "%s=%.4f", kv.first, kv.second);
    }));
  }
  if (m.has_test_evaluation()) {
    const kaizen::v1::Evaluation& e = m.test_evaluation();
    Field(&out, "test",
          absl::StrFormat("%s accuracy on %s (%d images; top-%d %s, mean loss %.4f)",
                          FormatPercent(e.accuracy()), e.dataset(), e.examples(), e.top_k(),
                          FormatPercent(e.top_k_accuracy()), e.mean_loss()));
  }
  Field(&out, "created", FormatTime(m.create_time()));
  return out;
}

std::string EvaluationDetails(const kaizen::v1::Evaluation& e) {
  std::string out = absl::StrCat("Model ", e.model(), " (version ", e.version(), ") on dataset ",
                                 e.dataset(), "\n");
  Field(&out, "images",
        absl::StrFormat("%s in %.1f s (%.0f images/s)", FormatCount(e.examples()), e.seconds(),
                        e.examples_per_second()));
  Field(&out, "accuracy", FormatPercent(e.accuracy()));
  Field(&out, absl::StrCat("top-", e.top_k()), FormatPercent(e.top_k_accuracy()));
  Field(&out, "mean loss", absl::StrFormat("%.4f", e.mean_loss()));
  Field(&out, "classes", e.class_mapping());
  out += "\n";
  Table classes({"CLASS", "IMAGES", "PRECISION", "RECALL", "F1"});
  for (const kaizen::v1::ClassEvaluation& c : e.classes()) {
    classes.AddRow({c.name(), FormatCount(c.support()), FormatPercent(c.precision()),
                    FormatPercent(c.recall()), absl::StrFormat("%.3f", c.f1())});
  }
  out += classes.Render();
  out += "\nConfusion matrix (rows: true class, columns: predicted class)\n";
  std::vector<std::string> header = {"TRUE \\ PREDICTED"};
  header.insert(header.end(), e.predicted_classes().begin(), e.predicted_classes().end());
  Table confusion(std::move(header));
  const int cols = e.predicted_classes_size();
  for (int i = 0; i < e.classes_size(); ++i) {
    std::vector<std::string> row = {e.classes(i).name()};
    for (int j = 0; j < cols; ++j) {
      const int index = i * cols + j;
      row.push_back(index < e.confusion_size() ? absl::StrCat(e.confusion(index)) : "?");
    }
    confusion.AddRow(std::move(row));
  }
  out += confusion.Render();
  return out;
}

namespace {

// The job's epochs so far over its total, "3/30"; "-" before it starts.
std::string EpochProgress(const kaizen::v1::Job& job) {
  if (job.total_epochs() <= 0) return job.epoch() > 0 ? absl::StrCat(job.epoch()) : "-";
  return absl::StrCat(job.epoch(), "/", job.total_epochs());
}

// Seconds between two timestamps; negative when either is unset.
double SecondsBetween(const google::protobuf::Timestamp& from,
                      const google::protobuf::Timestamp& to) {
  if (from.seconds() == 0 || to.seconds() == 0) return -1;
  return (to.seconds() - from.seconds()) + (to.nanos() - from.nanos()) / 1e9;
}

const kaizen::v1::Hyperparameters& EffectiveHyperparameters(const kaizen::v1::Job& job) {
  return job.has_resolved_hyperparameters() ? job.resolved_hyperparameters()
                                            : job.request().hyperparameters();
}

}  // namespace

std::string JobTable(const kaizen::v1::ListJobsResponse& response) {
  Table table({"ID", "STATE", "STRATEGY", "BASE", "DATASET", "OUTPUT", "EPOCH", "BEST", "CREATED"});
  for (const kaizen::v1::Job& j : response.jobs()) {
    table.AddRow(
        {j.id(), JobStateName(j.state()), StrategyName(j.request().strategy()),
         j.request().base_model(), j.request().dataset(), j.request().output_model(),
         EpochProgress(j),
         j.best_version() > 0 && JobHasValidation(j) ? FormatPercent(j.best_metric()) : "-",
         FormatTime(j.create_time())});
  }
  return table.Render();
}

std::string ExportTable(const kaizen::v1::ListExportsResponse& response) {
  Table table({"DIRECTORY", "JOB", "CREATED", "FREES"});
  for (const kaizen::v1::Export& e : response.exports()) {
    // An incomplete size is at least what was counted.
    table.AddRow({e.directory(), e.job_id(), FormatTime(e.create_time()),
                  absl::StrCat(e.size_incomplete() ? ">= " : "", FormatBytes(e.size_bytes()))});
  }
  return table.Render();
}

std::string JobOneLine(const kaizen::v1::Job& job) {
  const kaizen::v1::StartFineTuneRequest& r = job.request();
  std::string out = absl::StrCat(StrategyName(r.strategy()), " of ", r.base_model(), " on ",
                                 r.dataset(), " -> ", r.output_model());
  const kaizen::v1::Hyperparameters& h = EffectiveHyperparameters(job);
  std::vector<std::string> parts;
  const int32_t epochs = job.total_epochs() > 0 ? job.total_epochs() : h.epochs();
  if (epochs > 0) parts.push_back(absl::StrCat(epochs, " epochs"));
  if (h.batch_size() > 0) parts.push_back(absl::StrCat("batch ", h.batch_size()));
  if (h.learning_rate() > 0) {
    parts.push_back(absl::StrCat("lr ", FormatLr(h.learning_rate())));
  }
  if (r.priority() != 0) parts.push_back(absl::StrCat("priority ", r.priority()));
  if (!parts.empty()) absl::StrAppend(&out, ": ", absl::StrJoin(parts, ", "));
  return out;
}

namespace {

// Job.tuning: how trials were scored, every trial, and why the winner won.
void AppendTuning(const kaizen::v1::Job& j, std::string* out) {
  const kaizen::v1::TuningResult& t = j.tuning();
  if (j.request().tuning().max_trials() == 0) return;
  const bool ended =
      j.state() == kaizen::v1::JOB_STATE_CANCELLED || j.state() == kaizen::v1::JOB_STATE_FAILED;
  absl::StrAppend(out, "  tuning", t.done() ? "" : (ended ? " (did not finish)" : " (in progress)"),
                  ":\n");
  if (!t.scoring().empty()) absl::StrAppend(out, "    scored on:  ", t.scoring(), "\n");
  if (t.searched_size() > 0) {
    absl::StrAppend(out, "    searched:   ", absl::StrJoin(t.searched(), ", "), "\n");
  }
  auto searched = [&t](absl::string_view name) {
    return std::find(t.searched().begin(), t.searched().end(), name) != t.searched().end();
  };
  if (t.trials_size() > 0) {
    Table trials({"TRIAL", "ROUND", "LR", "BACKBONE X", "BLOCKS", "EPOCHS", "VAL ACC", "VAL LOSS",
                  "BEST EPOCH", "TIME", "OUTCOME"});
    for (const kaizen::v1::TuningTrial& x : t.trials()) {
      const bool failed = absl::StartsWith(x.outcome(), "failed");
      trials.AddRow(
          {absl::StrCat(x.trial()), absl::StrCat(x.round()),
           searched("learning_rate") ? FormatLr(x.learning_rate()) : "-",
           searched("backbone_lr_multiplier") ? absl::StrFormat("%.3g", x.backbone_lr_multiplier())
                                              : "-",
           searched("trainable_blocks") ? absl::StrCat(x.trainable_blocks()) : "-",
           absl::StrCat(x.epochs()), failed ? "-" : FormatPercent(x.val_accuracy()),
           failed ? "-" : absl::StrFormat("%.4f", x.val_loss()),
           failed ? "-" : absl::StrCat(x.best_epoch()), absl::StrFormat("%.1fs", x.seconds()),
           x.outcome().empty() ? "scored" : x.outcome()});
    }
    absl::StrAppend(out, Indent(trials.Render(), 4));
  }
  if (!t.reason().empty()) absl::StrAppend(out, "    result:     ", t.reason(), "\n");
}

// Job.distillation: teacher and student side by side.
void AppendDistillation(const kaizen::v1::Job& j, std::string* out) {
  if (!j.has_distillation() || j.distillation().teacher_model().empty()) return;
  const kaizen::v1::DistillationResult& d = j.distillation();
  absl::StrAppend(out, "  distillation:\n");
  Table table({"MODEL", "PARAMETERS", "VAL ACC", "TEST ACC", "LATENCY"});
  auto accuracy = [](double v, int64_t n) { return n > 0 ? FormatPercent(v) : std::string("-"); };
  auto latency = [](double ms) { return ms > 0 ? absl::StrFormat("%.2f ms", ms) : "-"; };
  table.AddRow({absl::StrCat("teacher ", d.teacher_model(), ":", d.teacher_version()),
                absl::StrCat(d.teacher_parameter_count()),
                accuracy(d.teacher_val_accuracy(), d.validation_examples()),
                accuracy(d.teacher_test_accuracy(), d.test_examples()),
                latency(d.teacher_latency_ms())});
  table.AddRow({absl::StrCat("student ", j.request().output_model(),
                             j.latest_version() > 0 ? absl::StrCat(":", j.latest_version()) : ""),
                absl::StrCat(d.student_parameter_count()),
                accuracy(d.student_val_accuracy(), d.validation_examples()),
                accuracy(d.student_test_accuracy(), d.test_examples()),
                latency(d.student_latency_ms())});
  absl::StrAppend(out, Indent(table.Render(), 4));
}

// Job.incremental: the base and, once measured, before and after.
void AppendIncremental(const kaizen::v1::Job& j, std::string* out) {
  if (!j.has_incremental() || j.incremental().base_model().empty()) return;
  const kaizen::v1::IncrementalResult& r = j.incremental();
  absl::StrAppend(out, "  incremental:\n");
  absl::StrAppend(out, "    base:          ", r.base_model(), ":", r.base_version(), " (",
                  r.old_classes_size(), " classes) + ", r.new_classes_size(), " new classes",
                  r.new_classes_size() > 0
                      ? absl::StrCat(" [", absl::StrJoin(r.new_classes(), ", "), "]")
                      : std::string(),
                  "\n");
  absl::StrAppend(
      out, "    rehearsal:     ",
      r.rehearsal()
          ? absl::StrCat(
                "on, ", r.exemplars_per_class(), " exemplars per class (", r.max_exemplars(),
                " in all), ",
                r.selection() == kaizen::v1::EXEMPLAR_SELECTION_RANDOM ? "random" : "herding",
                "; old classes from ", r.memory_source(),
                r.memory_size() > 0
                    ? absl::StrCat("; ", r.memory_size(), " stored with each version")
                    : std::string())
          : std::string("off"),
      "\n");
  absl::StrAppend(out, "    distillation:  ",
                  r.distillation() ? absl::StrCat("on, temperature ", Number(r.temperature()),
                                                  ", weight ", Number(r.distillation_weight()))
                                   : std::string("off"),
                  "\n");
  if (r.evaluated_on().empty()) return;
  absl::StrAppend(out, "    evaluated on:  ", r.evaluated_on(), "\n");
  Table table({"CLASSES", "IMAGES", "BEFORE", "AFTER"});
  auto acc = [](double v, int64_t n) { return n > 0 ? FormatPercent(v) : std::string("-"); };
  table.AddRow({"old", absl::StrCat(r.old_examples()),
                acc(r.old_accuracy_before(), r.old_examples()),
                acc(r.old_accuracy_after(), r.old_examples())});
  table.AddRow({"new", absl::StrCat(r.new_examples()),
                acc(r.new_accuracy_before(), r.new_examples()),
                acc(r.new_accuracy_after(), r.new_examples())});
  const int64_t all = r.old_examples() + r.new_examples();
  table.AddRow({"all", absl::StrCat(all), acc(r.all_accuracy_before(), all),
                acc(r.all_accuracy_after(), all)});
  absl::StrAppend(out, Indent(table.Render(), 4));
  if (r.old_examples() > 0) {
    absl::StrAppend(out, "    forgetting:    ", absl::StrFormat("%.1f", 100 * r.forgetting()),
                    " points of old-class accuracy\n");
  }
}

}  // namespace

std::string JobDetails(const kaizen::v1::Job& j) {
  const kaizen::v1::StartFineTuneRequest& r = j.request();
  std::string out = absl::StrCat("Job ", j.id(), "\n");
  Field(&out, "state", JobStateName(j.state()));
  if (!j.error().empty()) Field(&out, "error", j.error());
  Field(&out, "strategy", StrategyName(r.strategy()));
  Field(&out, "base model", r.base_model());
  Field(&out, "dataset", r.dataset());
  Field(&out, "output model", r.output_model());
  if (j.has_distillation() && !j.distillation().teacher_model().empty()) {
    // The version and settings resolved at submission.
    const kaizen::v1::DistillationResult& d = j.distillation();
    Field(&out, "teacher",
          absl::StrCat(d.teacher_model(), ":", d.teacher_version(), " (temperature ",
                       Number(d.temperature()), ", alpha ", Number(d.alpha()), ")"));
  } else if (r.has_distillation() && !r.distillation().teacher_model().empty()) {
    std::string teacher = r.distillation().teacher_model();
    if (r.distillation().temperature() > 0) {
      absl::StrAppend(&teacher, " (temperature ", Number(r.distillation().temperature()), ")");
    }
    Field(&out, "teacher", teacher);
  }
  if (r.priority() != 0) Field(&out, "priority", absl::StrCat(r.priority()));
  if (!r.request_id().empty()) Field(&out, "request id", r.request_id());
  if (!j.device().empty()) Field(&out, "device", j.device());
  if (j.attempts() > 0) Field(&out, "attempts", absl::StrCat(j.attempts()));
  if (j.pause_count() > 0) {
    Field(&out, j.state() == kaizen::v1::JOB_STATE_PAUSED ? "paused" : "last paused",
          absl::StrCat(j.pause_reason(), " (paused ", j.pause_count(),
                       j.pause_count() == 1 ? " time)" : " times)"));
  }
  std::string progress = absl::StrCat("epoch ", EpochProgress(j));
  if (j.total_steps() > 0) {
    absl::StrAppend(&progress, ", step ", j.step(), "/", j.total_steps());
  }
  Field(&out, "progress", progress);
  Field(&out, "created", FormatTime(j.create_time()));
  Field(&out, "started", FormatTime(j.start_time()));
  std::string ended = FormatTime(j.end_time());
  const double took = SecondsBetween(j.start_time(), j.end_time());
  if (took >= 0) absl::StrAppend(&ended, " (took ", FormatClock(took), ")");
  Field(&out, "ended", ended);
  if (j.latest_version() > 0) {
    std::string versions = absl::StrCat("latest ", r.output_model(), ":", j.latest_version());
    if (j.best_version() > 0) {
      absl::StrAppend(&versions, ", best ", r.output_model(), ":", j.best_version());
      if (JobHasValidation(j)) {
        absl::StrAppend(&versions, " (val accuracy ", FormatPercent(j.best_metric()), ")");
      }
    }
    Field(&out, "versions", versions);
  } else {
    Field(&out, "versions", "none yet");
  }
  Field(&out, "last event", absl::StrCat(j.last_sequence()));

  const auto hyperparameters = HyperparameterLines(EffectiveHyperparameters(j));
  absl::StrAppend(&out, j.has_resolved_hyperparameters() ? "  hyperparameters (resolved):\n"
                                                         : "  hyperparameters (as requested):\n");
  if (hyperparameters.empty()) absl::StrAppend(&out, "    strategy defaults\n");
  for (const auto& [key, value] : hyperparameters) {
    absl::StrAppendFormat(&out, "    %-15s %s\n", absl::StrCat(key, ":"), value);
  }

  if (j.history_size() > 0) {
    absl::StrAppend(&out, "  history:\n");
    Table history({"EPOCH", "TRAIN LOSS", "TRAIN ACC", "VAL LOSS", "VAL ACC", "LR", "TIME"});
    for (const kaizen::v1::EpochMetrics& m : j.history()) {
      const bool validated = EpochIsValidated(m);
      history.AddRow({absl::StrCat(m.epoch()), absl::StrFormat("%.4f", m.train_loss()),
                      FormatPercent(m.train_accuracy()),
                      validated ? absl::StrFormat("%.4f", m.val_loss()) : "-",
                      validated ? FormatPercent(m.val_accuracy()) : "-",
                      FormatLr(m.learning_rate()), absl::StrFormat("%.1fs", m.seconds())});
    }
    absl::StrAppend(&out, Indent(history.Render(), 4));
  }
  AppendTuning(j, &out);
  AppendDistillation(j, &out);
  AppendIncremental(j, &out);
  return out;
}

namespace {

// A text on one line of a table: control characters as spaces, cut to
// `width` bytes (not within a UTF-8 character) with "..." after it.
std::string TableText(absl::string_view text, size_t width) {
  std::string line;
  for (char c : text) line.push_back(static_cast<unsigned char>(c) < 0x20 ? ' ' : c);
  if (line.size() <= width) return line;
  size_t cut = width;
  while (cut > 0 && (static_cast<unsigned char>(line[cut]) & 0xC0) == 0x80) --cut;
  line.resize(cut);
  return line + "...";
}

}  // namespace

std::string PredictionTable(const kaizen::v1::PredictResponse& response,
                            const std::vector<std::string>& names, bool texts) {
  Table table({texts ? "TEXT" : "FILE", "RANK", "LABEL", "INDEX", "PROBABILITY", "VERSION"});
  const std::string version = absl::StrCat(response.version());
  for (int i = 0; i < response.predictions_size(); ++i) {
    std::string name = i < static_cast<int>(names.size()) ? names[i] : absl::StrCat("input ", i);
    if (texts && i < static_cast<int>(names.size())) name = TableText(name, kPredictionTextWidth);
    const kaizen::v1::Prediction& prediction = response.predictions(i);
    for (int rank = 0; rank < prediction.classes_size(); ++rank) {
      const kaizen::v1::ClassScore& score = prediction.classes(rank);
      table.AddRow({name, absl::StrCat(rank + 1), score.label().empty() ? "-" : score.label(),
                    absl::StrCat(score.index()), absl::StrFormat("%.4f", score.probability()),
                    version});
    }
  }
  return table.Render();
}

}  // namespace kaizen::cli
