#pragma once
// One stream connection carrying frames both ways: TCP, or a unix socket to a process of the same
// host ("local"), where large tensors cross through shared memory instead of the socket.
//
// Writes: a frame sent on an idle connection is written at once by the sending thread (one
// non-blocking gather write); otherwise frames queue up and the strand writes them, several per
// write, each tensor straight from its memory. Reads: small reads go through a receive buffer and the frame
// reader; a large tensor is read straight into the tensor allocated for it. Every handler runs
// on the connection's strand. A protocol error or an I/O error closes the connection once, and
// the close handler learns why; the connection never throws into Asio.
//
// Local connections add what only processes of one host can share (detail/local_sharing.hpp):
// large tensors through shared memory, GPU tensors by CUDA IPC handle. Over TCP, GPU tensors are
// staged through host memory (detail/cuda_staging.hpp).
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <mutex>
#include <memory>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include <asio/buffer.hpp>
#include <asio/connect.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/strand.hpp>
#include <asio/write.hpp>

#include "remora/transport/connection.hpp"
#include "remora/transport/detail/burst_detector.hpp"
#include "remora/transport/detail/cuda_staging.hpp"
#include "remora/transport/detail/frame_queue.hpp"
#include "remora/transport/detail/gather_send.hpp"
#include "remora/transport/detail/handshake.hpp"
#include "remora/transport/detail/link_watch.hpp"
#include "remora/transport/detail/local_sharing.hpp"
#include "remora/transport/detail/write_list.hpp"
#include "remora/core/log.hpp"
#include "remora/wire/frame_reader.hpp"

namespace remora::transport {

template <class Protocol>
class StreamConnection final : public Connection {
 public:
  static constexpr bool is_local = std::is_same_v<Protocol, asio::local::stream_protocol>;
  // The strand's concrete type, not asio::any_io_executor: a type-erased strand does not fit
  // any_io_executor's inline storage, so every read would allocate to track its work.
  using Executor = asio::strand<asio::io_context::executor_type>;
  using Socket = typename Protocol::socket::template rebind_executor<Executor>::other;

  // `socket` is a connected socket, or (to connect later) the strand a new socket is made on.
  template <class SocketOrExecutor>
  StreamConnection(SocketOrExecutor&& socket, const wire::Limits& limits, FrameHandler on_frame,
                   CloseHandler on_close, SharedMemoryOptions shared = {}, AuthOptions auth = {})
      : socket_(std::forward<SocketOrExecutor>(socket)),
        reader_(wire::Limits::before_identity()), limits_(limits),
        on_frame_(std::move(on_frame)),
        on_close_(std::move(on_close)),
        recv_(kRecvBuffer), gate_timer_(socket_.get_executor()), auth_(std::move(auth)),
        handshake_timer_(socket_.get_executor()) {
    if constexpr (is_local) sharing_ = std::make_unique<detail::LocalSharing>(shared);
    reader_.set_device_uploader(detail::make_device_uploader());
  }

  // A connection to `endpoint`; frames sent before it is up wait in the queue.
  static std::shared_ptr<StreamConnection> connect(asio::io_context::executor_type ex,
                                                   typename Protocol::endpoint endpoint, const wire::Limits& limits,
                                                   FrameHandler on_frame, CloseHandler on_close,
                                                   SharedMemoryOptions shared = {}, AuthOptions auth = {},
                                                   std::chrono::milliseconds link_timeout = {}) {
    auto c = std::make_shared<StreamConnection>(asio::make_strand(ex), limits, std::move(on_frame),
                                                std::move(on_close), shared, std::move(auth));
    c->dialed_ = true;
    if constexpr (!is_local) {  // before connecting: the timeout bounds the SYNs too
      c->set_link_timeout(link_timeout);
      std::error_code ignored;
      c->socket_.open(endpoint.protocol(), ignored);
      detail::watch_link(c->socket_.native_handle(), link_timeout);
    }
    c->reader_.set_limits(limits);  // this side chose the peer: its frames are trusted from the first
    c->socket_.async_connect(endpoint, [c, endpoint](std::error_code ec) {
      if (ec) return c->close_now(is_local ? "cannot connect: " + ec.message() : detail::connect_failure(endpoint, ec));
      c->begin();
    });
    return c;
  }

  void start() override { asio::post(socket_.get_executor(), [self = self_ptr()] { self->begin(); }); }

  void send(wire::OutFrame frame) override {
    if (!faulted(frame)) send_unfaulted(std::move(frame));
  }

  // The frames go out with one gather write when the connection is idle.
  void send_batch(std::vector<wire::OutFrame> frames) override {
    std::erase_if(frames, [this](wire::OutFrame& f) { return faulted(f); });
    if (frames.size() == 1) return send_unfaulted(std::move(frames.front()));
    for (auto& f : frames) prepare(f);
    std::vector<wire::OutFrame> written;  // destroyed after the lock: a deleter may send
    std::lock_guard lock(write_mu_);
    if (closed_ || frames.empty()) return;
    const bool idle = connected_ && !writing_ && queue_.empty();
    for (auto& f : frames) queue_.push_back(std::move(f));
    if (idle && write_queue_now(written)) return;
    if (connected_ && !writing_) {
      writing_ = true;
      asio::post(socket_.get_executor(), [self = self_ptr()] { self->write_more(); });
    }
  }

  void close(const std::string& reason) override {
    asio::post(socket_.get_executor(), [self = self_ptr(), reason] { self->close_now(reason); });
  }

  std::string remote() const override {
    std::error_code ec;
    auto ep = socket_.remote_endpoint(ec);
    if (ec) return "(unconnected)";
    if constexpr (is_local) {
      return "local socket";
    } else {
      return ep.address().to_string() + ":" + std::to_string(ep.port());
    }
  }

  const char* kind() const override { return is_local ? "local" : "tcp"; }

  std::size_t shared_bytes_in_use() const override { return sharing_ ? sharing_->bytes_in_use() : 0; }
  std::string authenticated_name() const override { return authenticated_name_; }
  void trust() override { reader_.set_limits(limits_); }
  bool more_buffered() const override { return recv_begin_ < recv_end_; }

 private:
  static constexpr std::size_t kRecvBuffer = 64 * 1024;
  static constexpr std::size_t kMaxIov = detail::kMaxIov;

  std::shared_ptr<StreamConnection> self_ptr() { return std::static_pointer_cast<StreamConnection>(shared_from_this()); }

  void send_unfaulted(wire::OutFrame frame) {
    prepare(frame);
    std::lock_guard lock(write_mu_);
    if (closed_) return;
    // An idle connection writes on the sending thread: no hop to the I/O thread, which only
    // takes over what the socket does not accept at once (and batches frames queued meanwhile).
    // A burst is the exception (detail/burst_detector.hpp).
    if (connected_ && !writing_ && queue_.empty() && frame.gates.empty() && !burst_.in_burst(frame) &&
        write_now(frame)) {
      burst_.direct_write_done();
      return;
    }
    queue_.push_back(std::move(frame));
    if (connected_ && !writing_) {
      writing_ = true;
      asio::post(socket_.get_executor(), [self = self_ptr()] { self->write_more(); });
    }
  }

  // The connection is up: with a secret, the peer proves itself first (detail/handshake.hpp);
  // until then nothing is read into the frame reader and queued frames wait.
  void begin() {
    if (!auth_.enabled()) return begin_frames();
    std::shared_ptr<detail::Handshake> handshake;
    try {
      handshake = std::make_shared<detail::Handshake>(auth_, dialed_);
    } catch (const Error& e) {
      return close_now(e.what());
    }
    handshake_timer_.expires_after(auth_.timeout);
    handshake_timer_.async_wait([self = self_ptr()](std::error_code ec) {
      // (A deadline that expired as the handshake finished is queued even when cancelled.)
      if (!ec && self->authenticated_name_.empty())
        self->close_now("no authentication within " + std::to_string(self->auth_.timeout.count()) + " ms");
    });
    detail::run_handshake(socket_, handshake, [self = self_ptr(), handshake](std::optional<std::string> failure) {
      self->handshake_timer_.cancel();
      if (self->closed_) return;
      if (failure) {
        remora::detail::log_peer_warning("closing connection from " + self->remote() + ": authentication failed: " + *failure);
        return self->close_now("authentication failed: " + *failure);
      }
      self->authenticated_name_ = handshake->peer_name();
      self->begin_frames();
    });
  }

  // Then: set the socket up, read and write frames.
  void begin_frames() {
    bool queued = false;  // frames sent before the connection was up: this call writes them
    {
      std::unique_lock lock(write_mu_);
      if (closed_) return;
      if (sharing_) {
        if (!sharing_->send_preface(socket_.native_handle())) {
          lock.unlock();
          return close_now("cannot send the local preface");
        }
      } else {
        std::error_code ignored;
        socket_.set_option(asio::ip::tcp::no_delay(true), ignored);
        detail::watch_link(socket_.native_handle(), link_timeout_);
      }
      connected_ = true;
      queued = writing_ = !queue_.empty();
    }
    if (sharing_)
      read_preface();
    else
      read_more();
    // Only when this call set writing_: otherwise a sender that queued meanwhile has posted
    // write_more itself, and a second one would write the same frames again.
    if (queued) write_more();
  }

  // What a frame needs before its bytes can be written: large tensors into shared memory or
  // handed over by CUDA IPC handle (local), GPU tensors staged through host memory (large ones in
  // chunks sent as they arrive, the rest whole, here).
  void prepare(wire::OutFrame& frame) {
    if (sharing_) sharing_->prepare(frame);
    detail::stage_in_chunks(frame);
    frame.stage_to_host();
  }

  // Writes the whole queue with one non-blocking call (write_mu_ held, idle connection, no
  // gates); true if it all went out. Otherwise the rest stays queued for write_more, with
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
    const ssize_t n = detail::gather_send(socket_.native_handle(), iov, n_iov);
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
  // failed, which the I/O thread then reports). Otherwise the unwritten rest is for write_more.
  // Called with write_mu_ held, so the socket cannot be closed meanwhile.
  bool write_now(const wire::OutFrame& frame) {
    auto segments = frame.segments();
    if (segments.size() > kMaxIov) return false;
    iovec iov[kMaxIov];
    std::size_t total = 0;
    for (std::size_t i = 0; i < segments.size(); ++i) {
      iov[i] = {const_cast<std::byte*>(segments[i].data()), segments[i].size()};
      total += segments[i].size();
    }
    const ssize_t n = detail::gather_send(socket_.native_handle(), iov, segments.size());
    if (n == static_cast<ssize_t>(total)) return true;
    if (n < 0) return write_failed();
    front_written_ = static_cast<std::size_t>(n);
    return false;
  }

  // A write on a sending thread failed: the strand closes the connection (and reports why).
  bool write_failed() {
    asio::post(socket_.get_executor(), [self = self_ptr(), why = std::string(std::strerror(errno))] {
      self->close_now("write failed: " + why);
    });
    return true;
  }

  // Reads the peer's preface (with its arena's descriptor) before any frame.
  void read_preface() {
    try {
      if (sharing_->read_preface(socket_.native_handle()) == detail::LocalSharing::Preface::incomplete) {
        socket_.async_wait(Socket::wait_read, [self = self_ptr()](std::error_code ec) {
          if (ec) return self->close_now(describe(ec));
          self->read_preface();
        });
        return;
      }
      std::weak_ptr<StreamConnection> weak = self_ptr();
      sharing_->accept_placements(reader_, [weak](std::uint64_t what, std::uint8_t flags) {
        if (auto self = weak.lock()) self->send_release(what, flags);
      });
    } catch (const ProtocolError& e) {
      return reject(e);
    } catch (const Error& e) {
      return close_now(e.what());
    }
    read_more();
  }

  // A transport frame that gives something back to its sender (LocalSharing::on_release).
  void send_release(std::uint64_t what, std::uint8_t flags) {
    wire::OutFrame release;
    release.head.resize(sizeof(wire::FrameHeader));
    wire::FrameHeader h;
    h.kind = static_cast<std::uint8_t>(wire::FrameKind::transport);
    h.flags = flags;
    h.request_id = what;
    std::memcpy(release.head.data(), &h, sizeof h);
    send(std::move(release));
  }

  // Frames are destroyed outside write_mu_: a tensor's deleter may send (a release) itself.
  void close_now(const std::string& reason) {
    detail::FrameQueue dropped;
    {
      std::lock_guard lock(write_mu_);
      if (closed_) return;
      closed_ = true;
      std::error_code ignored;
      socket_.shutdown(Socket::shutdown_both, ignored);
      socket_.close(ignored);
      dropped.swap(queue_);
    }
    dropped.clear();
    if (on_close_) on_close_(shared_from_this(), reason);
  }

  // On the strand, while writing_: writes what is queued, several frames per call, up to the
  // first gate that is still closed (a GPU chunk not yet in host memory: checked again shortly).
  void write_more() {
    std::size_t frames = 0;       // frames written whole by this write
    std::uint64_t partial = 0;    // bytes of the frame after them written by it
    {
      std::lock_guard lock(write_mu_);
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
        gate_timer_.async_wait([self = self_ptr()](std::error_code) { self->write_more(); });
        return;
      }
    }
    asio::async_write(socket_, write_list_.buffers(), [self = self_ptr(), frames, partial](std::error_code ec, std::size_t) {
      if (ec) return self->close_now("write failed: " + ec.message());
      std::vector<wire::OutFrame> sent;
      {
        std::lock_guard lock(self->write_mu_);
        for (std::size_t i = 0; i < frames && !self->queue_.empty(); ++i) {
          sent.push_back(self->queue_.take_front());
        }
        self->front_written_ = (frames > 0 ? 0 : self->front_written_) + partial;
      }
      sent.clear();
      self->write_more();
    });
  }

  void read_more() {
    if (closed_) return;
    // Bytes already buffered belong to the frame in progress: hand them over first.
    if (recv_begin_ < recv_end_) return consume();
    auto direct = reader_.next_buffer();
    if (direct.size() >= kRecvBuffer) {  // a large segment: read straight into its final memory
      socket_.async_read_some(asio::buffer(direct.data(), direct.size()),
                              [self = self_ptr()](std::error_code ec, std::size_t n) {
                                if (ec) return self->close_now(describe(ec));
                                self->burst_.read_done();
                                try {
                                  self->reader_.commit(n);
                                  self->deliver_if_done();
                                } catch (const ProtocolError& e) {
                                  return self->reject(e);
                                } catch (const std::exception& e) {
                                  return self->fail_read(e);
                                }
                                self->read_more();
                              });
      return;
    }
    socket_.async_read_some(asio::buffer(recv_), [self = self_ptr()](std::error_code ec, std::size_t n) {
      if (ec) return self->close_now(describe(ec));
      self->burst_.read_done();
      self->recv_begin_ = 0;
      self->recv_end_ = n;
      self->consume();
    });
  }

  void consume() {
    try {
      while (recv_begin_ < recv_end_ && !closed_) {
        recv_begin_ += reader_.feed(std::span<const std::byte>(recv_.data() + recv_begin_, recv_end_ - recv_begin_));
        deliver_if_done();
      }
    } catch (const ProtocolError& e) {
      return reject(e);
    } catch (const std::exception& e) {
      return fail_read(e);
    }
    read_more();
  }

  void reject(const ProtocolError& e) {
    remora::detail::log_peer_warning("closing connection from " + remote() + ": " + e.reason());
    close_now(std::string("protocol error: ") + e.reason());
  }

  // Anything else a received frame raised (a tensor this process cannot allocate, a device it
  // lacks, an error of the handler it went to): that connection closes, the process goes on.
  void fail_read(const std::exception& e) {
    remora::detail::log_peer_warning("closing connection from " + remote() + ": a received frame failed: " + e.what());
    close_now(std::string("a received frame failed: ") + e.what());
  }

  void deliver_if_done() {
    if (!reader_.done()) return;
    wire::InFrame frame = reader_.take();
    if (frame.kind() == wire::FrameKind::transport) return on_transport_frame(frame);
    on_frame_(shared_from_this(), std::move(frame));
  }

  // The peer let go of a shared tensor: its range (or GPU tensor) is free again.
  void on_transport_frame(const wire::InFrame& frame) {
    if (!sharing_) throw ProtocolError("a transport frame on a connection that shares nothing");
    sharing_->on_release(frame.request_id(), frame.header.flags);
  }

  static std::string describe(const std::error_code& ec) {
    return ec == asio::error::eof ? std::string("connection closed by peer") : "read failed: " + ec.message();
  }

  Socket socket_;
  wire::FrameReader reader_;
  wire::Limits limits_;  // once the peer is known (trust()); before, Limits::before_identity()
  FrameHandler on_frame_;
  CloseHandler on_close_;
  std::unique_ptr<detail::LocalSharing> sharing_;  // local connections only
  std::vector<std::byte> recv_;
  std::size_t recv_begin_ = 0, recv_end_ = 0;
  // The write side, shared by sending threads and the strand.
  std::mutex write_mu_;
  detail::FrameQueue queue_;
  std::size_t front_written_ = 0;  // bytes of queue_.front() a direct write already sent
  detail::WriteList write_list_;  // the write in flight on the strand
  asio::steady_timer gate_timer_;  // retries a write held up by a gate
  bool writing_ = false;    // a write is in flight on the strand
  detail::BurstDetector burst_;  // under write_mu_, except its read count
  bool connected_ = false;  // frames queue until begin_frames()
  AuthOptions auth_;
  bool dialed_ = false;             // this side connected (connect()); else accepted
  asio::steady_timer handshake_timer_;
  std::string authenticated_name_;  // the peer's name, once it proved itself
  std::atomic<bool> closed_{false};
};

using TcpConnection = StreamConnection<asio::ip::tcp>;
using LocalConnection = StreamConnection<asio::local::stream_protocol>;

}  // namespace remora::transport
