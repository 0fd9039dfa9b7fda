#include "client/lib/kaizen_client.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/common/atomic_file.h"
#include "server/common/sha256.h"
#include "server/common/status_macros.h"

namespace kaizen::client {
namespace {

using kaizen::v1::UploadPart;

// Larger than any message the server sends (chunks are far smaller); the
// default 4 MiB would refuse a model whose metadata grows large.
constexpr int kMaxReceiveBytes = 64 * 1024 * 1024;

// Stops a misbehaving server from keeping ListAll* in a loop forever.
constexpr int kMaxPages = 100000;

std::string BaseName(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

absl::Status ErrnoError(int err, const std::string& what) {
  const std::string message = absl::StrCat(what, ": ", std::strerror(err));
  switch (err) {
    case ENOENT:
      return absl::NotFoundError(message);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(message);
    default:
      return absl::InternalError(message);
  }
}

// Describes `files` as upload parts (base name and size) and sums the sizes.
absl::Status DescribeParts(const std::vector<std::string>& files, std::vector<UploadPart>* parts,
                           int64_t* total) {
  *total = 0;
  for (const std::string& file : files) {
    struct stat st;
    if (::stat(file.c_str(), &st) != 0) {
      return ErrnoError(errno, absl::StrCat("cannot read ", file));
    }
    if (!S_ISREG(st.st_mode)) {
      return absl::InvalidArgumentError(absl::StrCat(file, " is not a regular file"));
    }
    UploadPart part;
    part.set_file_name(BaseName(file));
    part.set_size_bytes(st.st_size);
    parts->push_back(std::move(part));
    *total += st.st_size;
  }
  return absl::OkStatus();
}

// A caller that names the parts itself (e.g. "photos.tar" for a folder
// archived into a temporary file) keeps those names; sizes always come from
// the files.
void KeepGivenNames(const google::protobuf::RepeatedPtrField<UploadPart>& given,
                    std::vector<UploadPart>* parts) {
  if (given.size() != static_cast<int>(parts->size())) return;
  for (int i = 0; i < given.size(); ++i) {
    if (!given[i].file_name().empty()) {
      (*parts)[i].set_file_name(given[i].file_name());
    }
  }
}

// Owns a FILE* for the duration of one part.
class InputFile {
 public:
  explicit InputFile(FILE* file) : file_(file) {}
  ~InputFile() {
    if (file_ != nullptr) std::fclose(file_);
  }
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;
  FILE* get() const { return file_; }

 private:
  FILE* file_;
};

// Sends header, chunks and trailer on `writer`. A local problem (a file that
// cannot be read or changed size) is returned as an error; a stream the
// server closed early sets `*stream_broken` and returns OK, because the real
// reason is in the status that Finish() returns.
template <typename Request>
absl::Status SendUpload(grpc::ClientWriter<Request>* writer, const Request& header_request,
                        const std::vector<std::string>& files, const std::vector<UploadPart>& parts,
                        int64_t total, const ProgressCallback& progress, bool* stream_broken) {
  *stream_broken = false;
  if (!writer->Write(header_request)) {
    *stream_broken = true;
    return absl::OkStatus();
  }
  common::Sha256 hasher;
  int64_t sent = 0;
  if (progress) progress(sent, total);
  Request request;
  for (size_t i = 0; i < files.size(); ++i) {
    InputFile in(std::fopen(files[i].c_str(), "rb"));
    if (in.get() == nullptr) {
      return ErrnoError(errno, absl::StrCat("cannot open ", files[i]));
    }
    int64_t part_bytes = 0;
    while (true) {
      std::string* chunk = request.mutable_chunk();
      chunk->resize(kChunkBytes);
      const size_t n = std::fread(&(*chunk)[0], 1, chunk->size(), in.get());
      if (n == 0) {
        if (std::ferror(in.get())) {
          return ErrnoError(errno, absl::StrCat("cannot read ", files[i]));
        }
        break;
      }
      chunk->resize(n);
      part_bytes += static_cast<int64_t>(n);
      if (part_bytes > parts[i].size_bytes()) break;  // reported below
      hasher.Update(*chunk);
      if (!writer->Write(request)) {
        *stream_broken = true;
        return absl::OkStatus();
      }
      sent += static_cast<int64_t>(n);
      if (progress) progress(sent, total);
    }
    if (part_bytes != parts[i].size_bytes()) {
      return absl::FailedPreconditionError(
          absl::StrCat(files[i], " changed size while it was being uploaded (expected ",
                       parts[i].size_bytes(), " bytes)"));
    }
  }
  request.set_sha256(hasher.HexDigest());
  if (!writer->Write(request) || !writer->WritesDone()) {
    *stream_broken = true;
  }
  return absl::OkStatus();
}

// Runs one client-streaming upload from `start` (which opens the stream) to
// the server's answer.
template <typename Request, typename Response, typename StartFn>
absl::StatusOr<Response> RunUpload(grpc::ClientContext* context, StartFn start,
                                   const Request& header_request,
                                   const std::vector<std::string>& files,
                                   const std::vector<UploadPart>& parts, int64_t total,
                                   const ProgressCallback& progress) {
  Response response;
  std::unique_ptr<grpc::ClientWriter<Request>> writer = start(context, &response);
  bool stream_broken = false;
  const absl::Status local =
      SendUpload(writer.get(), header_request, files, parts, total, progress, &stream_broken);
  if (!local.ok()) {
    context->TryCancel();
    writer->Finish();
    return local;
  }
  const grpc::Status status = writer->Finish();
  if (!status.ok()) return FromGrpcStatus(status);
  if (stream_broken) {
    return absl::UnavailableError("the server closed the upload stream before it was complete");
  }
  return response;
}

}  // namespace

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

std::unique_ptr<KaizenClient> KaizenClient::Connect(const std::string& target, Options options) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxReceiveBytes);
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (options.tls || !options.tls_ca_pem.empty() || !options.tls_cert_pem.empty()) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = options.tls_ca_pem;
    ssl.pem_cert_chain = options.tls_cert_pem;
    ssl.pem_private_key = options.tls_key_pem;
    credentials = grpc::SslCredentials(ssl);
  }
  return std::make_unique<KaizenClient>(grpc::CreateCustomChannel(target, credentials, args),
                                        options);
}

std::unique_ptr<KaizenClient> KaizenClient::Connect(const std::string& target) {
  return Connect(target, Options());
}

KaizenClient::KaizenClient(std::shared_ptr<grpc::Channel> channel, Options options)
    : options_(options),
      datasets_(kaizen::v1::DatasetService::NewStub(channel)),
      models_(kaizen::v1::ModelService::NewStub(channel)),
      jobs_(kaizen::v1::FineTuneService::NewStub(channel)),
      inference_(kaizen::v1::InferenceService::NewStub(channel)) {}

void KaizenClient::Prepare(grpc::ClientContext* context, absl::Duration timeout) const {
  // As metadata rather than call credentials: gRPC sends call credentials
  // only over TLS, and a token on a loopback plaintext port is legitimate.
  if (!options_.token.empty()) {
    context->AddMetadata("authorization", "Bearer " + options_.token);
  }
  if (timeout == absl::InfiniteDuration()) timeout = options_.timeout;
  if (timeout != absl::InfiniteDuration()) {
    context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  }
}

// --- Datasets --------------------------------------------------------------

absl::StatusOr<kaizen::v1::Dataset> KaizenClient::UploadDataset(
    kaizen::v1::UploadDatasetHeader header, const std::vector<std::string>& files,
    const ProgressCallback& progress) {
  std::vector<UploadPart> parts;
  int64_t total = 0;
  RETURN_IF_ERROR(DescribeParts(files, &parts, &total));
  KeepGivenNames(header.parts(), &parts);
  header.clear_parts();
  for (const UploadPart& part : parts) *header.add_parts() = part;
  kaizen::v1::UploadDatasetRequest header_request;
  *header_request.mutable_header() = std::move(header);

  grpc::ClientContext context;
  Prepare(&context);
  auto start = [this](grpc::ClientContext* ctx, kaizen::v1::Dataset* out) {
    return datasets_->UploadDataset(ctx, out);
  };
  return RunUpload<kaizen::v1::UploadDatasetRequest, kaizen::v1::Dataset>(
      &context, start, header_request, files, parts, total, progress);
}

absl::StatusOr<kaizen::v1::Dataset> KaizenClient::GetDataset(const std::string& name) {
  kaizen::v1::GetDatasetRequest request;
  request.set_name(name);
  kaizen::v1::Dataset response;
  grpc::ClientContext context;
  Prepare(&context);
  RETURN_IF_ERROR(FromGrpcStatus(datasets_->GetDataset(&context, request, &response)));
  return response;
}

absl::StatusOr<kaizen::v1::ListDatasetsResponse> KaizenClient::ListDatasets(
    int32_t page_size, const std::string& page_token) {
  kaizen::v1::ListDatasetsRequest request;
  request.set_page_size(page_size);
  request.set_page_token(page_token);
  kaizen::v1::ListDatasetsResponse response;
  grpc::ClientContext context;
  Prepare(&context);
  RETURN_IF_ERROR(FromGrpcStatus(datasets_->ListDatasets(&context, request, &response)));
  return response;
}

absl::StatusOr<kaizen::v1::ListDatasetsResponse> KaizenClient::ListAllDatasets() {
  kaizen::v1::ListDatasetsResponse all;
  std::string token;
  for (int page = 0; page < kMaxPages; ++page) {
    ASSIGN_OR_RETURN(kaizen::v1::ListDatasetsResponse response,
                     ListDatasets(/*page_size=*/0, token));
    for (kaizen::v1::Dataset& dataset : *response.mutable_datasets()) {
      *all.add_datasets() = std::move(dataset);
    }
    if (response.next_page_token().empty()) return all;
    if (response.next_page_token() == token) break;
    token = response.next_page_token();
  }
  return absl::InternalError("ListDatasets kept returning a next_page_token; giving up");
}

absl::Status KaizenClient::DeleteDataset(const std::string& name) {
  kaizen::v1::DeleteDatasetRequest request;
  request.set_name(name);
  kaizen::v1::DeleteDatasetResponse response;
  grpc::ClientContext context;
  Prepare(&context);
  return FromGrpcStatus(datasets_->DeleteDataset(&context, request, &response));
}

// --- Models ----------------------------------------------------------------

absl::StatusOr<kaizen::v1::Model> KaizenClient::UploadModel(kaizen::v1::UploadModelHeader header,
                                                            const std::string& file,
                                                            const ProgressCallback& progress) {
  const std::vector<std::string> files = {file};
  std::vector<UploadPart> parts;
  int64_t total = 0;
  RETURN_IF_ERROR(DescribeParts(files, &parts, &total));
  KeepGivenNames(header.parts(), &parts);
  header.clear_parts();
  *header.add_parts() = parts[0];
  kaizen::v1::UploadModelRequest header_request;
  *header_request.mutable_header() = std::move(header);

  grpc::ClientContext context;
  Prepare(&context);
  auto start = [this](grpc::ClientContext* ctx, kaizen::v1::Model* out) {
    return models_->UploadModel(ctx, out);
  };
  return RunUpload<kaizen::v1::UploadModelRequest, kaizen::v1::Model>(
      &context, start, header_request, files, parts, total, progress);
}

absl::StatusOr<kaizen::v1::Model> KaizenClient::GetModel(const std::string& name, int64_t version) {
  kaizen::v1::GetModelRequest request;
  request.set_name(name);
  request.set_version(version);
  kaizen::v1::Model response;
  grpc::ClientContext context;
  Prepare(&context);
  RETURN_IF_ERROR(FromGrpcStatus(models_->GetModel(&context, request, &response)));
  return response;
}

absl::StatusOr<kaizen::v1::ListModelsResponse> KaizenClient::ListModels(
    int32_t page_size, const std::string& page_token, bool all_versions, const std::string& name) {
  kaizen::v1::ListModelsRequest request;
  request.set_page_size(page_size);
  request.set_page_token(page_token);
  request.set_all_versions(all_versions);
  request.set_name(name);
  kaizen::v1::ListModelsResponse response;
  grpc::ClientContext context;
  Prepare(&context);
  RETURN_IF_ERROR(FromGrpcStatus(models_->ListModels(&context, request, &response)));
  return response;
}

absl::StatusOr<kaizen::v1::ListModelsResponse> KaizenClient::ListAllModels(
    bool all_versions, const std::string& name) {
  kaizen::v1::ListModelsResponse all;
  std::string token;
  for (int page = 0; page < kMaxPages; ++page) {
    ASSIGN_OR_RETURN(kaizen::v1::ListModelsResponse response,
                     ListModels(/*page_size=*/0, token, all_versions, name));
    for (kaizen::v1::Model& model : *response.mutable_models()) {
      *all.add_models() = std::move(model);
    }
    if (response.next_page_token().empty()) return all;
    if (response.next_page_token() == token) break;
    token = response.next_page_token();
  }
  return absl::InternalError("ListModels kept returning a next_page_token; giving up");
}

absl::Status KaizenClient::DeleteModel(const std::string& name, int64_t version) {
  kaizen::v1::DeleteModelRequest request;
  request.set_name(name);
  request.set_version(version);
  kaizen::v1::DeleteModelResponse response;
  grpc::ClientContext context;
  Prepare(&context);
  return FromGrpcStatus(models_->DeleteModel(&context, request, &response));
}

absl::StatusOr<kaizen::v1::Evaluation> KaizenClient::EvaluateModel(const std::string& name,
                                                                   int64_t version,
                                                                   const std::string& dataset,
                                                                   int32_t top_k) {
  kaizen::v1::EvaluateModelRequest request;
  request.set_name(name);
  request.set_version(version);
  request.set_dataset(dataset);
  request.set_top_k(top_k);
  kaizen::v1::Evaluation response;
  grpc::ClientContext context;
  Prepare(&context);
  RETURN_IF_ERROR(FromGrpcStatus(models_->EvaluateModel(&context, request, &response)));
  return response;
}

absl::StatusOr<kaizen::v1::Model> KaizenClient::DownloadModel(const std::string& name,
                                                              int64_t version,
                                                              const std::string& out_path,
                                                              const ProgressCallback& progress) {
  kaizen::v1::DownloadModelRequest request;
  request.set_name(name);
  request.set_version(version);
  grpc::ClientContext context;
  Prepare(&context);
  std::unique_ptr<grpc::ClientReader<kaizen::v1::DownloadModelResponse>> reader =
      models_->DownloadModel(&context, request);

  // Stops the stream after a local or protocol error and reports it.
  auto fail = [&](absl::Status status) {
    context.TryCancel();
    reader->Finish();
    return status;
  };

  kaizen::v1::DownloadModelResponse message;
  if (!reader->Read(&message)) {
    RETURN_IF_ERROR(FromGrpcStatus(reader->Finish()));
    return absl::DataLossError("the download stream ended before the model");
  }
  if (!message.has_model()) {
    return fail(absl::InternalError("the download stream did not start with the model message"));
  }
  kaizen::v1::Model model = std::move(*message.mutable_model());

  common::AtomicFileWriter out;
  absl::Status opened = common::AtomicFileWriter::Open(out_path, &out);
  if (!opened.ok()) return fail(opened);

  common::Sha256 hasher;
  int64_t received = 0;
  std::string expected_sha256;
  bool got_sha256 = false;
  const int64_t total = model.size_bytes();
  if (progress) progress(0, total);
  while (reader->Read(&message)) {
    if (message.has_chunk() && !got_sha256) {
      hasher.Update(message.chunk());
      absl::Status appended = out.Append(message.chunk());
      if (!appended.ok()) return fail(appended);
      received += static_cast<int64_t>(message.chunk().size());
      if (progress) progress(received, total);
    } else if (message.payload_case() == kaizen::v1::DownloadModelResponse::kSha256 &&
               !got_sha256) {
      expected_sha256 = message.sha256();
      got_sha256 = true;
    } else {
      return fail(
          absl::InternalError("the download stream sent a message out of order (expected model, "
                              "chunks, then sha256)"));
    }
  }
  RETURN_IF_ERROR(FromGrpcStatus(reader->Finish()));
  if (!got_sha256) {
    return absl::DataLossError("the download stream ended without a sha256");
  }
  if (total > 0 && received != total) {
    return absl::DataLossError(
        absl::StrCat("received ", received, " bytes; the model has ", total));
  }
  const std::string actual_sha256 = hasher.HexDigest();
  if (actual_sha256 != expected_sha256) {
    return absl::DataLossError(absl::StrCat("checksum mismatch: received bytes hash to ",
                                            actual_sha256, ", the server sent ", expected_sha256));
  }
  RETURN_IF_ERROR(out.Commit());
  return model;
}

// --- Fine-tuning jobs ------------------------------------------------------

absl::StatusOr<kaizen::v1::Job> KaizenClient::StartFineTune(
    const kaizen::v1::StartFineTuneRequest& request) {
  kaizen::v1::Job response;
  grpc::ClientContext context;
  Prepare(&context);
  RETURN_IF_ERROR(FromGrpcStatus(jobs_->StartFineTune(&context, request, &response)));
  return response;
}

absl::StatusOr<kaizen::v1::Job> KaizenClient::GetJob(const std::string& id) {
  kaizen::v1::GetJobRequest request;
  request.set_id(id);
  kaizen::v1::Job response;
  grpc::ClientContext context;
  Prepare(&context);
  RETURN_IF_ERROR(FromGrpcStatus(jobs_->GetJob(&context, request, &response)));
  return response;
}

absl::StatusOr<kaizen::v1::ListJobsResponse> KaizenClient::ListJobs(
    const std::vector<kaizen::v1::JobState>& states, int32_t page_size,
    const std::string& page_token) {
  kaizen::v1::ListJobsRequest request;
  for (kaizen::v1::JobState state : states) request.add_states(state);
  request.set_page_size(page_size);
  request.set_page_token(page_token);
  kaizen::v1::ListJobsResponse response;
  grpc::ClientContext context;
  Prepare(&context);
  RETURN_IF_ERROR(FromGrpcStatus(jobs_->ListJobs(&context, request, &response)));
  return response;
}

absl::StatusOr<kaizen::v1::ListJobsResponse> KaizenClient::ListAllJobs(
    const std::vector<kaizen::v1::JobState>& states) {
  kaizen::v1::ListJobsResponse all;
  std::string token;
  for (int page = 0; page < kMaxPages; ++page) {
    ASSIGN_OR_RETURN(kaizen::v1::ListJobsResponse response,
                     ListJobs(states, /*page_size=*/0, token));
    for (kaizen::v1::Job& job : *response.mutable_jobs()) {
      *all.add_jobs() = std::move(job);
    }
    if (response.next_page_token().empty()) return all;
    if (response.next_page_token() == token) break;
    token = response.next_page_token();
  }
  return absl::InternalError("ListJobs kept returning a next_page_token; giving up");
}

absl::StatusOr<kaizen::v1::Job> KaizenClient::CancelJob(const std::string& id) {
  kaizen::v1::CancelJobRequest request;
  request.set_id(id);
  kaizen::v1::Job response;
  grpc::ClientContext context;
  Prepare(&context);
  RETURN_IF_ERROR(FromGrpcStatus(jobs_->CancelJob(&context, request, &response)));
  return response;
}

absl::StatusOr<kaizen::v1::Job> KaizenClient::PauseJob(const std::string& id) {
  kaizen::v1::PauseJobRequest request;
  request.set_id(id);
  kaizen::v1::Job response;
  grpc::ClientContext context;
  Prepare(&context);
  RETURN_IF_ERROR(FromGrpcStatus(jobs_->PauseJob(&context, request, &response)));
  return response;
}

absl::StatusOr<kaizen::v1::Job> KaizenClient::ResumeJob(const std::string& id) {
  kaizen::v1::ResumeJobRequest request;
  request.set_id(id);
  kaizen::v1::Job response;
  grpc::ClientContext context;
  Prepare(&context);
  RETURN_IF_ERROR(FromGrpcStatus(jobs_->ResumeJob(&context, request, &response)));
  return response;
}

absl::StatusOr<kaizen::v1::ExportJobResponse> KaizenClient::ExportJob(
    const kaizen::v1::ExportJobRequest& request) {
  kaizen::v1::ExportJobResponse response;
  grpc::ClientContext context;
  Prepare(&context);
  RETURN_IF_ERROR(FromGrpcStatus(jobs_->ExportJob(&context, request, &response)));
  return response;
}

absl::StatusOr<kaizen::v1::ListExportsResponse> KaizenClient::ListExports(
    const std::string& job_id) {
  kaizen::v1::ListExportsRequest request;
  request.set_job_id(job_id);
  kaizen::v1::ListExportsResponse response;
  grpc::ClientContext context;
  Prepare(&context);
  RETURN_IF_ERROR(FromGrpcStatus(jobs_->ListExports(&context, request, &response)));
  return response;
}

absl::Status KaizenClient::DeleteExport(const std::string& directory) {
  kaizen::v1::DeleteExportRequest request;
  request.set_directory(directory);
  kaizen::v1::DeleteExportResponse response;
  grpc::ClientContext context;
  Prepare(&context);
  return FromGrpcStatus(jobs_->DeleteExport(&context, request, &response));
}

absl::Status KaizenClient::WatchJob(const std::string& id, int64_t after_sequence,
                                    const JobEventCallback& on_event) {
  kaizen::v1::WatchJobRequest request;
  request.set_id(id);
  request.set_after_sequence(after_sequence);
  grpc::ClientContext context;
  Prepare(&context);
  std::unique_ptr<grpc::ClientReader<kaizen::v1::JobEvent>> reader =
      jobs_->WatchJob(&context, request);
  kaizen::v1::JobEvent event;
  while (reader->Read(&event)) {
    if (on_event) on_event(event);
  }
  return FromGrpcStatus(reader->Finish());
}

// --- Inference ---------------------------------------------------------------

absl::StatusOr<kaizen::v1::PredictResponse> KaizenClient::Predict(
    const kaizen::v1::PredictRequest& request, absl::Duration timeout) {
  kaizen::v1::PredictResponse response;
  grpc::ClientContext context;
  Prepare(&context, timeout);
  RETURN_IF_ERROR(FromGrpcStatus(inference_->Predict(&context, request, &response)));
  return response;
}

void KaizenClient::PredictAsync(grpc::ClientContext* context,
                                const kaizen::v1::PredictRequest* request,
                                kaizen::v1::PredictResponse* response, DoneCallback done,
                                absl::Duration timeout) {
  Prepare(context, timeout);
  // gRPC holds its own reference to the call until the callback returns, so
  // the callback may destroy `context`.
  inference_->async()->Predict(
      context, request, response,
      [done = std::move(done)](grpc::Status status) { done(FromGrpcStatus(status)); });
}

}  // namespace kaizen::client
