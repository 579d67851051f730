#pragma once
// An I/O thread's loop. After an event it keeps polling the sockets for a while (yielding the
// CPU between polls) before it blocks in epoll: a small call's answer, or the next call, usually
// comes within one round trip. A thread blocked in epoll must be woken by the kernel when data
// arrives, and on a virtual machine waking a thread on an idle CPU can cost more than the round
// trip itself (docs/threading.md).
// One thread of an io_context watches at a time; watches that keep finding nothing are made
// rarer, so an idle agent sleeps.
#include <atomic>
#include <chrono>
#include <thread>

#include <asio/io_context.hpp>

#include "remora/agent/detail/watch_rate.hpp"
#include "remora/core/log.hpp"

namespace remora::detail {

// Whether this thread runs an agent's I/O (tests check that user code never runs on one).
inline thread_local bool on_io_thread = false;

class IoLoop {
 public:
  IoLoop(asio::io_context& io, std::chrono::microseconds watch) : io_(io), watch_(watch) {}

  // Runs handlers until the io_context stops (as io_context::run). A handler that throws is
  // logged and dropped (Asio lets the exception out of run(); the io_context stays usable):
  // nothing a peer sends, and no bug of one handler, ends the process or stops the I/O.
  void run() {
    on_io_thread = true;
    while (!io_.stopped()) {
      try {
        if (watch_.count() <= 0)
          io_.run();
        else if (io_.poll() == 0 && !watch())
          io_.run_one();
      } catch (...) {
        watching_.store(false, std::memory_order_release);  // a watch the exception cut short
        log_current_exception("an I/O handler");
      }
    }
  }

 private:
  // Polls for up to the watch; true if a handler ran. False at once when another thread
  // watches, or when watches mostly found nothing (every 16th is tried regardless).
  bool watch() {
    if (watching_.exchange(true, std::memory_order_acquire)) return false;
    if (!rate_.should_try()) {  // rate_ belongs to the watching thread
      watching_.store(false, std::memory_order_release);
      return false;
    }
    const auto until = std::chrono::steady_clock::now() + watch_;
    bool found = false;
    while (!io_.stopped() && std::chrono::steady_clock::now() < until) {
      if (io_.poll() > 0) {
        found = true;
        break;
      }
      std::this_thread::yield();
    }
    rate_.record(found);
    watching_.store(false, std::memory_order_release);
    return found;
  }

  asio::io_context& io_;
  const std::chrono::microseconds watch_;
  std::atomic<bool> watching_{false};
  WatchRate rate_{0.5};  // only the thread that set watching_ touches it
};

}  // namespace remora::detail
