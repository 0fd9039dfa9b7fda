#include "server/api/finetune_service_impl.h"

#include <deque>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/api/request_scope.h"
#include "server/common/job_state.h"
#include "server/common/logging.h"
#include "server/http/stream_call.h"

namespace kaizen::api {

// The service name in grpc_service labels.
constexpr const char* kService = kaizen::v1::FineTuneService::service_full_name();

using kaizen::v1::JobEvent;

namespace {

class WatchReactor;

// What the event hub holds: forwards to the reactor until it is detached, so
// the hub never touches a reactor that gRPC has finished with.
class WatchSink : public jobs::EventSink {
 public:
  explicit WatchSink(WatchReactor* reactor) : reactor_(reactor) {}
  void OnEvent(const JobEvent& event) override;
  void OnReplay(const JobEvent& event) override;
  void OnEnd() override;
  void Detach() {
    absl::MutexLock lock(&mu_);
    reactor_ = nullptr;
  }

 private:
  absl::Mutex mu_;
  WatchReactor* reactor_ ABSL_GUARDED_BY(mu_);
};

// One WatchJob stream: its own queue, one write in flight at a time.
class WatchReactor : public grpc::ServerWriteReactor<JobEvent> {
 public:
  WatchReactor(jobs::JobEventHub* hub, metrics::Metrics* metrics, grpc::CallbackServerContext* ctx,
               std::string job_id, size_t max_backlog)
      : hub_(hub),
        scope_(metrics, kService, "WatchJob", ctx),
        job_id_(std::move(job_id)),
        max_backlog_(max_backlog),
        sink_(std::make_shared<WatchSink>(this)) {
    scope_.set_resource(job_id_);
  }

  std::shared_ptr<WatchSink> sink() { return sink_; }

  absl::Status Authorize(const auth::Authenticator* auth) { return scope_.Authorize(auth); }

  // `replayed`: a stored event of the replay that precedes the live ones.
  void Enqueue(const JobEvent& event, bool replayed) {
    bool start = false;
    {
      absl::MutexLock lock(&mu_);
      if (finishing_ || overflowed_) return;
      // The replay is what the watcher asked for (the hub has it in memory
      // already), not how far it fell behind: only live events count, or a
      // watcher resuming more than max_backlog_ events back could never
      // catch up (it would get one event per reconnection).
      if (!replayed && queue_.size() - replayed_queued_ >= max_backlog_) {
        // A slow watcher must not hold memory without bound, nor slow anyone.
        // The queue is only non-empty while a write is in flight, so its
        // completion (OnWriteDone) ends the stream.
        overflowed_ = true;
        return;
      }
      queue_.push_back(event);
      if (replayed) ++replayed_queued_;
      if (!writing_) start = writing_ = true;
    }
    if (start) StartWrite(&queue_.front());
  }

  void End() {
    bool finish = false;
    {
      absl::MutexLock lock(&mu_);
      ended_ = true;
      if (!writing_ && !finishing_) finish = finishing_ = true;
    }
    if (finish) DoFinish(absl::OkStatus());
  }

  void FinishWith(const absl::Status& status) {
    {
      absl::MutexLock lock(&mu_);
      if (finishing_) return;
      finishing_ = true;
    }
    DoFinish(status);
  }

  void OnWriteDone(bool ok) override {
    bool next = false, finish = false;
    absl::Status status;
    {
      absl::MutexLock lock(&mu_);
      if (!ok) {
        // The client went away; OnCancel/OnDone follow.
        writing_ = false;
        if (!finishing_) {
          finish = finishing_ = true;
          status = absl::CancelledError("the watcher went away");
        }
      } else {
        last_written_ = queue_.front().sequence();
        queue_.pop_front();
        // The replay is at the front of the queue.
        if (replayed_queued_ > 0) --replayed_queued_;
        if (overflowed_) {
          writing_ = false;
          if (!finishing_) {
            finish = finishing_ = true;
            status = OverflowStatus();
          }
        } else if (!queue_.empty()) {
          next = true;
        } else {
          writing_ = false;
          if (ended_ && !finishing_) finish = finishing_ = true;
        }
      }
    }
    if (next) StartWrite(&queue_.front());
    if (finish) DoFinish(status);
  }

  void OnCancel() override { FinishWith(absl::CancelledError("the watcher cancelled")); }

  void OnDone() override {
    hub_->Unsubscribe(job_id_, sink_.get());
    sink_->Detach();
    delete this;
  }

 private:
  absl::Status OverflowStatus() const {
    return absl::ResourceExhaustedError(
        absl::StrCat("this watcher fell more than ", max_backlog_,
                     " events behind; reconnect with after_sequence=", last_written_));
  }
  void DoFinish(const absl::Status& status) { Finish(scope_.Finish(status)); }

  jobs::JobEventHub* hub_;
  RequestScope scope_;
  std::string job_id_;
  size_t max_backlog_;
  std::shared_ptr<WatchSink> sink_;
  absl::Mutex mu_;
  std::deque<JobEvent> queue_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;
  bool overflowed_ ABSL_GUARDED_BY(mu_) = false;
  int64_t last_written_ ABSL_GUARDED_BY(mu_) = 0;
  // Replayed events still in queue_ (its front).
  size_t replayed_queued_ ABSL_GUARDED_BY(mu_) = 0;
};

void WatchSink::OnEvent(const JobEvent& event) {
  absl::MutexLock lock(&mu_);
  if (reactor_ == nullptr) return;
  reactor_->Enqueue(event, /*replayed=*/false);
}

void WatchSink::OnReplay(const JobEvent& event) {
  absl::MutexLock lock(&mu_);
  if (reactor_ == nullptr) return;
  reactor_->Enqueue(event, /*replayed=*/true);
}

void WatchSink::OnEnd() {
  absl::MutexLock lock(&mu_);
  if (reactor_ != nullptr) reactor_->End();
}

}  // namespace

grpc::Status FineTuneServiceImpl::StartFineTune(grpc::ServerContext* context,
                                                const kaizen::v1::StartFineTuneRequest* request,
                                                kaizen::v1::Job* response) {
  RequestScope scope(metrics_, kService, "StartFineTune", context);
  AUTHORIZE_OR_RETURN(scope, auth_);
  scope.set_resource(request->output_model());
  absl::StatusOr<kaizen::v1::Job> job = jobs_->Submit(*request);
  if (job.ok()) *response = *std::move(job);
  return scope.Finish(job.status());
}

grpc::Status FineTuneServiceImpl::GetJob(grpc::ServerContext* context,
                                         const kaizen::v1::GetJobRequest* request,
                                         kaizen::v1::Job* response) {
  RequestScope scope(metrics_, kService, "GetJob", context);
  AUTHORIZE_OR_RETURN(scope, auth_);
  scope.set_resource(request->id());
  absl::StatusOr<kaizen::v1::Job> job = jobs_->Get(request->id());
  if (job.ok()) *response = *std::move(job);
  return scope.Finish(job.status());
}

grpc::Status FineTuneServiceImpl::ListJobs(grpc::ServerContext* context,
                                           const kaizen::v1::ListJobsRequest* request,
                                           kaizen::v1::ListJobsResponse* response) {
  RequestScope scope(metrics_, kService, "ListJobs", context);
  AUTHORIZE_OR_RETURN(scope, auth_);
  auto list = jobs_->List(*request);
  if (list.ok()) *response = *std::move(list);
  return scope.Finish(list.status());
}

grpc::Status FineTuneServiceImpl::CancelJob(grpc::ServerContext* context,
                                            const kaizen::v1::CancelJobRequest* request,
                                            kaizen::v1::Job* response) {
  RequestScope scope(metrics_, kService, "CancelJob", context);
  AUTHORIZE_OR_RETURN(scope, auth_);
  scope.set_resource(request->id());
  absl::StatusOr<kaizen::v1::Job> job = jobs_->Cancel(request->id());
  if (job.ok()) *response = *std::move(job);
  return scope.Finish(job.status());
}

grpc::Status FineTuneServiceImpl::PauseJob(grpc::ServerContext* context,
                                           const kaizen::v1::PauseJobRequest* request,
                                           kaizen::v1::Job* response) {
  RequestScope scope(metrics_, kService, "PauseJob", context);
  AUTHORIZE_OR_RETURN(scope, auth_);
  scope.set_resource(request->id());
  absl::StatusOr<kaizen::v1::Job> job = jobs_->Pause(request->id());
  if (job.ok()) *response = *std::move(job);
  return scope.Finish(job.status());
}

grpc::Status FineTuneServiceImpl::ResumeJob(grpc::ServerContext* context,
                                            const kaizen::v1::ResumeJobRequest* request,
                                            kaizen::v1::Job* response) {
  RequestScope scope(metrics_, kService, "ResumeJob", context);
  AUTHORIZE_OR_RETURN(scope, auth_);
  scope.set_resource(request->id());
  absl::StatusOr<kaizen::v1::Job> job = jobs_->Resume(request->id());
  if (job.ok()) *response = *std::move(job);
  return scope.Finish(job.status());
}

grpc::Status FineTuneServiceImpl::ExportJob(grpc::ServerContext* context,
                                            const kaizen::v1::ExportJobRequest* request,
                                            kaizen::v1::ExportJobResponse* response) {
  RequestScope scope(metrics_, kService, "ExportJob", context);
  AUTHORIZE_OR_RETURN(scope, auth_);
  scope.set_resource(request->id());
  absl::StatusOr<kaizen::v1::ExportJobResponse> exported = jobs_->Export(*request);
  if (exported.ok()) *response = *std::move(exported);
  return scope.Finish(exported.status());
}

grpc::Status FineTuneServiceImpl::ListExports(grpc::ServerContext* context,
                                              const kaizen::v1::ListExportsRequest* request,
                                              kaizen::v1::ListExportsResponse* response) {
  RequestScope scope(metrics_, kService, "ListExports", context);
  AUTHORIZE_OR_RETURN(scope, auth_);
  scope.set_resource(request->job_id());
  absl::StatusOr<kaizen::v1::ListExportsResponse> listed = jobs_->ListExports(*request);
  if (listed.ok()) *response = *std::move(listed);
  return scope.Finish(listed.status());
}

grpc::Status FineTuneServiceImpl::DeleteExport(grpc::ServerContext* context,
                                               const kaizen::v1::DeleteExportRequest* request,
                                               kaizen::v1::DeleteExportResponse*) {
  RequestScope scope(metrics_, kService, "DeleteExport", context);
  AUTHORIZE_OR_RETURN(scope, auth_);
  scope.set_resource(request->directory());
  return scope.Finish(jobs_->DeleteExport(*request));
}

grpc::ServerWriteReactor<JobEvent>* FineTuneServiceImpl::WatchJob(
    grpc::CallbackServerContext* context, const kaizen::v1::WatchJobRequest* request) {
  auto* reactor =
      new WatchReactor(events_, metrics_, context, request->id(), options_.max_watcher_backlog);
  if (absl::Status denied = reactor->Authorize(auth_); !denied.ok()) {
    reactor->FinishWith(denied);
    return reactor;
  }
  if (request->after_sequence() < 0) {
    reactor->FinishWith(absl::InvalidArgumentError(
        absl::StrCat("after_sequence is ", request->after_sequence(), "; it must be >= 0")));
    return reactor;
  }
  absl::StatusOr<kaizen::v1::Job> job = jobs_->Get(request->id());
  if (!job.ok()) {
    reactor->FinishWith(job.status());
    return reactor;
  }
  // Accepted: the watcher learns it now, not at the first event (which may
  // be far off); the HTTP API answers 200 on it (server/http/stream_call.h).
  context->AddInitialMetadata(http::StreamCall::kAcceptedKey, "open");
  reactor->StartSendInitialMetadata();
  absl::Status st = events_->Subscribe(request->id(), request->after_sequence(),
                                       common::IsTerminal(job->state()), reactor->sink());
  if (!st.ok()) reactor->FinishWith(st);
  return reactor;
}

}  // namespace kaizen::api
