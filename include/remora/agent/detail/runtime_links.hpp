#pragma once
// AgentRuntime's connections: accepting, connecting, the `hello` that tells an accepted
// connection who is calling, and what a closed connection means (its peer is lost).
#include "remora/agent/detail/runtime.hpp"

namespace remora::detail {

template <class Acceptor>
void AgentRuntime::accept_next(Acceptor& acceptor) {
  using Protocol = typename Acceptor::protocol_type;
  using Socket = typename transport::StreamConnection<Protocol>::Socket;
  acceptor.async_accept(asio::make_strand(io_), [this, &acceptor](std::error_code ec, Socket socket) {
    if (ec) return;  // acceptor closed
    auto on_frame_cb = [this](const Link& c, wire::InFrame&& f) { on_frame(c, std::move(f)); };
    auto on_close_cb = [this](const Link& c, const std::string& why) { on_close(c, why); };
    Link conn;
#if REMORA_OPENSSL
    if constexpr (std::is_same_v<Protocol, asio::ip::tcp>)
      if (tls_)
        conn = std::make_shared<transport::TlsConnection>(std::move(socket), tls_, options.limits, on_frame_cb,
                                                          on_close_cb, auth_options(), options.hello_timeout);
#endif
    if (!conn)
      conn = std::make_shared<transport::StreamConnection<Protocol>>(std::move(socket), options.limits, on_frame_cb,
                                                                     on_close_cb, shared_memory_options(),
                                                                     auth_options());
    conn->set_faults(options.test_hooks.faults);
    conn->set_link_timeout(options.link_timeout);
    std::string address = conn->remote();
    if (auto colon = address.rfind(':'); colon != std::string::npos)  // the host, without the port
      address.resize(colon);
    if (links.accepted(conn, address)) {
      conn->start();
    } else {
      log_peer_warning("worker '" + workers[self_id].name + "': refusing a connection from " + address + ": " +
                  std::to_string(PeerLinks::kMaxUnknownPerAddress) + " of its connections have not said who they are");
      conn->close("too many unidentified connections from " + address);
    }
    accept_next(acceptor);
  });
}

inline AgentRuntime::Link AgentRuntime::link_to(std::uint32_t peer) {
  return links.get(peer, [&] {
    auto on_frame_cb = [this](const Link& c, wire::InFrame&& f) { on_frame(c, std::move(f)); };
    auto on_close_cb = [this](const Link& c, const std::string& why) { on_close(c, why); };
    Link conn;
    if (const auto& local = local_sockets_[peer]; !local.empty()) {
      conn = transport::LocalConnection::connect(io_.get_executor(),
                                                 asio::local::stream_protocol::endpoint('\0' + local.substr(1)),
                                                 options.limits, on_frame_cb, on_close_cb, shared_memory_options(),
                                                 auth_options(peer));
    } else {
#if REMORA_OPENSSL
      if (tls_)
        conn = transport::TlsConnection::connect(io_.get_executor(), endpoints_[peer], tls_, options.limits,
                                                 on_frame_cb, on_close_cb, auth_options(peer), options.hello_timeout,
                                                 options.link_timeout);
#endif
      if (!conn)
        conn = transport::TcpConnection::connect(io_.get_executor(), endpoints_[peer], options.limits, on_frame_cb,
                                                 on_close_cb, {}, auth_options(peer), options.link_timeout);
    }
    conn->peer_id = peer;
    conn->set_faults(options.test_hooks.faults);
    conn->send(encode_hello(hello_to(peer)));
    return conn;
  });
}

// On the connection's strand. A frame that breaks the agent's protocol closes its connection.
inline void AgentRuntime::on_frame(const Link& conn, wire::InFrame&& frame) {
  conn->count_received(frame);
  try {
    switch (frame.kind()) {
      case wire::FrameKind::control: {
        if (const auto body = frame.body();
            !body.empty() && std::to_integer<std::uint8_t>(body[0]) ==
                                 static_cast<std::uint8_t>(ControlType::profile_events)) {
          if (conn->peer_id == UINT32_MAX) throw ProtocolError("profile events before hello");
          std::uint8_t type;
          std::vector<c10::IValue> events;
          wire::decode_into(frame, options.limits, type, events);
          if (!remote_profiles.receive(conn->peer_id, frame.request_id(), std::move(events)))
            log_peer_warning("worker '" + workers[self_id].name + "': dropped profile events from worker '" +
                             workers[conn->peer_id].name + "' for a call made to another worker");
          return;
        }
        const Hello hello = decode_hello(frame, options.limits);
        const std::string& name = hello.name;
        // Calls to self never use a connection: a peer that says it is this worker is lying
        // (and would pass for the program itself, which its serving policy trusts).
        if (hello.rank == self_id || name == workers[self_id].name)
          throw ProtocolError("hello as this worker itself ('" + name + "')");
        // Meant for another worker (an earlier incarnation that had this address, say): refused,
        // so that it never runs here.
        if (hello.target != self_id)
          throw ProtocolError("hello from '" + name + "' for worker id " + std::to_string(hello.target) +
                              ", and this is '" + workers[self_id].name + "', id " + std::to_string(self_id) +
                              " (incarnation " + std::to_string(workers[self_id].incarnation) + ")");
        // With a secret, a connection speaks only for the worker it authenticated as.
        if (secret_ && conn->authenticated_name() != name)
          throw ProtocolError("hello as '" + name + "' on a connection authenticated as '" +
                              conn->authenticated_name() + "'");
        if (elastic && !knows(hello.rank))
          register_member({hello.rank,
                           {name, hello.host, hello.port, hello.host_identity, hello.local_socket, secret_ != nullptr,
                            uses_tls()},
                           hello.incarnation,
                           hello.cuda_mps,
                           record_of_hello(hello.devices, workers[self_id].name)},
                          true);
        if (!knows(hello.rank) || workers[hello.rank].name != name ||
            workers[hello.rank].incarnation != hello.incarnation)
          throw ProtocolError("unknown worker '" + name + "' (id " + std::to_string(hello.rank) + ", incarnation " +
                              std::to_string(hello.incarnation) + ")");
        // An elastic member that left, was replaced or was lost has no way back but to join again
        // (a static group serves a lost peer that connects again, though it calls it no more).
        if (const auto lost = links.lost_reason(hello.rank); elastic && !lost.empty())
          throw ProtocolError("hello from worker '" + name + "', which is gone: " + lost);
        const std::uint32_t rank = hello.rank;
        conn->trust();
        return links.introduced(rank, conn);
      }
      case wire::FrameKind::call:
        if (conn->peer_id == UINT32_MAX) throw ProtocolError("call before hello");
        return inbound_.receive(conn, std::move(frame));
      case wire::FrameKind::reply:
      case wire::FrameKind::error:
        if (conn->peer_id == UINT32_MAX) throw ProtocolError("reply before hello");
        return on_reply(conn->peer_id, std::move(frame));
      default:
        throw ProtocolError("unexpected frame kind " + std::to_string(frame.header.kind));
    }
  } catch (const ProtocolError& e) {
    log_peer_warning("worker '" + workers[self_id].name + "': closing connection from " + conn->remote() + ": " +
                     e.reason());
    conn->close("protocol error: " + e.reason());
  }
}

inline void AgentRuntime::on_close(const Link& conn, const std::string& reason) {
  if (!links.closed(conn, reason, state_.load() == State::running)) return;
  // After closed(): a dialing link gets its peer's id under the links' lock, which closed() takes.
  peer_gone(conn->peer_id, reason, MembershipEvent::lost);
}

}  // namespace remora::detail
