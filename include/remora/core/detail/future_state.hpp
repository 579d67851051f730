#pragma once
// The shared state behind Future<T> and Promise<T>: one value or one exception, set once,
// plus the continuations waiting for it.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "remora/core/detail/unique_function.hpp"

namespace remora::detail {

// What a Future<void> stores: nothing, but something std::optional can hold.
struct Unit {
  friend bool operator==(Unit, Unit) = default;
};

template <class T>
using stored_t = std::conditional_t<std::is_void_v<T>, Unit, T>;

template <class T>
class FutureState {
 public:
  using value_type = stored_t<T>;

  bool is_ready() const { return ready_.load(std::memory_order_acquire); }

  void wait() const {
    if (is_ready()) return;
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return ready_.load(std::memory_order_relaxed); });
  }

  // Watches the state for up to `budget` instead of sleeping; true if it became ready. Yields
  // rather than pauses, so that a thread queued on this CPU (one that would complete it) runs.
  bool spin_until_ready(std::chrono::microseconds budget) const {
    const auto until = std::chrono::steady_clock::now() + budget;
    do {
      if (ready_.load(std::memory_order_acquire)) return true;
      std::this_thread::yield();
    } while (std::chrono::steady_clock::now() < until);
    return ready_.load(std::memory_order_acquire);
  }

  template <class Duration>
  bool wait_for(const Duration& d) const {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, d, [&] { return ready_.load(std::memory_order_relaxed); });
  }

  // Sets the value or the error exactly once; later attempts return false and change nothing.
  template <class... Args>
  bool try_set_value(Args&&... args) {
    return complete([&] { value_.emplace(std::forward<Args>(args)...); });
  }
  bool try_set_exception(std::exception_ptr e) {
    return complete([&] { error_ = std::move(e); });
  }

  // Runs `cb` once the state is ready: now, on this thread, if it already is; otherwise on the
  // thread that completes it.
  void on_ready(UniqueFunction<void()> cb) {
    if (add_if_pending(cb)) return;
    cb();
  }

  // Registers `cb` and returns true if not ready yet; returns false (and keeps `cb`) if ready.
  // An `inline_cb` runs on the completing thread even where continuations are dispatched: for
  // the library's own bookkeeping, which is short and never blocks (when_all's countdown).
  bool add_if_pending(UniqueFunction<void()>& cb, bool inline_cb = false) {
    std::lock_guard lock(mu_);
    if (ready_.load(std::memory_order_relaxed)) return false;
    (inline_cb ? inline_callbacks_ : callbacks_).push_back(std::move(cb));
    return true;
  }

  // Continuations registered before completion run through `dispatch(context, callback)`
  // instead of on the completing thread (an agent completes calls on its I/O thread and hands
  // continuations to its worker pool; waiters are woken directly).
  using Dispatch = void (*)(void* context, UniqueFunction<void()> callback);
  void set_dispatch(Dispatch dispatch, void* context) {
    std::lock_guard lock(mu_);
    dispatch_ = dispatch;
    dispatch_context_ = context;
  }
  std::pair<Dispatch, void*> dispatch() const {
    std::lock_guard lock(mu_);
    return {dispatch_, dispatch_context_};
  }

  // Only valid once ready (is_ready() read the flag with acquire, which orders these reads).
  const std::exception_ptr& error() const { return error_; }
  value_type& value() { return *value_; }

 private:
  template <class Set>
  bool complete(Set&& set) {
    std::vector<UniqueFunction<void()>> callbacks, inline_callbacks;
    {
      std::lock_guard lock(mu_);
      if (ready_.load(std::memory_order_relaxed)) return false;
      set();
      ready_.store(true, std::memory_order_release);
      callbacks.swap(callbacks_);
      inline_callbacks.swap(inline_callbacks_);
    }
    cv_.notify_all();
    for (auto& cb : inline_callbacks) cb();
    for (auto& cb : callbacks) {
      if (dispatch_)
        dispatch_(dispatch_context_, std::move(cb));
      else
        cb();
    }
    return true;
  }

  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::atomic<bool> ready_{false};
  std::optional<value_type> value_;
  std::exception_ptr error_;
  std::vector<UniqueFunction<void()>> callbacks_;
  std::vector<UniqueFunction<void()>> inline_callbacks_;
  Dispatch dispatch_ = nullptr;
  void* dispatch_context_ = nullptr;
};

}  // namespace remora::detail
