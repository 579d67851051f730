#pragma once
// Who is in the group, as it changes: events when a worker joins, leaves or is lost, and the
// subscription that receives them (Agent::on_membership, remora::on_membership).
//
//   remora::Subscription sub = remora::on_membership([](const remora::MembershipEvent& e) {
//     if (e.kind == remora::MembershipEvent::lost) std::cerr << e.worker.name << ": " << e.reason;
//   });
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "remora/agent/options.hpp"

namespace remora {

struct MembershipEvent {
  enum Kind {
    joined,  // a worker joined the group (elastic), or rejoined as a new incarnation
    left,    // a worker shut down gracefully (elastic): what it held was released
    lost,    // a worker's connection failed or it was replaced by a new incarnation of its name
  };
  Kind kind = joined;
  WorkerInfo worker;   // the incarnation the event is about
  std::string reason;  // left, lost: why, as WorkerLost says it
};

namespace detail {
class MembershipWatchers;
}

// Receives membership events until it is destroyed or reset(); move-only. Events arrive one at a
// time, in the order the agent saw them, on one of the agent's pool threads. Once reset() (or the
// destructor) returns, the callback is not running and will not run again, unless reset() is
// called from the callback itself. Outliving the agent is fine.
class Subscription {
 public:
  Subscription() = default;
  Subscription(std::weak_ptr<detail::MembershipWatchers> watchers, std::uint64_t id)
      : watchers_(std::move(watchers)), id_(id) {}
  Subscription(Subscription&& other) noexcept : watchers_(std::move(other.watchers_)), id_(other.id_) {
    other.watchers_.reset();
  }
  Subscription& operator=(Subscription&& other) noexcept {
    if (this != &other) {
      reset();
      watchers_ = std::move(other.watchers_);
      id_ = other.id_;
      other.watchers_.reset();
    }
    return *this;
  }
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;
  ~Subscription() { reset(); }

  inline void reset();
  bool active() const { return !watchers_.expired(); }

 private:
  std::weak_ptr<detail::MembershipWatchers> watchers_;
  std::uint64_t id_ = 0;
};

}  // namespace remora

#include "remora/agent/detail/membership_watchers.hpp"

inline void remora::Subscription::reset() {
  if (auto w = watchers_.lock()) w->remove(id_);
  watchers_.reset();
}
