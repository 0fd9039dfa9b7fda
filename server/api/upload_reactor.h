// One upload stream (UploadDataset, UploadModel: a header, byte chunks, a
// sha256 trailer) on gRPC's callback API, driving a store's Upload object.
//
// No thread waits on the client: reads are asynchronous, a grpc::Alarm ends a
// stream that is idle or past its deadline (DEADLINE_EXCEEDED with the limit
// and its flag in the message), and the store work (writing chunks, ingest,
// inspection) runs on the UploadRunner's threads, one message at a time. An
// ended stream first destroys its Upload (temporary files, name reservation,
// a decoding thread), on the runner, and gives its slot back, then sends the
// status, so a client that hears the status can upload the same name again
// at once.
#pragma once

#include <grpcpp/alarm.h>
#include <grpcpp/grpcpp.h>

#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "server/api/request_scope.h"
#include "server/api/upload_runner.h"

namespace kaizen::api {

// `Upload` has Append(bytes) -> Status and Finish(sha256) -> StatusOr<Result>.
template <typename Request, typename Result, typename Upload>
class UploadReactor final : public grpc::ServerReadReactor<Request> {
 public:
  using Header = std::decay_t<decltype(std::declval<Request>().header())>;
  // Validates the header and reserves the name (runs on the runner).
  using BeginFn = std::function<absl::StatusOr<std::unique_ptr<Upload>>(const Header&)>;
  // Told about a stored upload and its byte count before the client is.
  using StoredFn = std::function<void(const Result& result, int64_t bytes)>;

  // Starts the stream, or ends it at once when the caller may not upload
  // (UNAUTHENTICATED, PERMISSION_DENIED: no slot taken, nothing read) or with
  // RESOURCE_EXHAUSTED when every upload slot is taken. gRPC owns the
  // returned reactor.
  static UploadReactor* Start(grpc::CallbackServerContext* context, Result* response,
                              UploadRunner* runner, metrics::Metrics* metrics,
                              const auth::Authenticator* auth, const char* service,
                              const char* method, BeginFn begin, StoredFn stored) {
    auto* r = new UploadReactor(context, response, runner, metrics, service, method,
                                std::move(begin), std::move(stored));
    absl::Status admitted = r->scope_.Authorize(auth);
    if (admitted.ok()) admitted = runner->Admit();
    absl::MutexLock lock(&r->mu_);
    if (!admitted.ok()) {
      r->ended_ = true;  // an OnCancel after this sends nothing more
      r->SendFinish(admitted);
      return r;
    }
    r->admitted_ = true;
    r->ReadNext();
    r->ArmAlarm();
    return r;
  }

  void OnReadDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    reading_ = false;
    if (ended_) return;
    if (!ok) {
      // The client half-closed (or went away: OnCancel ends the stream).
      if (context_->IsCancelled()) return;
      receiving_ = false;
      working_ = true;
      runner_->Run([this] { Conclude(); });
      return;
    }
    working_ = true;
    runner_->Run([this] { AfterWork(Process()); });
  }

  void OnCancel() override { End(absl::CancelledError("the client cancelled the upload")); }

  void OnDone() override {
    bool last;
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
      if (alarm_armed_) alarm_.Cancel();  // its callback (ok=false) deletes
      last = Unreferenced();
    }
    if (last) delete this;
  }

 private:
  UploadReactor(grpc::CallbackServerContext* context, Result* response, UploadRunner* runner,
                metrics::Metrics* metrics, const char* service, const char* method, BeginFn begin,
                StoredFn stored)
      : context_(context),
        response_(response),
        runner_(runner),
        scope_(metrics, service, method, context),
        begin_(std::move(begin)),
        stored_(std::move(stored)),
        start_(absl::Now()) {}

  bool Unreferenced() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return done_ && !alarm_armed_ && !working_;
  }

  void ReadNext() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    reading_ = true;
    read_since_ = absl::Now();
    this->StartRead(&msg_);
  }

  // One alarm at a time, re-armed from its own callback while the stream is
  // receiving: at the earlier of the idle limit (counted only while the
  // server waits for the client) and the deadline.
  void ArmAlarm() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const UploadRunner::Options& o = runner_->options();
    absl::Time at = start_ + o.deadline;
    at = std::min(at, (reading_ ? read_since_ : absl::Now()) + o.idle_timeout);
    alarm_armed_ = true;
    alarm_.Set(absl::ToChronoTime(at), [this](bool ok) { OnAlarm(ok); });
  }

  void OnAlarm(bool ok) {
    bool last = false;
    {
      absl::MutexLock lock(&mu_);
      alarm_armed_ = false;
      if (ok && !ended_ && receiving_) {
        const absl::Status expired = Expired(absl::Now());
        if (expired.ok()) {
          ArmAlarm();
        } else {
          // Under the same lock: once it is released, work on the runner
          // may finish the call and OnDone delete this.
          EndLocked(expired);
        }
        return;
      }
      last = Unreferenced();
    }
    if (last) delete this;
  }

  absl::Status Expired(absl::Time now) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const UploadRunner::Options& o = runner_->options();
    if (now >= start_ + o.deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "the upload stream was still sending after ", absl::FormatDuration(o.deadline),
          " (--upload_deadline_seconds), ", bytes_, " bytes in; nothing was kept"));
    }
    if (reading_ && now - read_since_ >= o.idle_timeout) {
      return absl::DeadlineExceededError(absl::StrCat(
          "no upload message arrived for ", absl::FormatDuration(o.idle_timeout),
          " (--upload_idle_timeout_seconds) after ", bytes_, " bytes; nothing was kept"));
    }
    return absl::OkStatus();
  }

  // Runs on the runner; handles msg_ (no read is pending meanwhile). An
  // exception from the store (std::bad_alloc) ends the stream with a status
  // rather than the process.
  absl::Status Process() {
    try {
      return ProcessMessage();
    } catch (const std::exception& e) {
      return absl::InternalError(absl::StrCat("the upload failed: ", e.what()));
    }
  }

  absl::Status ProcessMessage() {
    if (trailer_seen_) {
      return absl::InvalidArgumentError("the sha256 trailer must be the last message");
    }
    if (upload_ == nullptr) {
      if (msg_.payload_case() != Request::kHeader) {
        return absl::InvalidArgumentError("the first message of an upload must be a header");
      }
      scope_.set_resource(msg_.header().name());
      absl::StatusOr<std::unique_ptr<Upload>> upload = begin_(msg_.header());
      if (!upload.ok()) return upload.status();
      upload_ = *std::move(upload);
      return absl::OkStatus();
    }
    switch (msg_.payload_case()) {
      case Request::kChunk:
        bytes_ += static_cast<int64_t>(msg_.chunk().size());
        return upload_->Append(msg_.chunk());
      case Request::kSha256:
        trailer_seen_ = true;
        sha256_ = msg_.sha256();
        return absl::OkStatus();
      case Request::kHeader:
        return absl::InvalidArgumentError("an upload carries exactly one header, first");
      default:
        return absl::InvalidArgumentError("upload message has no payload");
    }
  }

  // Runs on the runner once the client has half-closed.
  void Conclude() {
    absl::Status status;
    if (upload_ == nullptr) {
      status =
          absl::InvalidArgumentError("upload stream is empty; the first message must be a header");
    } else if (!trailer_seen_) {
      status =
          absl::InvalidArgumentError(absl::StrCat("upload stream is truncated: it ended after ",
                                                  bytes_, " bytes without the sha256 trailer"));
    } else {
      try {
        absl::StatusOr<Result> result = upload_->Finish(sha256_);  // ingest or inspection
        status = result.status();
        if (result.ok()) {
          stored_(*result, bytes_);
          *response_ = *std::move(result);
        }
      } catch (const std::exception& e) {
        status = absl::InternalError(absl::StrCat("the upload failed: ", e.what()));
      }
    }
    {
      absl::MutexLock lock(&mu_);
      if (!ended_) {
        ended_ = true;
        deferred_ = status;
      }
    }
    ReleaseAndSend();
  }

  // Runs on the runner after Process().
  void AfterWork(const absl::Status& status) {
    {
      absl::MutexLock lock(&mu_);
      if (!ended_ && status.ok()) {
        working_ = false;
        ReadNext();
        return;
      }
      if (!ended_) {
        ended_ = true;
        deferred_ = status;
      }
    }
    ReleaseAndSend();
  }

  // Ends the stream from the alarm or OnCancel. While work runs on the
  // runner, that work sends the status when it returns; otherwise work is
  // scheduled to: freeing the upload may wait for its decoding thread to
  // stop, which gRPC's callback threads must not.
  void End(const absl::Status& status) {
    absl::MutexLock lock(&mu_);
    EndLocked(status);
  }

  void EndLocked(const absl::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (ended_) return;
    ended_ = true;
    deferred_ = status;
    if (working_) return;
    working_ = true;
    runner_->Run([this] { ReleaseAndSend(); });
  }

  // Runs on the runner once the status is decided, while working_ keeps
  // everything else off upload_: frees what the upload holds (temporary
  // files, the name, a decoding thread) without the lock, so that gRPC's
  // callbacks do not wait on it, then sends deferred_. The lock keeps
  // OnDone's bookkeeping after this; gRPC runs OnDone on another thread.
  void ReleaseAndSend() {
    upload_.reset();
    absl::MutexLock lock(&mu_);
    working_ = false;
    SendFinish(deferred_);
  }

  void SendFinish(const absl::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (admitted_) runner_->Release();
    admitted_ = false;
    this->Finish(scope_.Finish(status));
  }

  grpc::CallbackServerContext* context_;
  Result* response_;
  UploadRunner* runner_;
  RequestScope scope_;
  BeginFn begin_;
  StoredFn stored_;
  const absl::Time start_;
  grpc::Alarm alarm_;
  // Touched by one piece of runner work at a time, never concurrently.
  Request msg_;
  std::unique_ptr<Upload> upload_;
  int64_t bytes_ = 0;
  bool trailer_seen_ = false;
  std::string sha256_;

  absl::Mutex mu_;
  bool admitted_ ABSL_GUARDED_BY(mu_) = false;
  bool reading_ ABSL_GUARDED_BY(mu_) = false;  // a read waits for the client
  absl::Time read_since_ ABSL_GUARDED_BY(mu_);
  bool receiving_ ABSL_GUARDED_BY(mu_) = true;  // the client has not half-closed
  bool working_ ABSL_GUARDED_BY(mu_) = false;   // work is on the runner
  bool ended_ ABSL_GUARDED_BY(mu_) = false;     // the status is decided
  absl::Status deferred_ ABSL_GUARDED_BY(mu_);
  bool alarm_armed_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;  // OnDone ran
};

}  // namespace kaizen::api
