#pragma once
// The write half of a stream connection (StreamConnection): frames from any thread onto one
// socket. A frame sent on an idle connection is written at once by the sending thread (one
// non-blocking gather write); otherwise frames queue, and the connection's strand writes them,
// several per write, each tensor straight from its memory, up to the first gate that is still
// closed (a GPU chunk not yet in host memory). A burst of calls from one thread queues too
// (burst_detector.hpp). The writer also owns the connection's closed flag: closing takes the
// write lock, so no sending thread is inside a write while the socket closes.
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <asio/buffer.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/write.hpp>

#include "remora/transport/detail/burst_detector.hpp"
#include "remora/transport/detail/frame_queue.hpp"
#include "remora/transport/detail/gather_send.hpp"
#include "remora/transport/detail/write_list.hpp"
#include "remora/wire/frame.hpp"

namespace remora::transport::detail {

template <class Socket>
class FrameWriter {
 public:
  // What keeps the connection (and so this writer and `socket`) alive while a write is queued
  // on the strand.
  using KeepAlive = std::function<std::shared_ptr<void>()>;
  // Closes the connection with a reason; called on the strand.
  using Fail = std::function<void(const std::string& why)>;

  // `socket` belongs to the same connection and outlives the writer's use of it.
  FrameWriter(Socket& socket, KeepAlive keep_alive, Fail fail)
      : socket_(socket), keep_alive_(std::move(keep_alive)), fail_(std::move(fail)), gate_timer_(socket.get_executor()) {}
  FrameWriter(const FrameWriter&) = delete;
  FrameWriter& operator=(const FrameWriter&) = delete;

  bool closed() const { return closed_.load(); }
  // The strand read bytes from the peer (for the burst detector; any thread).
  void read_done() { burst_.read_done(); }

  // Sends a prepared frame (its tensors where the transport wants them). Cost on an idle
  // connection: one system call on this thread; otherwise a queue entry and, at most, one post.
  void send(wire::OutFrame frame) {
    std::lock_guard lock(mu_);
    if (closed_) return;
    // An idle connection writes on the sending thread: no hop to the I/O thread, which only
    // takes over what the socket does not accept at once (and batches frames queued meanwhile).
    if (connected_ && !writing_ && queue_.empty() && frame.gates.empty() && !burst_.in_burst(frame) &&
        write_now(frame)) {
      burst_.direct_write_done();
      return;
    }
    queue_.push_back(std::move(frame));
    post_write_more();
  }

  // The prepared frames go out with one gather write when the connection is idle.
  void send_batch(std::vector<wire::OutFrame> frames) {
    std::vector<wire::OutFrame> written;  // destroyed after the lock: a deleter may send
    std::lock_guard lock(mu_);
    if (closed_ || frames.empty()) return;
    const bool idle = connected_ && !writing_ && queue_.empty();
    for (auto& f : frames) queue_.push_back(std::move(f));
    if (idle && write_queue_now(written)) return;
    post_write_more();
  }

  enum class Opened { closed, setup_failed, idle, queued };
  // The connection is up: `setup()` runs under the write lock, so nothing is written before it
  // (the local preface), and returns false if it failed. Then frames go out; with `queued`, some
  // were sent before, and the caller starts them with write_queued() (once it reads).
  template <class Setup>
  Opened open(Setup&& setup) {
    std::lock_guard lock(mu_);
    if (closed_) return Opened::closed;
    if (!setup()) return Opened::setup_failed;
    connected_ = true;
    writing_ = !queue_.empty();
    return writing_ ? Opened::queued : Opened::idle;
  }
  // On the strand, after open() said `queued`.
  void write_queued() { write_more(); }

  // Marks the connection closed and closes `socket_` under the write lock; false if it was
  // closed already. The frames still queued are destroyed after the lock (a deleter may send).
  bool close() {
    FrameQueue dropped;
    {
      std::lock_guard lock(mu_);
      if (closed_) return false;
      closed_ = true;
      std::error_code ignored;
      socket_.shutdown(Socket::shutdown_both, ignored);
      socket_.close(ignored);
      dropped.swap(queue_);
    }
    dropped.clear();
    return true;
  }

 private:
  static constexpr std::size_t kMaxIov = detail::kMaxIov;

  // Under mu_: the strand takes over the queue, unless it is writing already or the connection
  // is not up (open() starts it then).
  void post_write_more() {
    if (!connected_ || writing_) return;
    writing_ = true;
    asio::post(socket_.get_executor(), [this, keep = keep_alive_()] { write_more(); });
  }

  // Writes the whole queue with one non-blocking call (mu_ held, idle connection, no gates);
  // true if it all went out. Otherwise the rest stays queued for write_more, with
  // front_written_ saying how much of its first frame is gone.
  bool write_queue_now(std::vector<wire::OutFrame>& written_frames) {
    iovec iov[kMaxIov];
    std::size_t n_iov = 0;
    for (auto& f : queue_) {
      if (!f.gates.empty()) return false;
      auto segments = f.segments();
      if (n_iov + segments.size() > kMaxIov) return false;
      for (auto s : segments) iov[n_iov++] = {const_cast<std::byte*>(s.data()), s.size()};
    }
    const ssize_t n = gather_send(socket_.native_handle(), iov, n_iov);
    if (n < 0) return write_failed();
    std::uint64_t written = static_cast<std::uint64_t>(n);
    while (!queue_.empty() && written >= queue_.front().total_bytes()) {
      written -= queue_.front().total_bytes();
      written_frames.push_back(queue_.take_front());
    }
    front_written_ = written;
    return queue_.empty();
  }

  // Writes `frame` with one non-blocking call; true if it went out whole (or the connection
  // failed, which the strand then reports). Otherwise the unwritten rest is for write_more.
  // Called with mu_ held, so the socket cannot be closed meanwhile.
  bool write_now(const wire::OutFrame& frame) {
    auto segments = frame.segments();
    if (segments.size() > kMaxIov) return false;
    iovec iov[kMaxIov];
    std::size_t total = 0;
    for (std::size_t i = 0; i < segments.size(); ++i) {
      iov[i] = {const_cast<std::byte*>(segments[i].data()), segments[i].size()};
      total += segments[i].size();
    }
    const ssize_t n = gather_send(socket_.native_handle(), iov, segments.size());
    if (n == static_cast<ssize_t>(total)) return true;
    if (n < 0) return write_failed();
    front_written_ = static_cast<std::size_t>(n);
    return false;
  }

  // A write on a sending thread failed: the strand closes the connection (and reports why).
  bool write_failed() {
    asio::post(socket_.get_executor(), [this, keep = keep_alive_(), why = std::string(std::strerror(errno))] {
      fail_("write failed: " + why);
    });
    return true;
  }

  // On the strand, while writing_: writes what is queued, several frames per call, up to the
  // first gate that is still closed (checked again shortly).
  void write_more() {
    std::size_t frames = 0;       // frames written whole by this write
    std::uint64_t partial = 0;    // bytes of the frame after them written by it
    {
      std::lock_guard lock(mu_);
      if (queue_.empty() || closed_) {
        writing_ = false;
        return;
      }
      write_list_.clear();
      for (auto& f : queue_) {
        auto segments = f.segments();
        if (frames > 0 && write_list_.size() + segments.size() > kMaxIov) break;
        const std::uint64_t first = frames == 0 ? front_written_ : 0;  // what earlier writes sent
        const std::uint64_t limit = f.writable_bytes();
        std::uint64_t at = 0;  // of segment s, from the frame's start
        for (auto s : segments) {
          const std::uint64_t lo = std::max(at, first), hi = std::min<std::uint64_t>(at + s.size(), limit);
          if (lo < hi) write_list_.add(s.data() + (lo - at), hi - lo);
          at += s.size();
        }
        if (limit < f.total_bytes()) {
          partial = limit > first ? limit - first : 0;
          break;
        }
        ++frames;
      }
      if (write_list_.empty()) {  // the front frame waits for a GPU copy
        gate_timer_.expires_after(std::chrono::microseconds(50));
        gate_timer_.async_wait([this, keep = keep_alive_()](std::error_code) { write_more(); });
        return;
      }
    }
    asio::async_write(socket_, write_list_.buffers(),
                      [this, keep = keep_alive_(), frames, partial](std::error_code ec, std::size_t) {
                        if (ec) return fail_("write failed: " + ec.message());
                        std::vector<wire::OutFrame> sent;  // destroyed after the lock: a deleter may send
                        {
                          std::lock_guard lock(mu_);
                          for (std::size_t i = 0; i < frames && !queue_.empty(); ++i) sent.push_back(queue_.take_front());
                          front_written_ = (frames > 0 ? 0 : front_written_) + partial;
                        }
                        sent.clear();
                        write_more();
                      });
  }

  Socket& socket_;
  KeepAlive keep_alive_;
  Fail fail_;
  std::mutex mu_;
  FrameQueue queue_;
  std::size_t front_written_ = 0;  // bytes of queue_.front() a direct write already sent
  WriteList write_list_;           // the write in flight on the strand
  asio::steady_timer gate_timer_;  // retries a write held up by a gate
  bool writing_ = false;           // a write is in flight on the strand
  BurstDetector burst_;            // under mu_, except its read count
  bool connected_ = false;         // frames queue until open()
  std::atomic<bool> closed_{false};
};

}  // namespace remora::transport::detail
