#pragma once
// The calls an agent has in flight: who each one went to, when it times out, and what completes
// it; plus the count of work in flight (calls and their continuations) that graceful shutdown
// waits for. Thread-safe; one mutex guards everything.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "remora/agent/detail/node_cache.hpp"
#include "remora/core/detail/unique_function.hpp"
#include "remora/wire/frame.hpp"

namespace remora::detail {

// Completes one call's future: with the reply frame, or with an error (then the frame is null).
using Completion = UniqueFunction<void(wire::InFrame*, std::exception_ptr)>;

class CallTable {
 public:
  using Clock = std::chrono::steady_clock;
  using Deadlines = std::multimap<Clock::time_point, std::uint64_t>;
  struct Pending {
    std::uint32_t peer;
    std::string_view function;  // names static storage (a function's identity)
    Deadlines::iterator deadline;
    std::chrono::milliseconds timeout;
    Completion complete;
    std::shared_ptr<const void> keep;  // held until the call completed (the RRef it refers to)
  };

  // Records a call; it counts as outstanding until finished() is called for it.
  void add(std::uint64_t request_id, std::uint32_t peer, std::string_view function,
           std::chrono::milliseconds timeout, Completion complete, std::shared_ptr<const void> keep) {
    std::lock_guard lock(mu_);
    auto deadline = spare_deadlines_.emplace(deadlines_, Clock::now() + timeout, request_id);
    spare_pending_.emplace(pending_, request_id,
                           Pending{peer, function, deadline, timeout, std::move(complete), std::move(keep)});
    ++outstanding_;
    ++started_;
  }

  // The call's entry, removed; nullopt when it is not there (timed out, or never made).
  std::optional<Pending> take(std::uint64_t request_id) {
    std::lock_guard lock(mu_);
    auto it = pending_.find(request_id);
    if (it == pending_.end()) return std::nullopt;
    auto node = pending_.extract(it);
    Pending p = std::move(node.mapped());
    spare_pending_.keep(std::move(node));
    spare_deadlines_.keep(deadlines_.extract(p.deadline));
    if (pending_.empty()) cv_.notify_all();
    return p;
  }

  // The calls whose deadline has passed, removed.
  std::vector<Pending> take_overdue() {
    std::vector<Pending> overdue;
    std::lock_guard lock(mu_);
    const auto now = Clock::now();
    while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
      auto it = pending_.find(deadlines_.begin()->second);
      deadlines_.erase(deadlines_.begin());
      if (it == pending_.end()) continue;
      overdue.push_back(std::move(it->second));
      pending_.erase(it);
    }
    if (pending_.empty()) cv_.notify_all();
    return overdue;
  }

  // The calls to `peer` (every call for kAllPeers), removed.
  static constexpr std::uint32_t kAllPeers = UINT32_MAX;
  std::vector<Pending> take_to(std::uint32_t peer) {
    std::vector<Pending> out;
    std::lock_guard lock(mu_);
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (peer == kAllPeers || it->second.peer == peer) {
        out.push_back(std::move(it->second));
        spare_deadlines_.keep(deadlines_.extract(it->second.deadline));
        it = pending_.erase(it);
      } else {
        ++it;
      }
    }
    if (pending_.empty()) cv_.notify_all();
    return out;
  }

  // Work that is not a call but must finish before the group stops (a continuation on the pool).
  void begin_work() {
    std::lock_guard lock(mu_);
    ++outstanding_;
  }
  // A call's completion, or a begin_work job, has run.
  void finished() {
    std::lock_guard lock(mu_);
    if (--outstanding_ == 0) cv_.notify_all();
  }

  std::size_t size() const {
    std::lock_guard lock(mu_);
    return pending_.size();
  }
  // Calls awaiting a reply, per peer (a vector of `peers` counts).
  std::vector<std::size_t> size_per_peer(std::size_t peers) const {
    std::vector<std::size_t> out(peers);
    std::lock_guard lock(mu_);
    for (const auto& [id, p] : pending_)
      if (p.peer < peers) ++out[p.peer];
    return out;
  }
  // True if no more than `calls` calls (and begin_work jobs) are outstanding.
  bool at_most_in_flight(std::size_t calls) const {
    std::lock_guard lock(mu_);
    return outstanding_ <= static_cast<std::int64_t>(calls);
  }

  struct Counts {
    std::int64_t outstanding, started;
  };
  // Waits until nothing is outstanding; nullopt after `timeout`. `started` counts calls ever made.
  std::optional<Counts> wait_quiet(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, timeout, [&] { return outstanding_ == 0; })) return std::nullopt;
    return Counts{outstanding_, started_};
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::unordered_map<std::uint64_t, Pending> pending_;
  NodeCache<std::unordered_map<std::uint64_t, Pending>> spare_pending_;
  // Earliest first; one timer sweeps them (no timer per call).
  Deadlines deadlines_;
  NodeCache<Deadlines> spare_deadlines_;
  // Calls and continuations whose completion has not finished running, and calls ever started.
  std::int64_t outstanding_ = 0;
  std::int64_t started_ = 0;
};

}  // namespace remora::detail
