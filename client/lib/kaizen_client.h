// A thin C++ client for Kaizen's gRPC API: it streams uploads and downloads
// in chunks with a SHA-256 trailer, follows fine-tuning jobs' event streams,
// asks for predictions (blocking, or on gRPC's callback API for load
// generators), and turns every grpc::Status into an absl::Status with the
// same code and message. One object per channel; the methods may be called
// from several threads at once.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "kaizen/v1/dataset_service.grpc.pb.h"
#include "kaizen/v1/finetune_service.grpc.pb.h"
#include "kaizen/v1/inference_service.grpc.pb.h"
#include "kaizen/v1/model_service.grpc.pb.h"

namespace kaizen::client {

// Called after each chunk with the bytes moved so far and the total expected.
using ProgressCallback = std::function<void(int64_t sent, int64_t total)>;

// Called with each event of a WatchJob stream, in order, on the caller's
// thread.
using JobEventCallback = std::function<void(const kaizen::v1::JobEvent&)>;

// Called once when an asynchronous call ends, on one of gRPC's threads; it
// must not block.
using DoneCallback = std::function<void(absl::Status)>;

// Size of the `chunk` messages sent and of the reads from disk; well below the
// default 4 MiB gRPC receive limit.
inline constexpr int64_t kChunkBytes = 256 * 1024;

// The same code and message as `status`.
absl::Status FromGrpcStatus(const grpc::Status& status);

class KaizenClient {
 public:
  struct Options {
    // Deadline of each call, uploads and downloads included; infinite: none.
    absl::Duration timeout = absl::InfiniteDuration();
    // Bearer token sent with every call ("authorization: Bearer ..."); empty:
    // none.
    std::string token;
    // TLS: on when `tls` is set or any PEM below is given. `tls_ca_pem`
    // verifies the server (empty: the system's roots); the certificate and
    // key are the client's, for mutual TLS.
    bool tls = false;
    std::string tls_ca_pem;
    std::string tls_cert_pem;
    std::string tls_key_pem;
  };

  // A channel to `target` ("host:port"), plaintext or TLS as `options` say,
  // that accepts responses up to 64 MiB. Connects lazily: a dead server or a
  // failed handshake shows up as UNAVAILABLE on the first call.
  static std::unique_ptr<KaizenClient> Connect(const std::string& target, Options options);
  static std::unique_ptr<KaizenClient> Connect(const std::string& target);

  explicit KaizenClient(std::shared_ptr<grpc::Channel> channel)
      : KaizenClient(std::move(channel), Options()) {}
  KaizenClient(std::shared_ptr<grpc::Channel> channel, Options options);

  // --- Datasets ------------------------------------------------------------

  // Streams `files` (in order) as the parts of one upload. `header.parts` is
  // filled from the files (base name and size); a caller that already put
  // one part per file there keeps its non-empty file names. The rest of the
  // header is sent as given.
  absl::StatusOr<kaizen::v1::Dataset> UploadDataset(kaizen::v1::UploadDatasetHeader header,
                                                    const std::vector<std::string>& files,
                                                    const ProgressCallback& progress = nullptr);
  absl::StatusOr<kaizen::v1::Dataset> GetDataset(const std::string& name);
  absl::StatusOr<kaizen::v1::ListDatasetsResponse> ListDatasets(int32_t page_size = 0,
                                                                const std::string& page_token = "");
  // Follows next_page_token to the end; the result holds every dataset and an
  // empty next_page_token.
  absl::StatusOr<kaizen::v1::ListDatasetsResponse> ListAllDatasets();
  absl::Status DeleteDataset(const std::string& name);

  // --- Models --------------------------------------------------------------

  // Streams the TorchScript `file`; `header.parts` is filled from it.
  absl::StatusOr<kaizen::v1::Model> UploadModel(kaizen::v1::UploadModelHeader header,
                                                const std::string& file,
                                                const ProgressCallback& progress = nullptr);
  // Version 0 means the newest.
  absl::StatusOr<kaizen::v1::Model> GetModel(const std::string& name, int64_t version = 0);
  // `all_versions`: one entry per version; `name`: only that model's versions.
  absl::StatusOr<kaizen::v1::ListModelsResponse> ListModels(int32_t page_size = 0,
                                                            const std::string& page_token = "",
                                                            bool all_versions = false,
                                                            const std::string& name = "");
  absl::StatusOr<kaizen::v1::ListModelsResponse> ListAllModels(bool all_versions = false,
                                                               const std::string& name = "");
  // Version 0 deletes every version.
  absl::Status DeleteModel(const std::string& name, int64_t version = 0);
  // Version 0 means the newest; top_k 0 means 5.
  absl::StatusOr<kaizen::v1::Evaluation> EvaluateModel(const std::string& name, int64_t version,
                                                       const std::string& dataset,
                                                       int32_t top_k = 0);
  // Writes the model's TorchScript file to `out_path` atomically (temporary
  // file, fsync, rename) after checking the streamed SHA-256; on a mismatch
  // nothing is left at `out_path` and the result is DATA_LOSS.
  absl::StatusOr<kaizen::v1::Model> DownloadModel(const std::string& name, int64_t version,
                                                  const std::string& out_path,
                                                  const ProgressCallback& progress = nullptr);

  // --- Fine-tuning jobs -----------------------------------------------------

  // Queues a job; a request_id seen before returns that earlier job.
  absl::StatusOr<kaizen::v1::Job> StartFineTune(const kaizen::v1::StartFineTuneRequest& request);
  absl::StatusOr<kaizen::v1::Job> GetJob(const std::string& id);
  // `states`: only jobs in these states; empty means all.
  absl::StatusOr<kaizen::v1::ListJobsResponse> ListJobs(
      const std::vector<kaizen::v1::JobState>& states = {}, int32_t page_size = 0,
      const std::string& page_token = "");
  absl::StatusOr<kaizen::v1::ListJobsResponse> ListAllJobs(
      const std::vector<kaizen::v1::JobState>& states = {});
  // Returns the job as the server left it: a running job may still show
  // RUNNING until its current step ends.
  absl::StatusOr<kaizen::v1::Job> CancelJob(const std::string& id);
  // Asks the job to pause (see FineTuneService.PauseJob): a queued job is
  // PAUSED at once; a running one comes back RUNNING with pause_reason set
  // and is PAUSED once its current step and checkpoint are done.
  absl::StatusOr<kaizen::v1::Job> PauseJob(const std::string& id);
  // Puts a PAUSED job back in the queue at its place (QUEUED).
  absl::StatusOr<kaizen::v1::Job> ResumeJob(const std::string& id);
  // Exports the job as a PyTorchJob (see FineTuneService.ExportJob).
  absl::StatusOr<kaizen::v1::ExportJobResponse> ExportJob(
      const kaizen::v1::ExportJobRequest& request);
  // The exports (all, or `job_id`'s), newest first; removes one by the
  // directory ListExports names (FineTuneService.ListExports, DeleteExport).
  absl::StatusOr<kaizen::v1::ListExportsResponse> ListExports(const std::string& job_id = "");
  absl::Status DeleteExport(const std::string& directory);
  // Streams the job's events after `after_sequence` (0: from the first) to
  // `on_event` and blocks until the stream ends, which the server does after
  // the terminal state. Returns the stream's final status. To resume after a
  // broken stream, call again with the `sequence` of the last event seen.
  // The per-call deadline applies to the whole stream.
  absl::Status WatchJob(const std::string& id, int64_t after_sequence,
                        const JobEventCallback& on_event);

  // --- Inference -------------------------------------------------------------

  // The top classes of every input, from the version the request pins or its
  // policy picks; the response names the version that answered. A finite
  // `timeout` replaces Options::timeout for this call.
  absl::StatusOr<kaizen::v1::PredictResponse> Predict(
      const kaizen::v1::PredictRequest& request, absl::Duration timeout = absl::InfiniteDuration());
  // The same without blocking a thread: `done` gets the call's status once
  // `*response` is filled (or the call failed). `context` (fresh, one per
  // call), `request` and `response` belong to the caller and must outlive the
  // call; `done` may destroy them and may start the next call.
  void PredictAsync(grpc::ClientContext* context, const kaizen::v1::PredictRequest* request,
                    kaizen::v1::PredictResponse* response, DoneCallback done,
                    absl::Duration timeout = absl::InfiniteDuration());

 private:
  // Applies the per-call deadline: `timeout` when finite, else
  // Options::timeout.
  void Prepare(grpc::ClientContext* context,
               absl::Duration timeout = absl::InfiniteDuration()) const;

  Options options_;
  std::unique_ptr<kaizen::v1::DatasetService::Stub> datasets_;
  std::unique_ptr<kaizen::v1::ModelService::Stub> models_;
  std::unique_ptr<kaizen::v1::FineTuneService::Stub> jobs_;
  std::unique_ptr<kaizen::v1::InferenceService::Stub> inference_;
};

}  // namespace kaizen::client
