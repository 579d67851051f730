#pragma once
// An I/O thread's loop. After an event it keeps polling the sockets for a while (yielding the
// CPU between polls) before it blocks in epoll: a small call's answer, or the next call, usually
// comes within one round trip. A thread blocked in epoll must be woken by the kernel when data
// arrives, and on a virtual machine waking a thread on an idle CPU can cost more than the round
// trip itself: on the 2-core development host, small calls took 80-135 us instead of 35-40 us
// in runs where the threads had settled that way (README, Threads).
// One thread of an io_context watches at a time; watches that keep finding nothing are made
// rarer, so an idle agent sleeps.
#include <atomic>
#include <chrono>
#include <thread>

#include <asio/io_context.hpp>

namespace remora::detail {

class IoLoop {
 public:
  IoLoop(asio::io_context& io, std::chrono::microseconds watch) : io_(io), watch_(watch) {}

  // Runs handlers until the io_context stops (as io_context::run).
  void run() {
    if (watch_.count() <= 0) return (void)io_.run();
    while (!io_.stopped()) {
      if (io_.poll() > 0) continue;
      if (!watch()) io_.run_one();
    }
  }

 private:
  // Polls for up to the watch; true if a handler ran. False at once when another thread
  // watches, or when watches mostly found nothing (every 16th is tried regardless).
  bool watch() {
    if (found_rate_ < 0.5 && ++since_watch_ < 16) return false;
    if (watching_.exchange(true, std::memory_order_acquire)) return false;
    since_watch_ = 0;
    const auto until = std::chrono::steady_clock::now() + watch_;
    bool found = false;
    while (!io_.stopped() && std::chrono::steady_clock::now() < until) {
      if (io_.poll() > 0) {
        found = true;
        break;
      }
      std::this_thread::yield();
    }
    watching_.store(false, std::memory_order_release);
    const double rate = found_rate_.load(std::memory_order_relaxed);
    found_rate_.store(rate + ((found ? 1.0 : 0.0) - rate) / 16, std::memory_order_relaxed);
    return found;
  }

  asio::io_context& io_;
  const std::chrono::microseconds watch_;
  std::atomic<bool> watching_{false};
  // Shared by the I/O threads without a lock: a heuristic, a lost update is harmless.
  std::atomic<double> found_rate_{1.0};
  std::atomic<int> since_watch_{0};
};

}  // namespace remora::detail
