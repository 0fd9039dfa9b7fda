// Counts the in-process gRPC calls the JSON API has under way, until each
// call's objects are destroyed, so that the API's owner waits for the last
// before it goes. A call's last reference may drop on one of gRPC's own
// threads just after its answer went out (the completion callback returns
// after it responds), and its ClientContext holds the channel: were that
// the last gRPC object alive, gRPC would shut its library down on a thread
// of its own while the process exits, and abort ("ref_counted.h: prior >
// 0"). Waiting here keeps the last release on the owner's thread.
#pragma once

#include <memory>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace kaizen::http {

class CallTracker {
 public:
  // Held by a call's object as its first member (destroyed last): the call
  // counts as under way while it lives. Movable; a moved-from token counts
  // nothing.
  class Token {
   public:
    Token() = default;
    Token(Token&& other) noexcept = default;
    Token& operator=(Token&& other) noexcept;
    ~Token();

   private:
    friend class CallTracker;
    struct Counter;
    explicit Token(std::shared_ptr<Counter> counter) : counter_(std::move(counter)) {}
    std::shared_ptr<Counter> counter_;
  };

  CallTracker();

  // A call starts.
  Token Enter();
  // The calls under way now.
  int live() const;
  // Waits until no call is under way, or for `timeout`; whether none is.
  bool WaitIdle(absl::Duration timeout) const;

 private:
  std::shared_ptr<Token::Counter> counter_;
};

}  // namespace kaizen::http
