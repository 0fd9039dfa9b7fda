#include "server/jobs/job_event_hub.h"

#include <algorithm>
#include <cstdint>

#include "absl/time/clock.h"
#include "google/protobuf/util/time_util.h"
#include "server/common/job_state.h"
#include "server/common/logging.h"
#include "server/common/status_macros.h"

namespace kaizen::jobs {
namespace {

bool IsTerminalState(const kaizen::v1::JobEvent& e) {
  return e.event_case() == kaizen::v1::JobEvent::kState && common::IsTerminal(e.state());
}

}  // namespace

absl::Status JobEventHub::Deliver(const std::string& job_id, const kaizen::v1::JobEvent* latest,
                                  std::vector<std::shared_ptr<EventSink>>* ended) {
  auto it = sinks_.find(job_id);
  if (it == sinks_.end()) return absl::OkStatus();
  std::vector<Watcher>& watchers = it->second;
  int64_t lowest = latest ? latest->sequence() - 1 : INT64_MAX;
  for (const Watcher& w : watchers) lowest = std::min(lowest, w.cursor);
  std::vector<kaizen::v1::JobEvent> events;
  // Only when a watcher is behind (another replica wrote events) is the
  // store read; a lone server hands `latest` straight over.
  if (!latest || lowest < latest->sequence() - 1) {
    ASSIGN_OR_RETURN(events, store_->Events(job_id, lowest));
  }
  if (latest && (events.empty() || events.back().sequence() < latest->sequence())) {
    events.push_back(*latest);
  }
  bool terminal = false;
  for (const kaizen::v1::JobEvent& e : events) {
    for (Watcher& w : watchers) {
      if (e.sequence() <= w.cursor) continue;
      w.sink->OnEvent(e);
      w.cursor = e.sequence();
    }
    if (IsTerminalState(e)) terminal = true;
  }
  if (terminal) {
    for (Watcher& w : watchers) ended->push_back(std::move(w.sink));
    sinks_.erase(it);
  }
  return absl::OkStatus();
}

absl::StatusOr<kaizen::v1::JobEvent> JobEventHub::Publish(
    const std::string& job_id, kaizen::v1::JobEvent event,
    const std::function<absl::Status(const kaizen::v1::JobEvent&)>& after_store) {
  ASSIGN_OR_RETURN(std::optional<kaizen::v1::JobEvent> stored,
                   Store(
                       job_id, std::move(event),
                       [this](const kaizen::v1::JobEvent& e) -> absl::StatusOr<bool> {
                         RETURN_IF_ERROR(store_->AppendEvent(e));
                         return true;
                       },
                       after_store));
  return *std::move(stored);
}

absl::StatusOr<std::optional<kaizen::v1::JobEvent>> JobEventHub::PublishIf(
    const std::string& job_id, kaizen::v1::JobEvent event,
    const std::function<absl::StatusOr<bool>(const kaizen::v1::JobEvent&)>& store_event) {
  return Store(job_id, std::move(event), store_event, nullptr);
}

absl::StatusOr<std::optional<kaizen::v1::JobEvent>> JobEventHub::Store(
    const std::string& job_id, kaizen::v1::JobEvent event,
    const std::function<absl::StatusOr<bool>(const kaizen::v1::JobEvent&)>& store_event,
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
    absl::StatusOr<bool> appended = store_event(event);
    // Another replica wrote this job's events since (a takeover, a cancel
    // through it): number after the stored ones, a few times if it races on.
    for (int attempt = 0; attempt < 5 && absl::IsAlreadyExists(appended.status()); ++attempt) {
      ASSIGN_OR_RETURN(int64_t last, store_->LastSequence(job_id));
      event.set_sequence(last + 1);
      appended = store_event(event);
    }
    RETURN_IF_ERROR(appended.status());
    if (!*appended) return std::nullopt;
    it->second = event.sequence();
    if (after_store) after_store_status = after_store(event);
    if (absl::Status st = Deliver(job_id, &event, &ended); !st.ok()) {
      common::LogError("cannot read a job's events", {{"job", job_id}, {"error", st.ToString()}});
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
    // A cursor past the stored events still gets the next ones.
    int64_t cursor = after;
    if (backlog.empty()) {
      ASSIGN_OR_RETURN(int64_t last, store_->LastSequence(job_id));
      cursor = std::min(after, last);
    }
    for (const auto& e : backlog) {
      sink->OnReplay(e);
      cursor = e.sequence();
      if (IsTerminalState(e)) ended = true;
    }
    if (!ended) {
      sinks_[job_id].push_back(Watcher{sink, cursor});
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
  v.erase(
      std::remove_if(v.begin(), v.end(), [&](const Watcher& w) { return w.sink.get() == sink; }),
      v.end());
  if (v.empty()) sinks_.erase(it);
}

absl::Status JobEventHub::PollStore() {
  std::vector<std::shared_ptr<EventSink>> ended;
  absl::Status status;
  {
    absl::MutexLock lock(&mu_);
    std::vector<std::string> jobs;
    for (const auto& [id, watchers] : sinks_) jobs.push_back(id);
    for (const std::string& id : jobs) {
      if (absl::Status st = Deliver(id, nullptr, &ended); !st.ok()) status = st;
    }
  }
  for (const auto& sink : ended) sink->OnEnd();
  return status;
}

void JobEventHub::CloseAll() {
  absl::flat_hash_map<std::string, std::vector<Watcher>> all;
  {
    absl::MutexLock lock(&mu_);
    all.swap(sinks_);
  }
  for (auto& [id, watchers] : all) {
    for (auto& w : watchers) w.sink->OnEnd();
  }
}

size_t JobEventHub::subscriber_count(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  auto it = sinks_.find(job_id);
  return it == sinks_.end() ? 0 : it->second.size();
}

}  // namespace kaizen::jobs
