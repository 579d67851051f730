#pragma once
// Faults a worker injects into the frames it sends, for tests of failure handling (as PyTorch's
// FaultyTensorPipeAgent): chosen frames are dropped, delayed, or cut their connection as they
// would be by a network or a process that dies mid-protocol (or SIGKILLs it). remora's own tests
// set Options::test_hooks.faults on the worker whose sending should fail; every connection of
// that worker consults the plan. Nothing a program needs: it lives in remora::detail.
//
//   auto plan = std::make_shared<remora::detail::FaultPlan>();
//   plan->add(FaultPlan::call<&rref_msg_user_delete>(FaultPlan::Action::cut));
//   plan->add({.kind = remora::wire::FrameKind::reply, .action = FaultPlan::Action::drop});
//   options.test_hooks.faults = plan;
//
// Cost when unset: one null check per frame sent. Delayed frames wait on the plan's own thread,
// which the plan's destructor joins.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "remora/core/log.hpp"
#include "remora/core/type_id.hpp"
#include "remora/transport/test_hooks.hpp"
#include "remora/wire/frame.hpp"

namespace remora::detail {

class FaultPlan {
 public:
  enum class Action {
    drop,   // the frame never leaves
    delay,  // it leaves `delay` later
    cut,    // its connection closes instead, as if the peer's host died as it was sent
    kill,   // this process dies (SIGKILL) as it sends the frame: kill -9 at that protocol step
  };
  struct Rule {
    std::optional<wire::FrameKind> kind;     // frames of this kind (unset: any)
    std::optional<std::uint64_t> function;   // calls of this function id (unset: any)
    Action action = Action::drop;
    std::chrono::milliseconds delay{0};
    int times = 1;                           // frames it applies to, then it is spent (-1: all)
  };

  // A rule for calls of F (a function, or an RRef protocol message such as
  // &detail::rref_msg::user_delete).
  template <auto F>
  static Rule call(Action action, std::chrono::milliseconds delay = {}, int times = 1) {
    return Rule{wire::FrameKind::call, function_identity<F>.id, action, delay, times};
  }

  FaultPlan() = default;
  FaultPlan(const FaultPlan&) = delete;
  FaultPlan& operator=(const FaultPlan&) = delete;
  ~FaultPlan() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    wake_.notify_all();
    if (!timer_.joinable()) return;
    if (timer_.get_id() == std::this_thread::get_id())
      timer_.detach();  // the last owner went with a delayed frame's connection, on this thread
    else
      timer_.join();
  }

  void add(Rule rule) {
    std::lock_guard lock(mu_);
    rules_.push_back(rule);
  }
  // Frames a rule applied to so far.
  int applied() const {
    std::lock_guard lock(mu_);
    return applied_;
  }

  // What to do with `frame`: nullopt to send it as usual. Thread-safe. A frame released after a
  // delay is not matched again.
  std::optional<Rule> match(const wire::OutFrame& frame) {
    if (frame.head.size() < sizeof(wire::FrameHeader)) return std::nullopt;
    const auto& h = frame.header();
    std::uint64_t fid = 0;
    const bool has_fid = h.body_bytes >= sizeof fid && frame.head.size() >= sizeof h + sizeof fid;
    if (has_fid) std::memcpy(&fid, frame.head.data() + sizeof h, sizeof fid);
    std::lock_guard lock(mu_);
    for (auto& r : rules_) {
      if (r.times == 0) continue;
      if (r.kind && static_cast<std::uint8_t>(*r.kind) != h.kind) continue;
      if (r.function && (!has_fid || *r.function != fid)) continue;
      if (r.times > 0) --r.times;
      ++applied_;
      return r;
    }
    return std::nullopt;
  }

  // Runs `release` `after` from now, on the plan's thread.
  void later(std::chrono::milliseconds after, std::function<void()> release) {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    due_.emplace(std::chrono::steady_clock::now() + after, std::move(release));
    if (!timer_.joinable()) timer_ = std::thread([this] { run_timer(); });
    wake_.notify_all();
  }

 private:
  void run_timer() {
    std::unique_lock lock(mu_);
    while (!stopping_) {
      if (due_.empty()) {
        wake_.wait(lock);
        continue;
      }
      auto first = due_.begin();
      if (wake_.wait_until(lock, first->first) == std::cv_status::timeout || first->first <= std::chrono::steady_clock::now()) {
        auto job = std::move(due_.begin()->second);
        due_.erase(due_.begin());
        lock.unlock();
        try {
          job();
        } catch (...) {
          log_current_exception("a fault plan's delayed frame");
        }
        lock.lock();
      }
    }
  }

  mutable std::mutex mu_;
  std::vector<Rule> rules_;
  int applied_ = 0;
  std::multimap<std::chrono::steady_clock::time_point, std::function<void()>> due_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread timer_;
};

}  // namespace remora::detail
