#pragma once
// Notifications held back to leave with the next call to the same peer, in one gather write
// (AgentRuntime::notify): an autograd context's release then costs no write, no read and no
// wake-up of its own. What no call picks up leaves with the next sweep (5 ms). Thread-safe;
// asking when nothing is held costs one atomic load.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "remora/wire/frame.hpp"

namespace remora::detail {

class HeldFrames {
 public:
  void hold(std::uint32_t peer, wire::OutFrame frame) {
    std::lock_guard lock(mu_);
    held_[peer].push_back(std::move(frame));
    count_.fetch_add(1, std::memory_order_release);
  }

  bool empty() const { return count_.load(std::memory_order_acquire) == 0; }

  // What is held for `peer`, oldest first.
  std::vector<wire::OutFrame> take(std::uint32_t peer) {
    if (count_.load(std::memory_order_acquire) == 0) return {};
    std::lock_guard lock(mu_);
    auto it = held_.find(peer);
    if (it == held_.end()) return {};
    auto out = std::move(it->second);
    held_.erase(it);
    count_.fetch_sub(out.size(), std::memory_order_release);
    return out;
  }

  // Everything held, by peer.
  std::map<std::uint32_t, std::vector<wire::OutFrame>> take_all() {
    if (count_.load(std::memory_order_acquire) == 0) return {};
    std::lock_guard lock(mu_);
    count_.store(0, std::memory_order_release);
    return std::exchange(held_, {});
  }

 private:
  std::mutex mu_;
  std::map<std::uint32_t, std::vector<wire::OutFrame>> held_;
  std::atomic<std::size_t> count_{0};
};

}  // namespace remora::detail
