#pragma once
// One TCP connection carrying frames both ways.
//
// Writes: frames queue up and go out with gather I/O, several queued frames in one write, each
// tensor straight from its memory. Reads: small reads go through a receive buffer and the frame
// reader; a large tensor is read straight into the tensor allocated for it. Every handler runs
// on the connection's strand. A protocol error or an I/O error closes the connection once, and
// the close handler learns why; the connection never throws into Asio.
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <asio/buffer.hpp>
#include <asio/connect.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/post.hpp>
#include <asio/strand.hpp>
#include <asio/write.hpp>

#include "remora/transport/log.hpp"
#include "remora/wire/frame.hpp"

namespace remora::transport {

class TcpConnection : public std::enable_shared_from_this<TcpConnection> {
 public:
  using FrameHandler = std::function<void(const std::shared_ptr<TcpConnection>&, wire::InFrame&&)>;
  using CloseHandler = std::function<void(const std::shared_ptr<TcpConnection>&, const std::string& reason)>;

  TcpConnection(asio::ip::tcp::socket socket, const wire::Limits& limits, FrameHandler on_frame, CloseHandler on_close)
      : socket_(std::move(socket)), reader_(limits), on_frame_(std::move(on_frame)), on_close_(std::move(on_close)),
        recv_(kRecvBuffer) {}

  // A connection to `endpoint`; frames sent before it is up wait in the queue.
  static std::shared_ptr<TcpConnection> connect(asio::any_io_executor ex, asio::ip::tcp::endpoint endpoint,
                                                const wire::Limits& limits, FrameHandler on_frame,
                                                CloseHandler on_close) {
    auto c = std::make_shared<TcpConnection>(asio::ip::tcp::socket(asio::make_strand(ex)), limits,
                                             std::move(on_frame), std::move(on_close));
    c->connected_ = false;
    c->socket_.async_connect(endpoint, [c](std::error_code ec) {
      if (ec) return c->close("cannot connect: " + ec.message());
      if (c->closed_) return;
      c->connected_ = true;
      std::error_code ignored;
      c->socket_.set_option(asio::ip::tcp::no_delay(true), ignored);
      c->read_more();
      c->write_more();
    });
    return c;
  }

  // Starts reading an accepted connection.
  void start() {
    asio::post(socket_.get_executor(), [self = shared_from_this()] {
      std::error_code ignored;
      self->socket_.set_option(asio::ip::tcp::no_delay(true), ignored);
      self->read_more();
    });
  }

  // Queues a frame; thread-safe. Frames sent after close are dropped (the close handler has
  // already failed whatever waited on them).
  void send(wire::OutFrame frame) {
    asio::post(socket_.get_executor(), [self = shared_from_this(), f = std::move(frame)]() mutable {
      if (self->closed_) return;
      self->queue_.push_back(std::move(f));
      if (!self->writing_ && self->connected_) self->write_more();
    });
  }

  // Closes the connection (idempotent); `reason` reaches the close handler.
  void close(const std::string& reason) {
    asio::post(socket_.get_executor(), [self = shared_from_this(), reason] { self->close_now(reason); });
  }

  std::string remote() const {
    std::error_code ec;
    auto ep = socket_.remote_endpoint(ec);
    return ec ? std::string("(unconnected)") : ep.address().to_string() + ":" + std::to_string(ep.port());
  }

  // Set by the agent once the peer has introduced itself.
  std::uint32_t peer_id = UINT32_MAX;

 private:
  static constexpr std::size_t kRecvBuffer = 64 * 1024;
  static constexpr std::size_t kMaxIov = 256;

  void close_now(const std::string& reason) {
    if (closed_) return;
    closed_ = true;
    std::error_code ignored;
    socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
    queue_.clear();
    if (on_close_) on_close_(shared_from_this(), reason);
  }

  void write_more() {
    if (queue_.empty() || closed_) {
      writing_ = false;
      return;
    }
    writing_ = true;
    iov_.clear();
    std::size_t frames = 0;
    for (auto& f : queue_) {
      auto segments = f.segments();
      if (frames > 0 && iov_.size() + segments.size() > kMaxIov) break;
      for (auto s : segments) iov_.emplace_back(s.data(), s.size());
      ++frames;
    }
    asio::async_write(socket_, iov_, [self = shared_from_this(), frames](std::error_code ec, std::size_t) {
      if (ec) return self->close_now("write failed: " + ec.message());
      for (std::size_t i = 0; i < frames && !self->queue_.empty(); ++i) self->queue_.pop_front();
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
                              [self = shared_from_this()](std::error_code ec, std::size_t n) {
                                if (ec) return self->close_now(describe(ec));
                                try {
                                  self->reader_.commit(n);
                                  self->deliver_if_done();
                                } catch (const ProtocolError& e) {
                                  return self->reject(e);
                                }
                                self->read_more();
                              });
      return;
    }
    socket_.async_read_some(asio::buffer(recv_), [self = shared_from_this()](std::error_code ec, std::size_t n) {
      if (ec) return self->close_now(describe(ec));
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
    }
    read_more();
  }

  void reject(const ProtocolError& e) {
    detail::log_warning("closing connection from " + remote() + ": " + e.reason());
    close_now(std::string("protocol error: ") + e.reason());
  }

  void deliver_if_done() {
    if (!reader_.done()) return;
    wire::InFrame frame = reader_.take();
    on_frame_(shared_from_this(), std::move(frame));
  }

  static std::string describe(const std::error_code& ec) {
    return ec == asio::error::eof ? std::string("connection closed by peer") : "read failed: " + ec.message();
  }

  asio::ip::tcp::socket socket_;
  wire::FrameReader reader_;
  FrameHandler on_frame_;
  CloseHandler on_close_;
  std::vector<std::byte> recv_;
  std::size_t recv_begin_ = 0, recv_end_ = 0;
  std::deque<wire::OutFrame> queue_;
  std::vector<asio::const_buffer> iov_;
  bool writing_ = false;
  bool connected_ = true;
  bool closed_ = false;
};

}  // namespace remora::transport
