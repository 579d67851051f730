#pragma once
// Work that must wait for a GPU copy to finish, without a host thread blocking where the copy is
// queued. A callee that copies a GPU tensor out of its caller's lent memory hands the copy on at
// once (the thread that runs the call makes its stream wait for it on the GPU), but the caller may
// reuse that memory only after the copy has run: its release waits here. One thread per process
// watches the copies' events in the order they were queued and runs each one's action when its
// event is done; it exists only once a copy was watched, and polls only while one is pending.
//
// Compiled only when libtorch has CUDA (REMORA_CUDA_IPC, remora/config.hpp).
#include "remora/config.hpp"
#if REMORA_CUDA_IPC
#include <cuda_runtime_api.h>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>

#include "remora/core/errors.hpp"
#include "remora/core/log.hpp"
#include "remora/transport/detail/cuda_event_pool.hpp"

namespace remora::transport::detail {

// An event recorded behind a copy. Back to its pool when the last holder lets go: the stream
// wait of the thread that runs the call and the watch each hold one.
class CopyDone {
 public:
  CopyDone(cudaEvent_t event, c10::DeviceIndex device, CudaEventPool& pool)
      : event_(event), device_(device), pool_(pool) {}
  CopyDone(const CopyDone&) = delete;
  CopyDone& operator=(const CopyDone&) = delete;
  ~CopyDone() { pool_.give_back(device_, event_); }
  cudaEvent_t event() const { return event_; }
  c10::DeviceIndex device() const { return device_; }

  // Makes this thread's current stream on the event's device wait for it (no host wait).
  void wait_on_current_stream() const {
    c10::cuda::CUDAGuard guard(device_);
    cudaStreamWaitEvent(c10::cuda::getCurrentCUDAStream(device_).stream(), event_, 0);
  }
  // Blocks this thread until the copy is done (a reply's tensors, complete for every stream once
  // handed on), polling: a copy behind the event of a peer that died must not hold the thread for
  // ever. Throws Error when the copy failed or is not done within `limit`.
  void synchronize(std::chrono::milliseconds limit) const {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    for (int round = 0;; ++round) {
      const cudaError_t e = cudaEventQuery(event_);
      if (e == cudaSuccess) return;
      if (e != cudaErrorNotReady)
        throw Error(std::string("remora: a copy from a peer's GPU memory failed: ") + cudaGetErrorString(e));
      if (std::chrono::steady_clock::now() > deadline)
        throw Error("remora: a copy from a peer's GPU memory did not finish within " + std::to_string(limit.count()) +
                    " ms");
      if (round < 64) std::this_thread::yield();
      else std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }

 private:
  cudaEvent_t event_;
  c10::DeviceIndex device_;
  CudaEventPool& pool_;  // CopyWatch's, which is never destroyed
};

class CopyWatch {
 public:
  // Never destroyed: frames holding a CopyDone may outlive static destruction, and its thread
  // must not be joined while it may wait on a copy from a peer that died.
  static CopyWatch& instance() {
    static CopyWatch& watch = *new CopyWatch;
    return watch;
  }
  CopyWatch(const CopyWatch&) = delete;
  CopyWatch& operator=(const CopyWatch&) = delete;

  // Records an event on `stream` behind the work queued there so far. Throws Error when CUDA fails.
  std::shared_ptr<const CopyDone> record(const c10::cuda::CUDAStream& stream) {
    cudaEvent_t e = events_.take(stream.device_index());
    if (cudaEventRecord(e, stream.stream()) != cudaSuccess) {
      events_.give_back(stream.device_index(), e);
      throw Error("remora: cannot record a CUDA event behind a copy");
    }
    return std::make_shared<const CopyDone>(e, stream.device_index(), events_);
  }

  // Runs `action` on the watch's thread once `done` is complete, or failed (then the copy will
  // not run either). Never blocks; `action` must not throw.
  void when_done(std::shared_ptr<const CopyDone> done, std::function<void()> action) {
    {
      std::lock_guard lock(mu_);
      if (!thread_.joinable()) thread_ = std::thread([this] { run(); });
      pending_.push_back({std::move(done), std::move(action)});
    }
    cv_.notify_one();
  }

  std::size_t pending() const {
    std::lock_guard lock(mu_);
    return pending_.size();
  }

 private:
  CopyWatch() = default;

  struct Pending {
    std::shared_ptr<const CopyDone> done;
    std::function<void()> action;
  };

  // The oldest copy first: later ones wait behind it, which only delays their releases. Polls
  // with a backoff from 20 us to 1 ms while the oldest is not done, so it never blocks in CUDA
  // (a copy that waits for a peer that died would hold the thread, and the process's exit).
  void run() {
    auto nap = std::chrono::microseconds(20);
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return !pending_.empty(); });
      auto done = pending_.front().done;
      lock.unlock();
      const cudaError_t e = cudaEventQuery(done->event());
      if (e == cudaErrorNotReady) {
        std::this_thread::sleep_for(nap);
        nap = std::min<std::chrono::microseconds>(nap * 2, std::chrono::milliseconds(1));
        lock.lock();
        continue;
      }
      nap = std::chrono::microseconds(20);
      lock.lock();
      auto action = std::move(pending_.front().action);
      pending_.pop_front();
      lock.unlock();
      try {
        action();
      } catch (...) {
        remora::detail::log_current_exception("a CUDA copy's completion");
      }
      done.reset();
      lock.lock();
    }
  }

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Pending> pending_;
  CudaEventPool events_{cudaEventDisableTiming};
  std::thread thread_;
};

}  // namespace remora::transport::detail
#endif
