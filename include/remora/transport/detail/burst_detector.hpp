#pragma once
// Whether a frame is part of a burst of calls: a call, from the thread that made the previous
// direct write, under kWindow ago, with nothing read from the peer since (so no ping-pong, where
// each call follows a reply; no set of threads each making its own calls; and no reply, which
// someone waits for). A burst's frames queue for the I/O thread, which writes all that queued
// meanwhile with one gather write: on loopback each write also runs the receiver's network
// stack on the sending thread, so one write per call is what limits pipelined calls. A lone
// call still leaves at once on its caller's thread. Used by StreamConnection.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>

#include "remora/wire/frame.hpp"

namespace remora::transport::detail {

class BurstDetector {
 public:
  static constexpr std::chrono::microseconds kWindow{50};

  // Under the connection's write lock, as direct_write_done.
  bool in_burst(const wire::OutFrame& frame) const {
    return frame.head.size() >= sizeof(wire::FrameHeader) &&
           frame.header().kind == static_cast<std::uint8_t>(wire::FrameKind::call) &&
           writer_ == std::this_thread::get_id() && reads_.load(std::memory_order_relaxed) == reads_at_write_ &&
           std::chrono::steady_clock::now() - last_write_ < kWindow;
  }
  // This thread just wrote a frame directly.
  void direct_write_done() {
    last_write_ = std::chrono::steady_clock::now();
    reads_at_write_ = reads_.load(std::memory_order_relaxed);
    writer_ = std::this_thread::get_id();
  }
  // The strand read bytes from the peer (any thread; relaxed).
  void read_done() { reads_.fetch_add(1, std::memory_order_relaxed); }

 private:
  std::chrono::steady_clock::time_point last_write_{};
  std::uint64_t reads_at_write_ = 0;
  std::thread::id writer_;
  std::atomic<std::uint64_t> reads_{0};
};

}  // namespace remora::transport::detail
