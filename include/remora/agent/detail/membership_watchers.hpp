#pragma once
// The subscribers to an agent's membership events and the queue that delivers events to them in
// order (membership.hpp). Thread-safe.
#include <algorithm>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "remora/agent/membership.hpp"
#include "remora/core/log.hpp"

namespace remora::detail {

class MembershipWatchers {
 public:
  using Callback = std::function<void(const MembershipEvent&)>;

  // `removal_waits`: whether remove() waits for a delivery in progress, so that the callback
  // never runs after it (what users' subscriptions promise). Without, remove() returns at once
  // and the callback may run once more: for a callback that holds what it uses, removed by a
  // thread that may hold a lock another callback waits for (a process group's fence).
  std::uint64_t add(Callback callback, bool removal_waits = true) {
    std::lock_guard lock(mu_);
    subscribers_.push_back({++last_id_, std::make_shared<Callback>(std::move(callback)), removal_waits});
    return last_id_;
  }

  // Waits for a delivery in progress (unless it is this thread's: a callback removing itself),
  // where the subscriber asked for it.
  void remove(std::uint64_t id) {
    {
      std::lock_guard lock(mu_);
      auto it = std::find_if(subscribers_.begin(), subscribers_.end(), [&](const auto& s) { return s.id == id; });
      if (it == subscribers_.end()) return;
      if (!it->removal_waits) {
        subscribers_.erase(it);
        return;
      }
    }
    std::lock_guard delivering(deliver_mu_);
    std::lock_guard lock(mu_);
    std::erase_if(subscribers_, [&](const auto& s) { return s.id == id; });
  }

  // Queues `event`; returns whether a drain() must be scheduled to deliver it (none is pending).
  bool push(MembershipEvent event) {
    std::lock_guard lock(mu_);
    queue_.push_back(std::move(event));
    if (drain_pending_) return false;
    drain_pending_ = true;
    return true;
  }

  // Delivers every queued event to every subscriber, in order. A callback that throws is logged
  // and keeps its subscription.
  void drain() {
    std::lock_guard delivering(deliver_mu_);
    for (;;) {
      MembershipEvent event;
      std::vector<Subscriber> subscribers;
      {
        std::lock_guard lock(mu_);
        if (queue_.empty()) {
          drain_pending_ = false;
          return;
        }
        event = std::move(queue_.front());
        queue_.pop_front();
        subscribers = subscribers_;
      }
      for (const auto& s : subscribers) {
        if (!subscribed(s.id)) continue;  // removed by an earlier callback of this event
        try {
          (*s.callback)(event);
        } catch (const std::exception& e) {
          log_warning("remora: a membership callback threw: " + std::string(e.what()));
        } catch (...) {
          log_warning("remora: a membership callback threw");
        }
      }
    }
  }

 private:
  bool subscribed(std::uint64_t id) const {
    std::lock_guard lock(mu_);
    for (const auto& s : subscribers_)
      if (s.id == id) return true;
    return false;
  }

  std::recursive_mutex deliver_mu_;  // held while delivering; remove() takes it to wait
  mutable std::mutex mu_;            // the lists below
  struct Subscriber {
    std::uint64_t id;
    std::shared_ptr<Callback> callback;
    bool removal_waits;
  };
  std::vector<Subscriber> subscribers_;
  std::deque<MembershipEvent> queue_;
  bool drain_pending_ = false;
  std::uint64_t last_id_ = 0;
};

}  // namespace remora::detail
