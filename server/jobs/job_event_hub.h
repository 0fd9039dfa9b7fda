// Fans each job's events out to any number of watchers. An event is given the
// job's next sequence number and persisted before it is dispatched, and a new
// watcher's replay from the store and its live registration happen under the
// same lock, so every watcher sees each event after its cursor exactly once.
// Sinks must not block: each WatchJob stream keeps its own queue.
//
// With several replicas on one database, another replica's events reach this
// one's watchers through PollStore(), and each watcher keeps its own cursor,
// so an event is still delivered once, in sequence order, whichever replica
// wrote it.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "kaizen/v1/finetune_service.pb.h"
#include "server/store/job_store.h"

namespace kaizen::jobs {

class EventSink {
 public:
  virtual ~EventSink() = default;
  // Called with the hub's lock held: enqueue and return.
  virtual void OnEvent(const kaizen::v1::JobEvent& event) = 0;
  // A stored event replayed to a new subscriber, before any live one; same
  // rules as OnEvent. A sink that bounds how far its watcher may fall behind
  // live events does not count these: the watcher asked for them.
  virtual void OnReplay(const kaizen::v1::JobEvent& event) { OnEvent(event); }
  // The job reached a terminal state (after its last event), or the hub is
  // shutting down.
  virtual void OnEnd() = 0;
};

class JobEventHub {
 public:
  explicit JobEventHub(store::JobStore* store) : store_(store) {}

  // Stamps `event` with the next sequence and the time, persists it and
  // dispatches it. A terminal state event ends every subscription of the job.
  // `after_store`, when given, runs with the stored event after it is
  // persisted and before anyone is told (under the hub's lock, so that a new
  // subscriber sees both or neither); the event is dispatched even when it
  // fails, and its error is returned.
  absl::StatusOr<kaizen::v1::JobEvent> Publish(
      const std::string& job_id, kaizen::v1::JobEvent event,
      const std::function<absl::Status(const kaizen::v1::JobEvent&)>& after_store = nullptr);

  // Publish for an event that is stored together with a conditional write:
  // `store_event` stores the numbered event itself (in one transaction with
  // its write, e.g. JobStore::AppendEventIf) or declines (false), in which
  // case nothing is stored or told, its sequence is not used, and nullopt
  // comes back.
  absl::StatusOr<std::optional<kaizen::v1::JobEvent>> PublishIf(
      const std::string& job_id, kaizen::v1::JobEvent event,
      const std::function<absl::StatusOr<bool>(const kaizen::v1::JobEvent&)>& store_event);

  // Replays the stored events with sequence > `after`, then streams live ones.
  // When `job_is_terminal`, the replay is everything and the sink ends at once.
  absl::Status Subscribe(const std::string& job_id, int64_t after, bool job_is_terminal,
                         std::shared_ptr<EventSink> sink);
  void Unsubscribe(const std::string& job_id, const EventSink* sink);

  // Delivers the stored events that other replicas wrote since each watcher's
  // cursor (ending the watches of jobs that reached a terminal state).
  absl::Status PollStore();

  // Ends every subscription (server shutdown).
  void CloseAll();

  size_t subscriber_count(const std::string& job_id);

 private:
  struct Watcher {
    std::shared_ptr<EventSink> sink;
    int64_t cursor = 0;  // the last sequence it was given
  };
  // Gives `job_id`'s watchers the stored events after the smallest cursor up
  // to `upto` (0: all), then `latest` if given; true when one of them was a
  // terminal state, which ends the watches (moved to `ended`).
  absl::Status Deliver(const std::string& job_id, const kaizen::v1::JobEvent* latest,
                       std::vector<std::shared_ptr<EventSink>>* ended)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Both Publish forms: numbers the event after the last stored one (again
  // when another replica took that number meanwhile), stores it through
  // `store_event`, runs `after_store`, tells the watchers.
  absl::StatusOr<std::optional<kaizen::v1::JobEvent>> Store(
      const std::string& job_id, kaizen::v1::JobEvent event,
      const std::function<absl::StatusOr<bool>(const kaizen::v1::JobEvent&)>& store_event,
      const std::function<absl::Status(const kaizen::v1::JobEvent&)>& after_store);

  store::JobStore* store_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, int64_t> last_sequence_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::vector<Watcher>> sinks_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kaizen::jobs
