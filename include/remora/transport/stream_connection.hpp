#pragma once
// One stream connection carrying frames both ways: TCP, or a unix socket to a process of the same
// host ("local"), where large tensors cross through shared memory instead of the socket.
//
// Writes: detail/frame_writer.hpp (an idle connection writes on the sending thread; otherwise the
// strand writes what queued, several frames per write). Reads: small reads go through a receive
// buffer and the frame reader; a large tensor is read straight into the tensor allocated for it. Every handler runs
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
#include "remora/transport/detail/cuda_staging.hpp"
#include "remora/transport/detail/frame_writer.hpp"
#include "remora/transport/detail/handshake.hpp"
#include "remora/transport/detail/peer_credentials.hpp"
#include "remora/transport/detail/read_loop.hpp"
#include "remora/transport/detail/link_watch.hpp"
#include "remora/transport/detail/local_sharing.hpp"
#include "remora/core/log.hpp"
#include "remora/wire/frame_reader.hpp"

namespace remora::transport {

template <class Protocol>
class StreamConnection final : public Connection, public detail::FrameReadLoop<StreamConnection<Protocol>> {
  friend class detail::FrameReadLoop<StreamConnection>;
  using ReadLoop = detail::FrameReadLoop<StreamConnection>;
  using ReadLoop::reader_;
  using ReadLoop::read_more;
  using ReadLoop::reject;

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
      : ReadLoop(wire::Limits::before_identity()),
        socket_(std::forward<SocketOrExecutor>(socket)),
        limits_(limits),
        on_frame_(std::move(on_frame)),
        on_close_(std::move(on_close)),
        writer_(
            socket_, [this] { return std::static_pointer_cast<void>(shared_from_this()); },
            [this](const std::string& why) { close_now(why); }),
        auth_(std::move(auth)),
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
    writer_.send_batch(std::move(frames));
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
  bool more_buffered() const override { return this->bytes_buffered(); }

 private:
  using Writer = detail::FrameWriter<Socket>;

  std::shared_ptr<StreamConnection> self_ptr() { return std::static_pointer_cast<StreamConnection>(shared_from_this()); }

  void send_unfaulted(wire::OutFrame frame) {
    prepare(frame);
    writer_.send(std::move(frame));
  }

  // The connection is up: with a secret, the peer proves itself first (detail/handshake.hpp);
  // until then nothing is read into the frame reader and queued frames wait.
  void begin() {
    if constexpr (is_local) {  // same user or root only, whatever the group's settings
      if (auto why = detail::untrusted_local_peer(socket_.native_handle())) {
        remora::detail::log_peer_warning(std::string(dialed_ ? "not talking to" : "refusing") +
                                         " a local connection: " + *why);
        return close_now("refused: " + *why);
      }
    }
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
      if (self->writer_.closed()) return;
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
    const auto opened = writer_.open([&] {
      if (sharing_) return sharing_->send_preface(socket_.native_handle());
      std::error_code ignored;
      socket_.set_option(asio::ip::tcp::no_delay(true), ignored);
      detail::watch_link(socket_.native_handle(), link_timeout_);
      return true;
    });
    if (opened == Writer::Opened::closed) return;
    if (opened == Writer::Opened::setup_failed) return close_now("cannot send the local preface");
    if (sharing_)
      read_preface();
    else
      read_more();
    // Only when frames were sent before the connection was up: a sender that queues from now on
    // starts the strand's write itself.
    if (opened == Writer::Opened::queued) writer_.write_queued();
  }

  // What a frame needs before its bytes can be written: large tensors into shared memory or
  // handed over by CUDA IPC handle (local), GPU tensors staged through host memory (large ones in
  // chunks sent as they arrive, the rest whole, here).
  void prepare(wire::OutFrame& frame) {
    if (sharing_) sharing_->prepare(frame);
    detail::stage_in_chunks(frame);
    frame.stage_to_host();
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

  // Once: the close handler learns why.
  void close_now(const std::string& reason) {
    if (writer_.close() && on_close_) on_close_(shared_from_this(), reason);
  }

  // The read loop's hooks (detail/read_loop.hpp).
  Socket& read_stream() { return socket_; }
  bool read_closed() const { return writer_.closed(); }
  void after_read() { writer_.read_done(); }
  void on_read_frame(wire::InFrame&& frame) {
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
  wire::Limits limits_;  // once the peer is known (trust()); before, Limits::before_identity()
  FrameHandler on_frame_;
  CloseHandler on_close_;
  std::unique_ptr<detail::LocalSharing> sharing_;  // local connections only
  Writer writer_;  // the write half, shared by sending threads and the strand; owns the closed flag
  AuthOptions auth_;
  bool dialed_ = false;             // this side connected (connect()); else accepted
  asio::steady_timer handshake_timer_;
  std::string authenticated_name_;  // the peer's name, once it proved itself
};

using TcpConnection = StreamConnection<asio::ip::tcp>;
using LocalConnection = StreamConnection<asio::local::stream_protocol>;

}  // namespace remora::transport
