// kaizen.v1.FineTuneService: unary RPCs on the sync API (they are short), and
// WatchJob on the callback API so that any number of watchers share the
// server's threads instead of holding one each.
#pragma once

#include "kaizen/v1/finetune_service.grpc.pb.h"
#include "server/auth/authenticator.h"
#include "server/jobs/job_event_hub.h"
#include "server/jobs/job_manager.h"
#include "server/metrics/metrics.h"

namespace kaizen::api {

class FineTuneServiceImpl final : public kaizen::v1::FineTuneService::WithCallbackMethod_WatchJob<
                                      kaizen::v1::FineTuneService::Service> {
 public:
  struct Options {
    // Events a watcher may fall behind before its stream ends with
    // RESOURCE_EXHAUSTED (it can resume with after_sequence).
    size_t max_watcher_backlog = 10000;
  };

  FineTuneServiceImpl(jobs::JobManager* jobs, jobs::JobEventHub* events, metrics::Metrics* metrics,
                      const auth::Authenticator* auth, Options options)
      : jobs_(jobs), events_(events), metrics_(metrics), auth_(auth), options_(options) {}

  grpc::Status StartFineTune(grpc::ServerContext* context,
                             const kaizen::v1::StartFineTuneRequest* request,
                             kaizen::v1::Job* response) override;
  grpc::Status GetJob(grpc::ServerContext* context, const kaizen::v1::GetJobRequest* request,
                      kaizen::v1::Job* response) override;
  grpc::Status ListJobs(grpc::ServerContext* context, const kaizen::v1::ListJobsRequest* request,
                        kaizen::v1::ListJobsResponse* response) override;
  grpc::Status CancelJob(grpc::ServerContext* context, const kaizen::v1::CancelJobRequest* request,
                         kaizen::v1::Job* response) override;
  grpc::Status PauseJob(grpc::ServerContext* context, const kaizen::v1::PauseJobRequest* request,
                        kaizen::v1::Job* response) override;
  grpc::Status ResumeJob(grpc::ServerContext* context, const kaizen::v1::ResumeJobRequest* request,
                         kaizen::v1::Job* response) override;
  grpc::Status ExportJob(grpc::ServerContext* context, const kaizen::v1::ExportJobRequest* request,
                         kaizen::v1::ExportJobResponse* response) override;
  grpc::Status ListExports(grpc::ServerContext* context,
                           const kaizen::v1::ListExportsRequest* request,
                           kaizen::v1::ListExportsResponse* response) override;
  grpc::Status DeleteExport(grpc::ServerContext* context,
                            const kaizen::v1::DeleteExportRequest* request,
                            kaizen::v1::DeleteExportResponse* response) override;
  grpc::ServerWriteReactor<kaizen::v1::JobEvent>* WatchJob(
      grpc::CallbackServerContext* context, const kaizen::v1::WatchJobRequest* request) override;

 private:
  jobs::JobManager* jobs_;
  jobs::JobEventHub* events_;
  metrics::Metrics* metrics_;
  const auth::Authenticator* auth_;
  Options options_;
};

}  // namespace kaizen::api
