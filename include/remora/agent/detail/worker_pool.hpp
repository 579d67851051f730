#pragma once
// The threads that run served functions and continuations (docs/threading.md). Unlike a plain
// pool, a worker that finds the queue empty after a job first watches it for a while (one
// worker at a time) before it sleeps: a small call's next request usually comes one round trip
// after the previous answer, and a watching worker takes it without being woken, saving the
// wake-up (benchmarks/handoff_floor.cpp measures it).
// Watches that keep finding nothing are made rarer, so a pool whose calls come seldom sleeps.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "remora/agent/detail/watch_rate.hpp"
#include "remora/core/detail/unique_function.hpp"
#include "remora/core/log.hpp"

namespace remora::detail {

class WorkerPool {
 public:
  using Job = UniqueFunction<void()>;

  // `watch`: how long an idle worker watches for the next job before it sleeps (0: never).
  WorkerPool(int threads, std::chrono::microseconds watch) : watch_(watch) {
    threads = std::max(1, threads);
    workers_.reserve(static_cast<std::size_t>(threads));
    for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { work(); });
  }
  ~WorkerPool() { join(); }
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  void post(Job job) {
    bool wake;
    {
      std::lock_guard lock(mu_);
      queue_.push_back(std::move(job));
      queued_.store(queue_.size(), std::memory_order_release);
      // A watching worker takes one job without being woken; more than that needs a sleeper.
      wake = sleeping_ > 0 && queue_.size() > watching_;
    }
    if (wake) cv_.notify_one();
  }

  // Runs what is queued, and what that posts, then ends the threads (as asio::thread_pool::join).
  void join() {
    {
      std::lock_guard lock(mu_);
      joining_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_)
      if (t.joinable()) t.join();
  }

 private:
  void work() {
    std::unique_lock lock(mu_);
    for (;;) {
      if (!queue_.empty()) {
        Job job = std::move(queue_.front());
        queue_.pop_front();
        queued_.store(queue_.size(), std::memory_order_relaxed);
        ++running_;
        lock.unlock();
        run(job);
        job = Job();  // its captures go before the next job, outside the lock
        lock.lock();
        --running_;
        if (queue_.empty() && should_watch()) watch(lock);
        continue;
      }
      if (joining_ && running_ == 0) {
        cv_.notify_all();  // the others end too
        return;
      }
      ++sleeping_;
      cv_.wait(lock);
      --sleeping_;
    }
  }

  // A job that throws (a user's continuation, say) is reported and dropped: nothing a job does
  // ends the process or the worker thread.
  static void run(Job& job) noexcept {
    try {
      job();
    } catch (const std::exception& e) {
      log_warning(std::string("a job on the worker pool threw (it is dropped): ") + e.what());
    } catch (...) {
      log_warning("a job on the worker pool threw something that is not a std::exception (it is dropped)");
    }
  }

  // One watcher at a time, and only while watches mostly find work (every 16th is tried
  // regardless, to notice that calls came back). Called and returns with the lock held.
  bool should_watch() { return watch_.count() > 0 && watching_ == 0 && !joining_ && rate_.should_try(); }
  void watch(std::unique_lock<std::mutex>& lock) {
    ++watching_;
    lock.unlock();
    const auto until = std::chrono::steady_clock::now() + watch_;
    bool found;
    while (!(found = queued_.load(std::memory_order_acquire) > 0) && std::chrono::steady_clock::now() < until)
      std::this_thread::yield();
    lock.lock();
    --watching_;
    rate_.record(found);
  }

  const std::chrono::microseconds watch_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;
  std::atomic<std::size_t> queued_{0};  // queue_.size(), for watchers that do not take the lock
  std::size_t sleeping_ = 0, watching_ = 0, running_ = 0;
  WatchRate rate_{0.5};  // under mu_
  bool joining_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace remora::detail
