#include "server/jobs/job_event_hub.h"

#include <algorithm>

#include "absl/time/clock.h"
#include "google/protobuf/util/time_util.h"
#include "server/common/job_state.h"
#include "server/common/status_macros.h"

namespace kaizen::jobs {

absl::StatusOr<kaizen::v1::JobEvent> JobEventHub::Publish(
    const std::string& job_id, kaizen::v1::JobEvent event,
    const std::function<absl::Status(const kaizen::v1::JobEvent&)>& after_store) {
  std::vector<std::shared_ptr<EventSink>> ended;
  absl::Status after_store_status;
  {
    absl::MutexLock lock(&mu_);
    auto it = last_sequence_.find(job_id);
    if (it == last_sequence_.end()) {
      ASSIGN_OR_RETURN(int64_t last, store_->LastSequence(job_id));
      it = last_sequence_.emplace(job_id, last).first;
    }
    event.set_job_id(job_id);
    event.set_sequence(it->second + 1);
    *event.mutable_time() =
        google::protobuf::util::TimeUtil::MillisecondsToTimestamp(absl::ToUnixMillis(absl::Now()));
    RETURN_IF_ERROR(store_->AppendEvent(event));
    it->second = event.sequence();
    if (after_store) after_store_status = after_store(event);
    auto sinks = sinks_.find(job_id);
    if (sinks != sinks_.end()) {
      for (const auto& sink : sinks->second) sink->OnEvent(event);
      if (event.event_case() == kaizen::v1::JobEvent::kState && common::IsTerminal(event.state())) {
        ended = std::move(sinks->second);
        sinks_.erase(sinks);
      }
    }
  }
  for (const auto& sink : ended) sink->OnEnd();
  if (!after_store_status.ok()) return after_store_status;
  return event;
}

absl::Status JobEventHub::Subscribe(const std::string& job_id, int64_t after, bool job_is_terminal,
                                    std::shared_ptr<EventSink> sink) {
  {
    absl::MutexLock lock(&mu_);
    ASSIGN_OR_RETURN(std::vector<kaizen::v1::JobEvent> backlog, store_->Events(job_id, after));
    bool ended = job_is_terminal;
    for (const auto& e : backlog) {
      sink->OnReplay(e);
      if (e.event_case() == kaizen::v1::JobEvent::kState && common::IsTerminal(e.state()))
        ended = true;
    }
    if (!ended) {
      sinks_[job_id].push_back(sink);
      return absl::OkStatus();
    }
  }
  sink->OnEnd();
  return absl::OkStatus();
}

void JobEventHub::Unsubscribe(const std::string& job_id, const EventSink* sink) {
  absl::MutexLock lock(&mu_);
  auto it = sinks_.find(job_id);
  if (it == sinks_.end()) return;
  auto& v = it->second;
  v.erase(std::remove_if(v.begin(), v.end(), [&](const auto& s) { return s.get() == sink; }),
          v.end());
  if (v.empty()) sinks_.erase(it);
}

void JobEventHub::CloseAll() {
  absl::flat_hash_map<std::string, std::vector<std::shared_ptr<EventSink>>> all;
  {
    absl::MutexLock lock(&mu_);
    all.swap(sinks_);
  }
  for (auto& [id, sinks] : all) {
    for (auto& s : sinks) s->OnEnd();
  }
}

size_t JobEventHub::subscriber_count(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  auto it = sinks_.find(job_id);
  return it == sinks_.end() ? 0 : it->second.size();
}

}  // namespace kaizen::jobs
