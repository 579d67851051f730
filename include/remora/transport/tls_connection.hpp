#pragma once
// One TCP connection carrying frames both ways inside TLS (Asio's ssl::stream over OpenSSL):
// the TLS handshake with certificate checks on both sides, then the secret's challenge-response
// when the group has one (detail/handshake.hpp), then frames.
//
// Unlike StreamConnection, every read and write runs on the strand (a TLS session is not
// thread-safe) and no write happens on a sending thread; a frame is written once all of its
// bytes are in host memory. Large received tensor segments are still read straight into the
// tensor's memory (decrypted there). A protocol or I/O error closes the connection once; nothing
// throws into Asio.
#include "remora/config.hpp"
#include "remora/transport/detail/handshake.hpp"
#include "remora/transport/detail/link_watch.hpp"
#include "remora/transport/detail/read_loop.hpp"

#if REMORA_OPENSSL
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <asio/buffer.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/post.hpp>
#include <asio/ssl.hpp>
#include <asio/steady_timer.hpp>
#include <asio/strand.hpp>
#include <asio/write.hpp>

#include "remora/core/log.hpp"
#include "remora/transport/connection.hpp"
#include "remora/transport/detail/cuda_staging.hpp"
#include "remora/transport/detail/frame_queue.hpp"
#include "remora/transport/detail/gather_send.hpp"
#include "remora/transport/detail/write_list.hpp"
#include "remora/wire/frame_reader.hpp"

namespace remora::transport {

// The TLS settings every connection of an agent shares: its certificate, key and CA, loaded
// once. Throws Error naming the file that could not be used.
inline std::shared_ptr<asio::ssl::context> make_tls_context(const std::string& certificate,
                                                            const std::string& private_key, const std::string& ca) {
  auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls);
  ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                   asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1 |
                   asio::ssl::context::single_dh_use);
  // TLS 1.3 only: its exported keying material is unique to one session, which the secret's
  // proofs are bound to (TLS 1.2 without the extended master secret lets a relay give both of
  // its sessions one master secret).
  if (SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_3_VERSION) != 1)
    throw Error("remora: OpenSSL cannot require TLS 1.3");
  auto use = [](const char* what, const std::string& file, auto&& load) {
    if (file.empty()) throw Error(std::string("remora: TlsOptions::") + what + " is empty");
    std::error_code ec;
    load(file, ec);
    if (ec) throw Error(std::string("remora: TlsOptions::") + what + " '" + file + "' cannot be used: " + ec.message());
  };
  use("certificate", certificate, [&](const std::string& f, std::error_code& ec) { ctx->use_certificate_chain_file(f, ec); });
  use("private_key", private_key,
      [&](const std::string& f, std::error_code& ec) { ctx->use_private_key_file(f, asio::ssl::context::pem, ec); });
  use("ca", ca, [&](const std::string& f, std::error_code& ec) { ctx->load_verify_file(f, ec); });
  // Mutual: an accepting side also wants the dialing side's certificate.
  ctx->set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert);
  return ctx;
}

class TlsConnection final : public Connection, public detail::FrameReadLoop<TlsConnection> {
  friend class detail::FrameReadLoop<TlsConnection>;
  using ReadLoop = detail::FrameReadLoop<TlsConnection>;

 public:
  using Executor = asio::strand<asio::io_context::executor_type>;
  using Tcp = asio::ip::tcp::socket::rebind_executor<Executor>::other;
  using Stream = asio::ssl::stream<Tcp>;

  // `socket` is an accepted socket, or (to connect later) the strand a new socket is made on.
  template <class SocketOrExecutor>
  TlsConnection(SocketOrExecutor&& socket, std::shared_ptr<asio::ssl::context> tls, const wire::Limits& limits,
                FrameHandler on_frame, CloseHandler on_close, AuthOptions auth, std::chrono::milliseconds timeout)
      : ReadLoop(wire::Limits::before_identity()), tls_(std::move(tls)),
        stream_(Tcp(std::forward<SocketOrExecutor>(socket)), *tls_), limits_(limits), on_frame_(std::move(on_frame)),
        on_close_(std::move(on_close)), gate_timer_(stream_.get_executor()),
        auth_(std::move(auth)), timeout_(timeout), handshake_timer_(stream_.get_executor()) {
    reader_.set_device_uploader(detail::make_device_uploader());
  }

  // A connection to `endpoint`; frames sent before it is up wait in the queue.
  static std::shared_ptr<TlsConnection> connect(asio::io_context::executor_type ex, asio::ip::tcp::endpoint endpoint,
                                                std::shared_ptr<asio::ssl::context> tls, const wire::Limits& limits,
                                                FrameHandler on_frame, CloseHandler on_close, AuthOptions auth,
                                                std::chrono::milliseconds timeout,
                                                std::chrono::milliseconds link_timeout = {}) {
    auto c = std::make_shared<TlsConnection>(asio::make_strand(ex), std::move(tls), limits, std::move(on_frame),
                                             std::move(on_close), std::move(auth), timeout);
    c->dialed_ = true;
    c->set_link_timeout(link_timeout);
    std::error_code ignored;
    c->stream_.lowest_layer().open(endpoint.protocol(), ignored);
    detail::watch_link(c->stream_.lowest_layer().native_handle(), link_timeout);
    c->reader_.set_limits(limits);  // this side chose the peer
    c->stream_.lowest_layer().async_connect(endpoint, [c, endpoint](std::error_code ec) {
      if (ec) return c->close_now(detail::connect_failure(endpoint, ec));
      c->begin();
    });
    return c;
  }

  void start() override { asio::post(stream_.get_executor(), [self = self_ptr()] { self->begin(); }); }

  void send(wire::OutFrame frame) override {
    if (faulted(frame)) return;
    detail::stage_in_chunks(frame);
    frame.stage_to_host();
    std::lock_guard lock(write_mu_);
    if (closed_) return;
    queue_.push_back(std::move(frame));
    if (connected_ && !writing_) {
      writing_ = true;
      asio::post(stream_.get_executor(), [self = self_ptr()] { self->write_more(); });
    }
  }

  void close(const std::string& reason) override {
    asio::post(stream_.get_executor(), [self = self_ptr(), reason] { self->close_now(reason); });
  }

  std::string remote() const override {
    std::error_code ec;
    auto ep = stream_.lowest_layer().remote_endpoint(ec);
    if (ec) return "(unconnected)";
    return ep.address().to_string() + ":" + std::to_string(ep.port());
  }
  const char* kind() const override { return "tls"; }
  std::string authenticated_name() const override { return authenticated_name_; }
  void trust() override { reader_.set_limits(limits_); }
  bool more_buffered() const override { return bytes_buffered(); }

 private:

  std::shared_ptr<TlsConnection> self_ptr() { return std::static_pointer_cast<TlsConnection>(shared_from_this()); }

  // TLS first (certificates both ways), then the secret's handshake inside it, then frames; one
  // deadline covers both handshakes.
  void begin() {
    std::error_code ignored;
    stream_.lowest_layer().set_option(asio::ip::tcp::no_delay(true), ignored);
    detail::watch_link(stream_.lowest_layer().native_handle(), link_timeout_);
    handshake_timer_.expires_after(timeout_);
    handshake_timer_.async_wait([self = self_ptr()](std::error_code ec) {
      if (!ec && !self->connected_)
        self->close_now("no TLS and authentication handshake within " + std::to_string(self->timeout_.count()) + " ms");
    });
    const auto side = dialed_ ? asio::ssl::stream_base::client : asio::ssl::stream_base::server;
    stream_.async_handshake(side, [self = self_ptr()](std::error_code ec) {
      if (self->closed_) return;
      if (ec) {
        remora::detail::log_peer_warning("closing connection from " + self->remote() + ": TLS handshake failed: " +
                                    ec.message());
        return self->close_now("TLS handshake failed: " + ec.message());
      }
      self->authenticate();
    });
  }

  void authenticate() {
    if (!auth_.enabled()) return begin_frames();
    std::shared_ptr<detail::Handshake> handshake;
    try {
      handshake = std::make_shared<detail::Handshake>(auth_, dialed_);
      handshake->bind_channel(exported_keying_material());
    } catch (const Error& e) {
      return close_now(e.what());
    }
    detail::run_handshake(stream_, handshake, [self = self_ptr(), handshake](std::optional<std::string> failure) {
      if (self->closed_) return;
      if (failure) {
        remora::detail::log_peer_warning("closing connection from " + self->remote() + ": authentication failed: " + *failure);
        return self->close_now("authentication failed: " + *failure);
      }
      self->authenticated_name_ = handshake->peer_name();
      self->begin_frames();
    });
  }

  // 32 bytes both ends of this TLS session (and nobody else) can compute (RFC 5705): what the
  // secret's proofs are bound to.
  std::vector<std::uint8_t> exported_keying_material() {
    static constexpr char kLabel[] = "EXPORTER-remora-auth";
    std::vector<std::uint8_t> out(32);
    if (SSL_export_keying_material(stream_.native_handle(), out.data(), out.size(), kLabel, sizeof kLabel - 1,
                                   nullptr, 0, 0) != 1)
      throw Error("remora: OpenSSL could not export keying material from the TLS session");
    return out;
  }

  void begin_frames() {
    handshake_timer_.cancel();
    bool queued = false;
    {
      std::lock_guard lock(write_mu_);
      if (closed_) return;
      connected_ = true;
      queued = writing_ = !queue_.empty();
    }
    read_more();
    if (queued) write_more();
  }

  // On the strand, while writing_: writes the queued frames whose bytes are all in host memory,
  // small pieces coalesced (each buffer of a TLS write becomes at least one record).
  void write_more() {
    std::size_t frames = 0;
    {
      std::lock_guard lock(write_mu_);
      if (queue_.empty() || closed_) {
        writing_ = false;
        return;
      }
      write_list_.clear();
      for (auto& f : queue_) {
        if (f.writable_bytes() < f.total_bytes()) break;  // a GPU chunk still on its way to the host
        auto segments = f.segments();
        if (frames > 0 && write_list_.size() + segments.size() > detail::kMaxIov) break;
        for (auto s : segments)
          if (!s.empty()) write_list_.add(s.data(), s.size());
        ++frames;
      }
      if (frames == 0) {
        gate_timer_.expires_after(std::chrono::microseconds(50));
        gate_timer_.async_wait([self = self_ptr()](std::error_code) { self->write_more(); });
        return;
      }
    }
    asio::async_write(stream_, write_list_.buffers(), [self = self_ptr(), frames](std::error_code ec, std::size_t) {
      if (ec) return self->close_now("write failed: " + ec.message());
      std::vector<wire::OutFrame> sent;  // destroyed outside the lock: a deleter may send
      {
        std::lock_guard lock(self->write_mu_);
        for (std::size_t i = 0; i < frames && !self->queue_.empty(); ++i) sent.push_back(self->queue_.take_front());
      }
      sent.clear();
      self->write_more();
    });
  }

  // The read loop's hooks (detail/read_loop.hpp).
  Stream& read_stream() { return stream_; }
  bool read_closed() const { return closed_; }
  void after_read() {}
  void on_read_frame(wire::InFrame&& frame) {
    if (frame.kind() == wire::FrameKind::transport) throw ProtocolError("a transport frame over TLS");
    on_frame_(shared_from_this(), std::move(frame));
  }

  // No TLS close_notify: the peer learns of the close from the TCP stream's end, as without TLS.
  void close_now(const std::string& reason) {
    detail::FrameQueue dropped;
    {
      std::lock_guard lock(write_mu_);
      if (closed_) return;
      closed_ = true;
      std::error_code ignored;
      stream_.lowest_layer().shutdown(Tcp::shutdown_both, ignored);
      stream_.lowest_layer().close(ignored);
      dropped.swap(queue_);
    }
    handshake_timer_.cancel();
    dropped.clear();
    if (on_close_) on_close_(shared_from_this(), reason);
  }

  static std::string describe(const std::error_code& ec) {
    if (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated) return "connection closed by peer";
    return "read failed: " + ec.message();
  }

  std::shared_ptr<asio::ssl::context> tls_;  // shared by the agent's connections; outlives stream_
  Stream stream_;
  wire::Limits limits_;
  FrameHandler on_frame_;
  CloseHandler on_close_;
  std::mutex write_mu_;
  detail::FrameQueue queue_;
  detail::WriteList write_list_;
  asio::steady_timer gate_timer_;
  bool writing_ = false;
  std::atomic<bool> connected_{false};
  AuthOptions auth_;
  std::chrono::milliseconds timeout_;
  bool dialed_ = false;
  asio::steady_timer handshake_timer_;
  std::string authenticated_name_;
  std::atomic<bool> closed_{false};
};

}  // namespace remora::transport
#endif  // REMORA_OPENSSL
