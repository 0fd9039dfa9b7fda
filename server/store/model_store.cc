#include "server/store/model_store.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <map>
#include <optional>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "google/protobuf/util/time_util.h"
#include "server/common/atomic_file.h"
#include "server/common/logging.h"
#include "server/common/names.h"
#include "server/common/paging.h"
#include "server/common/sha256.h"
#include "server/common/status_macros.h"
#include "server/common/steady_clock.h"
#include "server/common/text_limits.h"
#include "server/models/builtin_models.h"
#include "server/models/model_file.h"
#include "server/models/model_metadata.h"
#include "server/models/sandboxed_inspection.h"
#include "server/models/text_encoder.h"
#include "server/models/torch_errors.h"

namespace kaizen::store {

using kaizen::v1::Model;

ModelStore::ModelStore(Options options, MetadataStore* metadata)
    : options_(std::move(options)), metadata_(metadata) {}

ModelStore::~ModelStore() { StopLoadingMarkerUpkeep(); }

ModelStore::File::File(File&& o) noexcept
    : model_(std::move(o.model_)), path_(std::move(o.path_)), temporary_(o.temporary_) {
  o.temporary_ = false;
}

ModelStore::File::~File() {
  if (temporary_) std::remove(path_.c_str());
}

absl::StatusOr<std::unique_ptr<ModelStore::Upload>> ModelStore::BeginUpload(
    const kaizen::v1::UploadModelHeader& header) {
  RETURN_IF_ERROR(common::ValidateName("model name", header.name()));
  if (models::IsBuiltinModel(header.name()) || header.name() == models::kTransformerSmall) {
    return absl::AlreadyExistsError(
        absl::StrCat("model \"", header.name(), "\" already exists (it is a built-in model)"));
  }
  RETURN_IF_ERROR(common::ValidateDescription("header.description", header.description()));
  RETURN_IF_ERROR(common::ValidateClassNames(
      "header.class_names", {header.class_names().begin(), header.class_names().end()}));
  if (!header.input_shape().empty() && header.input_shape_size() != 3) {
    return absl::InvalidArgumentError(absl::StrCat(
        "header.input_shape has ", header.input_shape_size(), " values; expected [C, H, W]"));
  }
  RETURN_IF_ERROR(ReserveName(header.name(), "an upload in progress"));
  if (absl::Status written = CheckNoJobWrites(header.name()); !written.ok()) {
    ReleaseName(header.name());
    return written;
  }
  UploadReceiver::Options ro;
  ro.tmp_dir = options_.data_dir + "/tmp";
  ro.max_bytes = options_.max_model_bytes;
  ro.expected_parts = 1;
  ro.what = "model upload";
  std::unique_ptr<Upload> upload(new Upload(this, header, std::move(ro)));
  RETURN_IF_ERROR(upload->receiver_.Start(header.parts()));
  return upload;
}

absl::Status ModelStore::ReserveName(const std::string& name, const std::string& owner,
                                     bool may_exist) {
  absl::MutexLock lock(&mu_);
  auto it = reserved_.find(name);
  if (it != reserved_.end()) {
    return absl::AlreadyExistsError(
        absl::StrCat("model \"", name, "\" is being written by ", it->second));
  }
  if (!may_exist) {
    ASSIGN_OR_RETURN(bool exists, metadata_->ModelExists(name));
    if (exists)
      return absl::AlreadyExistsError(absl::StrCat("model \"", name, "\" already exists"));
  }
  reserved_.emplace(name, owner);
  return absl::OkStatus();
}

absl::Status ModelStore::CheckNoJobWrites(const std::string& name) {
  if (!output_check_) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::optional<std::string> job, output_check_(name));
  if (!job) return absl::OkStatus();
  return absl::AlreadyExistsError(absl::StrCat("model \"", name, "\" is being written by job ",
                                               *job, " (it may run on another replica)"));
}

void ModelStore::ReleaseName(const std::string& name) {
  absl::MutexLock lock(&mu_);
  reserved_.erase(name);
}

ModelStore::Upload::~Upload() { store_->ReleaseName(header_.name()); }

namespace {

// The largest tokenizer a text model carries (as training::TextModelLimits).
constexpr int64_t kMaxTokenizerBytes = int64_t{16} << 20;
// Classes of the head put on an uploaded text encoder until a job fits it to
// a dataset's.
constexpr int64_t kEncoderHeadClasses = 2;

absl::Status HashFile(const std::string& path, std::string* sha256, int64_t* size) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return absl::InternalError(absl::StrCat("cannot read ", path));
  common::Sha256 hash;
  std::vector<char> buf(1 << 20);
  int64_t total = 0;
  for (size_t n; (n = std::fread(buf.data(), 1, buf.size(), f)) > 0;) {
    hash.Update(buf.data(), n);
    total += static_cast<int64_t>(n);
  }
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) return absl::InternalError(absl::StrCat("reading ", path, " failed"));
  *sha256 = hash.HexDigest();
  *size = total;
  return absl::OkStatus();
}

// An uploaded text encoder with a head put on (WrapTextEncoder), written
// over `path` with its metadata and tokenizer. The sandboxed inspector
// accepted the file (allow-listed operators, runs on ids and a mask,
// backward included) and described its output and blocks; here the file is
// loaded and the wrapper compiled, and nothing of the encoder runs. `model`
// gets the head and the new parameter count, size and SHA-256.
absl::Status PutHeadOnEncoder(const std::string& path, const models::UploadedEncoder& encoder,
                              int64_t max_bytes, Model* model) {
  ASSIGN_OR_RETURN(std::string tokenizer, models::ReadModelTokenizer(path, kMaxTokenizerBytes));
  torch::jit::Module module;
  try {
    module = torch::jit::load(path, torch::kCPU);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("loading the text encoder failed: ", models::TorchErrorSummary(e)));
  }
  ASSIGN_OR_RETURN(
      torch::jit::Module wrapped,
      models::WrapTextEncoder(module, encoder,
                              model->text_input().pooling() == kaizen::v1::TEXT_POOLING_MASKED_MEAN
                                  ? models::TextPooling::kMaskedMean
                                  : models::TextPooling::kFirstToken,
                              kEncoderHeadClasses, /*seed=*/0));
  kaizen::v1::ModelHead* head = model->mutable_head();
  head->set_module_path("fc");
  head->set_kind(kaizen::v1::HEAD_KIND_LINEAR);
  head->set_in_features(encoder.hidden_size);
  head->set_out_features(kEncoderHeadClasses);
  int64_t parameters = 0;
  for (const at::Tensor& p : wrapped.parameters()) parameters += p.numel();
  model->set_parameter_count(parameters);
  // The embedded copy describes the file it is in: no size or digest of
  // the upload's.
  model->clear_sha256();
  model->set_size_bytes(0);
  RETURN_IF_ERROR(models::SaveModelFile(wrapped, *model, path, tokenizer));
  std::string sha256;
  int64_t size = 0;
  RETURN_IF_ERROR(HashFile(path, &sha256, &size));
  if (size > max_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("the encoder with its head is ", size,
                                                     " bytes, over the ", max_bytes,
                                                     " bytes a model may have (--max_model_mb)"));
  }
  model->set_sha256(sha256);
  model->set_size_bytes(size);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Model> ModelStore::Upload::Finish(absl::string_view sha256_hex) {
  RETURN_IF_ERROR(receiver_.Finish(sha256_hex));
  // A job submitted through another replica since the upload began.
  RETURN_IF_ERROR(store_->CheckNoJobWrites(header_.name()));
  const std::string& tmp = receiver_.part_paths()[0];
  std::optional<models::UploadedEncoder> encoder;
  absl::StatusOr<Model> inspected =
      models::InspectInSandbox(tmp, header_, store_->options_.sandbox, &encoder);
  if (!inspected.ok()) {
    return absl::Status(inspected.status().code(), absl::StrCat(receiver_.part_names()[0], ": ",
                                                                inspected.status().message()));
  }
  Model model = *std::move(inspected);
  // Class names and architecture may come from the file's own kaizen.json:
  // held to the same limits as a header's.
  const std::string where = absl::StrCat(receiver_.part_names()[0], ": kaizen.json");
  RETURN_IF_ERROR(
      common::ValidateClassNames(absl::StrCat(where, " class_names"),
                                 {model.class_names().begin(), model.class_names().end()}));
  RETURN_IF_ERROR(common::ValidateToken(absl::StrCat(where, " architecture"), model.architecture(),
                                        common::kMaxTokenBytes));
  model.set_name(header_.name());
  model.set_version(1);
  model.set_description(header_.description());
  model.set_source(kaizen::v1::MODEL_SOURCE_UPLOADED);
  model.set_size_bytes(receiver_.total_bytes());
  model.set_sha256(receiver_.sha256());
  *model.mutable_create_time() =
      google::protobuf::util::TimeUtil::MillisecondsToTimestamp(absl::ToUnixMillis(absl::Now()));
  if (model.has_text_input() && store_->options_.check_text_input) {
    absl::StatusOr<std::string> tokenizer = models::ReadModelTokenizer(tmp, kMaxTokenizerBytes);
    absl::Status checked = tokenizer.status();
    if (checked.ok()) checked = store_->options_.check_text_input(model.text_input(), *tokenizer);
    if (!checked.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(receiver_.part_names()[0],
                                                     ": kaizen.json text_input and its "
                                                     "tokenizer: ",
                                                     checked.message()));
    }
  }
  if (encoder.has_value()) {
    if (absl::Status headed =
            PutHeadOnEncoder(tmp, *encoder, store_->options_.max_model_bytes, &model);
        !headed.ok()) {
      return absl::Status(headed.code(),
                          absl::StrCat(receiver_.part_names()[0], ": ", headed.message()));
    }
  }

  if (store_->options_.after_inspection) store_->options_.after_inspection(header_.name());
  const std::string dir_rel = absl::StrCat("models/", header_.name());
  std::error_code ec;
  std::filesystem::create_directories(store_->options_.data_dir + "/" + dir_rel, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", dir_rel, ": ", ec.message()));
  ModelRow row;
  row.file = absl::StrCat(dir_rel, "/v1-", common::RandomHex(4), ".pt");
  const std::string path = store_->options_.data_dir + "/" + row.file;
  RETURN_IF_ERROR(common::DurableRename(tmp, path));
  row.model = model;
  // And one submitted since (while the inspection ran), checked in the
  // transaction that takes the name: a job and an upload cannot both have it.
  if (absl::Status st = store_->metadata_->InsertModel(
          row, /*unless_a_job_writes=*/static_cast<bool>(store_->output_check_));
      !st.ok()) {
    std::remove(path.c_str());
    return st;
  }
  store_->NoteLocalChange(model.name(), model.version(), model.sha256());
  common::LogInfo("model stored", {{"model", model.name()},
                                   {"parameters", model.parameter_count()},
                                   {"head", model.head().module_path()},
                                   {"bytes", model.size_bytes()}});
  RETURN_IF_ERROR(store_->FillVersions(&model));
  return model;
}

absl::Status ModelStore::Quarantine(const std::string& name, int64_t version,
                                    const std::string& reason) {
  common::LogWarning("model version quarantined",
                     {{"model", name}, {"version", version}, {"reason", reason}});
  return metadata_->QuarantineModel(name, version, reason);
}

absl::Status ModelStore::MarkLoading(const std::string& name, int64_t version) {
  absl::MutexLock lock(&loading_mu_);
  RETURN_IF_ERROR(metadata_->MarkLoading(name, version, options_.replica_id,
                                         absl::ToInt64Milliseconds(options_.loading_marker_lease)));
  ++loading_[{name, version}];
  return absl::OkStatus();
}

absl::Status ModelStore::ClearLoading(const std::string& name, int64_t version) {
  absl::MutexLock lock(&loading_mu_);
  auto it = loading_.find({name, version});
  if (it != loading_.end() && --it->second > 0) return absl::OkStatus();  // loading it again
  if (it != loading_.end()) loading_.erase(it);
  // A failure leaves the marker until the upkeep's next round removes it.
  return metadata_->ClearLoading(name, version, options_.replica_id);
}

std::string ModelStore::StoppedLoadReason(const MetadataStore::LoadingMarker& marker) const {
  std::string who;
  if (!options_.shared_database || marker.owner.empty()) {
    who = "the server stopped while loading this version for serving";
  } else if (marker.owner == options_.replica_id) {
    who = absl::StrCat("replica ", marker.owner, " stopped while loading this version for serving");
  } else {
    who = absl::StrCat(ExpiredMarkerReasonPrefix(marker.owner), " found by replica ",
                       options_.replica_id, ")");
  }
  return absl::StrCat(who, " (a crash or kill during load or warm-up)");
}

std::string ModelStore::ExpiredMarkerReasonPrefix(const std::string& owner) {
  return absl::StrCat("replica ", owner,
                      " stopped while loading this version for serving (the lease of its loading "
                      "marker ran out unrenewed;");
}

absl::StatusOr<bool> ModelStore::LiftQuarantineOfAStalledLoad(const std::string& name,
                                                              int64_t version) {
  if (!options_.shared_database) return false;
  ASSIGN_OR_RETURN(
      const std::optional<std::string> lifted,
      metadata_->LiftQuarantine(name, version, ExpiredMarkerReasonPrefix(options_.replica_id)));
  if (!lifted) return false;
  common::LogWarning(
      "quarantine lifted: this replica's load outlived its marker's lease (a stall) and succeeded",
      {{"model", name}, {"version", version}, {"reason", *lifted}});
  return true;
}

void ModelStore::LogStoppedLoads(const std::vector<MetadataStore::LoadingMarker>& markers) {
  for (const MetadataStore::LoadingMarker& m : markers) {
    common::LogWarning(
        "model version quarantined",
        {{"model", m.name}, {"version", m.version}, {"reason", StoppedLoadReason(m)}});
  }
}

absl::StatusOr<int> ModelStore::QuarantineInterruptedLoads() {
  // Another replica's marker only once it has been expired for a whole
  // lease: a replica's live loads are renewed within a third of one, even
  // right after a database outage that stopped every renewal.
  ASSIGN_OR_RETURN(
      const std::vector<MetadataStore::LoadingMarker> markers,
      metadata_->TakeLoadingMarkers(
          options_.replica_id, !options_.shared_database,
          absl::ToInt64Milliseconds(options_.loading_marker_lease),
          [this](const MetadataStore::LoadingMarker& m) { return StoppedLoadReason(m); }));
  LogStoppedLoads(markers);
  return static_cast<int>(markers.size());
}

absl::StatusOr<int> ModelStore::LoadingMarkerUpkeep() {
  const absl::Duration lease = options_.loading_marker_lease;
  bool healthy = false;
  {
    absl::MutexLock lock(&loading_mu_);
    std::vector<std::pair<std::string, int64_t>> in_progress;
    for (const auto& [version, count] : loading_) in_progress.push_back(version);
    const absl::Status renewed = metadata_->RenewLoadingMarkers(
        options_.replica_id, absl::ToInt64Milliseconds(lease), in_progress);
    const absl::Duration now = common::SteadyNow();
    if (!renewed.ok()) {
      last_renewal_ = -absl::InfiniteDuration();
      return renewed;
    }
    // A gap of half a lease (a stall, or rounds that failed) starts the
    // count again.
    if (now - last_renewal_ > lease / 2) renewing_since_ = now;
    last_renewal_ = now;
    healthy = now - renewing_since_ >= lease;
  }
  if (!healthy) return 0;
  ASSIGN_OR_RETURN(
      const std::vector<MetadataStore::LoadingMarker> markers,
      metadata_->TakeExpiredLoadingMarkers(
          [this](const MetadataStore::LoadingMarker& m) { return StoppedLoadReason(m); }));
  LogStoppedLoads(markers);
  return static_cast<int>(markers.size());
}

void ModelStore::StartLoadingMarkerUpkeep() {
  if (!options_.shared_database || upkeep_thread_.joinable()) return;
  upkeep_thread_ = std::thread([this] {
    const absl::Duration every =
        std::max(absl::Milliseconds(100), options_.loading_marker_lease / 3);
    std::unique_lock<std::mutex> lock(upkeep_mu_);
    while (!upkeep_stopping_) {
      lock.unlock();
      absl::StatusOr<int> quarantined = LoadingMarkerUpkeep();
      if (!quarantined.ok()) {
        common::LogError("cannot renew loading markers or take stopped replicas' markers",
                         {{"error", quarantined.status().ToString()}});
      }
      lock.lock();
      // steady_clock: a step of the wall clock neither delays a renewal
      // nor brings one forward.
      upkeep_wake_.wait_for(lock, absl::ToChronoMilliseconds(every),
                            [this] { return upkeep_stopping_; });
    }
  });
}

void ModelStore::StopLoadingMarkerUpkeep() {
  {
    std::lock_guard<std::mutex> lock(upkeep_mu_);
    upkeep_stopping_ = true;
  }
  upkeep_wake_.notify_all();
  if (upkeep_thread_.joinable()) upkeep_thread_.join();
}

absl::Status ModelStore::FillVersions(Model* model) {
  if (model->source() == kaizen::v1::MODEL_SOURCE_BUILTIN) {
    model->clear_versions();
    model->add_versions(1);
    model->set_latest_version(1);
    model->set_best_version(1);
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(std::vector<ModelRow> rows,
                   metadata_->ListModels("", 0, 1 << 30, false, model->name()));
  model->clear_versions();
  // The best version: the highest val_accuracy; without one, the lowest
  // val_masked_lm_loss (a MASKED_LM job's encoders); else the latest.
  int64_t best = 0, best_by_loss = 0;
  double best_acc = -1;
  double best_loss = 0;
  for (const ModelRow& r : rows) {
    model->add_versions(r.model.version());
    const auto& metrics = r.model.metrics();
    if (auto it = metrics.find("val_accuracy"); it != metrics.end() && it->second > best_acc) {
      best_acc = it->second;
      best = r.model.version();
    }
    if (auto it = metrics.find("val_masked_lm_loss");
        it != metrics.end() && !std::isnan(it->second) &&
        (best_by_loss == 0 || it->second < best_loss)) {
      best_loss = it->second;
      best_by_loss = r.model.version();
    }
  }
  const int64_t latest = rows.empty() ? model->version() : rows.back().model.version();
  model->set_latest_version(latest);
  model->set_best_version(best > 0 ? best : best_by_loss > 0 ? best_by_loss : latest);
  ASSIGN_OR_RETURN(auto quarantined, metadata_->QuarantinedVersions(model->name()));
  model->clear_quarantined_versions();
  model->clear_quarantine_reason();
  for (const auto& [version, reason] : quarantined) {
    model->add_quarantined_versions(version);
    if (version == model->version()) model->set_quarantine_reason(reason);
  }
  return absl::OkStatus();
}

absl::StatusOr<Model> ModelStore::Get(const std::string& name, int64_t version) {
  RETURN_IF_ERROR(common::ValidateName("model name", name));
  if (version < 0) {
    return absl::InvalidArgumentError(absl::StrCat("version is ", version, "; it must be >= 0"));
  }
  Model model;
  if (models::IsBuiltinModel(name)) {
    if (version > 1) {
      return absl::NotFoundError(absl::StrCat("built-in model \"", name, "\" has only version 1"));
    }
    ASSIGN_OR_RETURN(model, models::DescribeBuiltinModel(name));
    model.set_name(name);
  } else {
    ASSIGN_OR_RETURN(ModelRow row, metadata_->GetModel(name, version));
    model = std::move(row.model);
  }
  RETURN_IF_ERROR(FillVersions(&model));
  return model;
}

absl::StatusOr<kaizen::v1::ListModelsResponse> ModelStore::List(
    const kaizen::v1::ListModelsRequest& request) {
  ASSIGN_OR_RETURN(const common::PageRequest page,
                   common::ResolvePageRequest(request.page_size(), request.page_token()));
  const std::string& key = page.after_key;
  const int limit = page.limit;
  if (!request.name().empty()) RETURN_IF_ERROR(common::ValidateName("name", request.name()));
  // The key is "name\nversion" of the last model returned.
  std::string after_name;
  int64_t after_version = 0;
  if (!key.empty()) {
    std::vector<std::string> parts = absl::StrSplit(key, '\n');
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[1], &after_version)) {
      return absl::InvalidArgumentError("page_token is malformed");
    }
    after_name = parts[0];
  }
  const bool latest_only = !request.all_versions() && request.name().empty();
  ASSIGN_OR_RETURN(
      std::vector<ModelRow> rows,
      metadata_->ListModels(after_name, after_version, limit + 1, latest_only, request.name()));
  std::vector<Model> merged;
  for (ModelRow& r : rows) merged.push_back(std::move(r.model));
  // Built-ins have one version and sort among the stored models by name.
  for (const std::string& b : models::BuiltinModelNames()) {
    if (!request.name().empty() && request.name() != b) continue;
    if (b < after_name || (b == after_name && after_version >= 1)) continue;
    ASSIGN_OR_RETURN(Model m, models::DescribeBuiltinModel(b));
    m.set_name(b);
    merged.push_back(std::move(m));
  }
  std::sort(merged.begin(), merged.end(), [](const Model& a, const Model& b) {
    return a.name() != b.name() ? a.name() < b.name() : a.version() < b.version();
  });
  kaizen::v1::ListModelsResponse out;
  ASSIGN_OR_RETURN(*out.mutable_next_page_token(),
                   common::FillPage(
                       merged, limit,
                       [&](Model& model) -> absl::StatusOr<size_t> {
                         RETURN_IF_ERROR(FillVersions(&model));
                         const size_t bytes = model.ByteSizeLong();
                         *out.add_models() = std::move(model);
                         return bytes;
                       },
                       [](const Model& m) { return absl::StrCat(m.name(), "\n", m.version()); }));
  return out;
}

absl::Status ModelStore::Delete(const std::string& name, int64_t version) {
  RETURN_IF_ERROR(common::ValidateName("model name", name));
  if (models::IsBuiltinModel(name)) {
    return absl::FailedPreconditionError(
        absl::StrCat("model \"", name, "\" is built in and cannot be deleted"));
  }
  std::optional<absl::WriterMutexLock> hold;
  if (references_ != nullptr) hold.emplace(references_);
  if (in_use_) {
    ASSIGN_OR_RETURN(bool used, in_use_(name));
    if (used) {
      return absl::FailedPreconditionError(
          absl::StrCat("model \"", name, "\" is used by a queued or running job; cancel it first"));
    }
  }
  ASSIGN_OR_RETURN(std::vector<ModelRow> removed, metadata_->DeleteModel(name, version));
  RETURN_IF_ERROR(RemoveFiles(removed));
  if (version == 0) {
    std::error_code ec;
    std::filesystem::remove(options_.data_dir + "/models/" + name, ec);  // only if empty
  }
  common::LogInfo("model deleted", {{"model", name}, {"version", version}});
  return absl::OkStatus();
}

absl::Status ModelStore::RemoveFiles(const std::vector<ModelRow>& rows) {
  // Rows are gone first; a crash here leaves orphans for the start-up sweep.
  for (const ModelRow& r : rows) {
    NoteLocalChange(r.model.name(), r.model.version(), std::nullopt);
    if (listener_.deleted) listener_.deleted(r.model.name(), r.model.version());
    std::error_code ec;
    std::filesystem::remove(options_.data_dir + "/" + r.file, ec);
    std::filesystem::remove(options_.data_dir + "/" + r.file + ".resume", ec);
    std::filesystem::remove(options_.data_dir + "/" + r.file + ".exemplars", ec);
  }
  return absl::OkStatus();
}

absl::StatusOr<Model> ModelStore::AddVersion(const std::string& name,
                                             const torch::jit::Module& module, Model metadata,
                                             absl::string_view resume_state,
                                             const datasets::DecodedDataset* exemplars,
                                             std::string_view tokenizer, const JobLease* lease) {
  RETURN_IF_ERROR(common::ValidateName("model name", name));
  if (models::IsBuiltinModel(name)) {
    return absl::FailedPreconditionError(absl::StrCat("\"", name, "\" is a built-in model"));
  }
  absl::MutexLock lock(&version_mu_);
  ASSIGN_OR_RETURN(std::vector<int64_t> versions, metadata_->ModelVersions(name));
  const int64_t version = versions.empty() ? 1 : versions.back() + 1;
  metadata.set_name(name);
  metadata.set_version(version);
  metadata.set_source(kaizen::v1::MODEL_SOURCE_FINE_TUNED);
  *metadata.mutable_create_time() =
      google::protobuf::util::TimeUtil::MillisecondsToTimestamp(absl::ToUnixMillis(absl::Now()));
  const std::string dir_rel = absl::StrCat("models/", name);
  std::error_code ec;
  std::filesystem::create_directories(options_.data_dir + "/" + dir_rel, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", dir_rel, ": ", ec.message()));
  ModelRow row;
  row.file = absl::StrCat(dir_rel, "/v", version, "-", common::RandomHex(4), ".pt");
  const std::string path = options_.data_dir + "/" + row.file;
  // Resume state first: a version row never exists without it.
  RETURN_IF_ERROR(common::WriteFileAtomically(path + ".resume", resume_state));
  if (exemplars != nullptr) {
    if (absl::StatusOr<int64_t> written =
            datasets::WriteDatasetFile(path + ".exemplars", *exemplars);
        !written.ok()) {
      std::remove((path + ".resume").c_str());
      return written.status();
    }
  }
  Model embedded = metadata;
  embedded.clear_versions();
  if (absl::Status st = models::SaveModelFile(module, embedded, path, tokenizer); !st.ok()) {
    std::remove((path + ".resume").c_str());
    std::remove((path + ".exemplars").c_str());
    return st;
  }
  std::string bytes;
  RETURN_IF_ERROR(common::ReadFile(path, &bytes));
  metadata.set_size_bytes(static_cast<int64_t>(bytes.size()));
  metadata.set_sha256(common::Sha256Hex(bytes));
  row.model = metadata;
  if (absl::Status st = metadata_->InsertModel(row, /*unless_a_job_writes=*/false, lease);
      !st.ok()) {
    std::remove(path.c_str());
    std::remove((path + ".resume").c_str());
    std::remove((path + ".exemplars").c_str());
    return st;
  }
  RETURN_IF_ERROR(FillVersions(&metadata));
  NoteLocalChange(metadata.name(), metadata.version(), metadata.sha256());
  if (listener_.added) listener_.added(metadata);
  return metadata;
}

void ModelStore::NoteLocalChange(const std::string& name, int64_t version,
                                 std::optional<std::string> sha256) {
  absl::MutexLock lock(&announced_mu_);
  if (sha256.has_value()) {
    known_[name][version] = *std::move(sha256);
  } else if (auto it = known_.find(name); it != known_.end()) {
    it->second.erase(version);
    if (it->second.empty()) known_.erase(it);
  }
  if (scanning_) touched_.emplace_back(name, version);
}

absl::Status ModelStore::AnnounceOtherReplicasChanges() {
  absl::MutexLock scan(&scan_mu_);
  {
    absl::MutexLock lock(&announced_mu_);
    scanning_ = true;
    touched_.clear();
  }
  // Every stored version, read without announced_mu_: AddVersion and Delete
  // go on meanwhile and note what they change.
  KnownVersions now;
  std::map<std::string, kaizen::v1::Model> newest;  // told in name order
  std::string after_name;
  int64_t after_version = 0;
  constexpr int kPage = 500;
  absl::Status listed;
  while (listed.ok()) {
    absl::StatusOr<std::vector<ModelRow>> page =
        metadata_->ListModels(after_name, after_version, kPage, /*latest_only=*/false, "");
    if (!page.ok()) {
      listed = page.status();
      break;
    }
    if (!page->empty()) {
      after_name = page->back().model.name();
      after_version = page->back().model.version();
    }
    for (ModelRow& row : *page) {
      const std::string& name = row.model.name();
      now[name][row.model.version()] = row.model.sha256();
      kaizen::v1::Model& top = newest[name];
      if (row.model.version() >= top.version()) top = std::move(row.model);
    }
    if (page->size() < static_cast<size_t>(kPage)) break;
  }

  std::vector<std::pair<std::string, int64_t>> deleted;
  std::vector<kaizen::v1::Model> added;
  {
    absl::MutexLock lock(&announced_mu_);
    scanning_ = false;
    if (!listed.ok()) return listed;
    // What this store changed during the scan is as known_ says, whatever
    // the scan saw.
    for (const auto& [name, version] : touched_) {
      const auto mine = known_.find(name);
      if (mine != known_.end() && mine->second.count(version) > 0) {
        now[name][version] = mine->second.at(version);
      } else if (auto it = now.find(name); it != now.end()) {
        it->second.erase(version);
        if (it->second.empty()) now.erase(it);
      }
    }
    touched_.clear();
    if (announced_once_) {
      for (const auto& [name, versions] : known_) {
        const auto still = now.find(name);
        for (const auto& [version, sha256] : versions) {
          const bool kept = still != now.end() && still->second.count(version) > 0 &&
                            still->second.at(version) == sha256;
          if (!kept) deleted.emplace_back(name, version);
        }
      }
      // A model's newest version is new unless this store already knew
      // that version with those bytes (a number reused after deletions,
      // even below an older maximum, is new).
      for (auto& [name, model] : newest) {
        const auto still = now.find(name);
        if (still == now.end() || still->second.count(model.version()) == 0) continue;
        const auto before = known_.find(name);
        const bool told = before != known_.end() && before->second.count(model.version()) > 0 &&
                          before->second.at(model.version()) == model.sha256();
        if (!told) added.push_back(std::move(model));
      }
    }
    known_ = std::move(now);
    announced_once_ = true;
  }
  std::sort(deleted.begin(), deleted.end());
  if (!deleted.empty() || !added.empty()) {
    common::LogInfo("model versions changed by another replica",
                    {{"deleted", static_cast<int64_t>(deleted.size())},
                     {"added", static_cast<int64_t>(added.size())}});
  }
  for (const auto& [name, version] : deleted) {
    if (listener_.deleted) listener_.deleted(name, version);
  }
  for (kaizen::v1::Model& model : added) {
    if (absl::Status st = FillVersions(&model); !st.ok()) {
      common::LogError(
          "cannot describe a version another replica wrote",
          {{"model", model.name()}, {"version", model.version()}, {"error", st.ToString()}});
      continue;
    }
    if (listener_.added) listener_.added(model);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ModelStore::ReadResumeState(const std::string& name, int64_t version) {
  ASSIGN_OR_RETURN(ModelRow row, metadata_->GetModel(name, version));
  std::string state;
  absl::Status st = common::ReadFile(options_.data_dir + "/" + row.file + ".resume", &state);
  if (!st.ok()) {
    return absl::NotFoundError(
        absl::StrCat("model \"", name, "\" version ", version, " has no resume state"));
  }
  return state;
}

absl::StatusOr<datasets::DecodedDataset> ModelStore::ReadExemplars(const std::string& name,
                                                                   int64_t version) {
  ASSIGN_OR_RETURN(ModelRow row, metadata_->GetModel(name, version));
  absl::StatusOr<datasets::DecodedDataset> memory =
      datasets::ReadDatasetFile(options_.data_dir + "/" + row.file + ".exemplars");
  if (absl::IsNotFound(memory.status())) {
    return absl::NotFoundError(absl::StrCat("model \"", name, "\" version ", row.model.version(),
                                            " has no rehearsal memory"));
  }
  if (!memory.ok()) {
    return absl::Status(memory.status().code(),
                        absl::StrCat("the rehearsal memory of model \"", name, "\" version ",
                                     row.model.version(), ": ", memory.status().message()));
  }
  return memory;
}

absl::StatusOr<bool> ModelStore::HasExemplars(const std::string& name, int64_t version) {
  ASSIGN_OR_RETURN(ModelRow row, metadata_->GetModel(name, version));
  std::error_code ec;
  const bool exists =
      std::filesystem::exists(options_.data_dir + "/" + row.file + ".exemplars", ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("cannot check the rehearsal memory of model \"", name,
                                            "\" version ", row.model.version(), ": ",
                                            ec.message()));
  }
  return exists;
}

absl::StatusOr<torch::jit::Module> ModelStore::LoadModule(const std::string& name,
                                                          int64_t version) {
  ASSIGN_OR_RETURN(ModelRow row, metadata_->GetModel(name, version));
  const std::string path = options_.data_dir + "/" + row.file;
  try {
    return torch::jit::load(path, torch::kCPU);
  } catch (const std::exception& e) {
    return absl::DataLossError(absl::StrCat("cannot load model \"", name, "\" version ",
                                            row.model.version(), ": ",
                                            models::TorchErrorSummary(e)));
  }
}

absl::StatusOr<std::string> ModelStore::ReadTokenizer(const std::string& name, int64_t version) {
  ASSIGN_OR_RETURN(ModelRow row, metadata_->GetModel(name, version));
  if (!row.model.has_text_input()) {
    return absl::NotFoundError(absl::StrCat("model \"", name, "\" version ", row.model.version(),
                                            " is not a text model; it carries no tokenizer"));
  }
  absl::StatusOr<std::string> tokenizer =
      models::ReadModelTokenizer(options_.data_dir + "/" + row.file, options_.max_model_bytes);
  if (!tokenizer.ok()) {
    return absl::DataLossError(absl::StrCat("model \"", name, "\" version ", row.model.version(),
                                            ": ", tokenizer.status().message()));
  }
  return tokenizer;
}

absl::Status ModelStore::PruneVersions(const std::string& name, const std::vector<int64_t>& keep,
                                       int64_t newest_considered) {
  ASSIGN_OR_RETURN(std::vector<int64_t> versions, metadata_->ModelVersions(name));
  for (int64_t v : versions) {
    if (v > newest_considered || std::find(keep.begin(), keep.end(), v) != keep.end()) continue;
    // Gone meanwhile (withdrawn by the replica that wrote it) is as good.
    if (absl::Status st = RemoveVersion(name, v); !st.ok() && !absl::IsNotFound(st)) return st;
  }
  return absl::OkStatus();
}

absl::Status ModelStore::RemoveVersion(const std::string& name, int64_t version,
                                       absl::string_view only_sha256) {
  if (version <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("no version of \"", name, "\" named"));
  }
  ASSIGN_OR_RETURN(std::vector<ModelRow> removed,
                   metadata_->DeleteModel(name, version, only_sha256));
  return RemoveFiles(removed);
}

absl::StatusOr<ModelStore::File> ModelStore::OpenFile(const std::string& name, int64_t version) {
  ASSIGN_OR_RETURN(Model model, Get(name, version));
  if (model.source() == kaizen::v1::MODEL_SOURCE_BUILTIN) {
    // Render the architecture with its default options.
    ASSIGN_OR_RETURN(auto module, models::CreateBuiltinModel(name, models::BuiltinOptions{}));
    const std::string path =
        absl::StrCat(options_.data_dir, "/tmp/builtin-", name, "-", common::RandomHex(6), ".pt");
    RETURN_IF_ERROR(models::SaveModelFile(module, model, path));
    return File(std::move(model), path, /*temporary=*/true);
  }
  ASSIGN_OR_RETURN(ModelRow row, metadata_->GetModel(name, model.version()));
  return File(std::move(model), options_.data_dir + "/" + row.file, false);
}

}  // namespace kaizen::store
