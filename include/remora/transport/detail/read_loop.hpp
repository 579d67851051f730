#pragma once
// The read half of a connection, shared by every stream it runs on (a TCP or unix socket, a TLS
// stream): bytes read into a buffer (or, for a large tensor segment, straight into its final
// memory) are fed to the frame reader, and each whole frame is handed on. A protocol error or any
// other exception a frame raises closes that connection, with the reason; never the process.
//
// CRTP: Derived (a connection, on whose strand every step runs) provides
//   read_stream()        the stream to read from (async_read_some)
//   read_closed()        whether the connection closed (then reading stops)
//   after_read()         bookkeeping once bytes came in (may do nothing)
//   on_read_frame(f)     a whole frame
//   close_now(reason)    closes the connection, once
//   remote()             the peer's address, for the log
//   self_ptr()           a shared_ptr that keeps the connection alive across a read
//   describe(ec)         (static) why a read failed
#include <cstddef>
#include <exception>
#include <memory>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include <asio/buffer.hpp>

#include "remora/core/errors.hpp"
#include "remora/core/log.hpp"
#include "remora/wire/frame_reader.hpp"

namespace remora::transport::detail {

template <class Derived>
class FrameReadLoop {
 public:
  // Bytes read and not yet fed to the frame reader (a batch of calls may be waiting in them).
  bool bytes_buffered() const { return recv_begin_ < recv_end_; }

 protected:
  static constexpr std::size_t kRecvBuffer = 64 * 1024;

  // (The receive buffer is left uninitialized: a connection's memory is then what its reads have
  // touched, a page or two for one that carries small calls, not the whole 64 KiB.)
  explicit FrameReadLoop(const wire::Limits& first) : reader_(first), recv_(new std::byte[kRecvBuffer]) {}

  void read_more() {
    auto& d = derived();
    if (d.read_closed()) return;
    // Bytes already buffered belong to the frame in progress: hand them over first.
    if (recv_begin_ < recv_end_) return consume();
    auto direct = reader_.next_buffer();
    if (direct.size() >= kRecvBuffer) {  // a large segment: read straight into its final memory
      d.read_stream().async_read_some(asio::buffer(direct.data(), direct.size()),
                                      [self = d.self_ptr(), this](std::error_code ec, std::size_t n) {
                                        if (ec) return derived().close_now(Derived::describe(ec));
                                        derived().after_read();
                                        if (guarded([&] {
                                              reader_.commit(n);
                                              deliver_if_done();
                                            }))
                                          read_more();
                                      });
      return;
    }
    d.read_stream().async_read_some(asio::buffer(recv_.get(), kRecvBuffer), [self = d.self_ptr(), this](std::error_code ec, std::size_t n) {
      if (ec) return derived().close_now(Derived::describe(ec));
      derived().after_read();
      recv_begin_ = 0;
      recv_end_ = n;
      consume();
    });
  }

  void reject(const ProtocolError& e) {
    remora::detail::log_peer_warning("closing connection from " + derived().remote() + ": " + e.reason());
    derived().close_now(std::string("protocol error: ") + e.reason());
  }

  // Anything else a received frame raised (a tensor this process cannot allocate, a device it
  // lacks, an error of the handler it went to): that connection closes, the process goes on.
  void fail_read(const std::exception& e) {
    remora::detail::log_peer_warning("closing connection from " + derived().remote() +
                                     ": a received frame failed: " + e.what());
    derived().close_now(std::string("a received frame failed: ") + e.what());
  }

  wire::FrameReader reader_;

 private:
  Derived& derived() { return static_cast<Derived&>(*this); }

  void consume() {
    if (guarded([&] {
          while (recv_begin_ < recv_end_ && !derived().read_closed()) {
            recv_begin_ += reader_.feed(std::span<const std::byte>(recv_.get() + recv_begin_, recv_end_ - recv_begin_));
            deliver_if_done();
          }
        }))
      read_more();
  }

  // Runs `step` (feeding the reader, handing frames on); false when it raised, the connection
  // then closing with the reason.
  template <class Step>
  bool guarded(Step&& step) {
    try {
      step();
      return true;
    } catch (const ProtocolError& e) {
      reject(e);
    } catch (const std::exception& e) {
      fail_read(e);
    }
    return false;
  }

  void deliver_if_done() {
    if (!reader_.done()) return;
    derived().on_read_frame(reader_.take());
  }

  std::unique_ptr<std::byte[]> recv_;
  std::size_t recv_begin_ = 0, recv_end_ = 0;
};

}  // namespace remora::transport::detail
