#pragma once
// An agent's connections: per peer the one connection that carries calls both ways, the
// accepted connections whose peer has not said who it is yet, and why a peer was lost.
// Thread-safe; one mutex guards everything. A peer's entry is made when it is first named (an
// elastic group's ids keep growing as members join, and only the ids met cost anything).
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "remora/transport/connection.hpp"

namespace remora::detail {

class PeerLinks {
 public:
  using Link = std::shared_ptr<transport::Connection>;

  // The connection to `peer`, made by `connect()` (under the lock: one connection per peer) when
  // there is none yet.
  template <class Connect>
  Link get(std::uint32_t peer, Connect&& connect) {
    std::lock_guard lock(mu_);
    auto& link = slot(peer).link;
    if (!link) link = connect();
    return link;
  }

  // Accepted connections from one address that have not said who they are, at most: a peer makes
  // one connection to a worker, so more are strangers (a flood); they are refused at once.
  static constexpr std::size_t kMaxUnknownPerAddress = 64;

  // Keeps `conn`, just accepted from `address` (its host, without the port); false (and not
  // kept) when that address already has kMaxUnknownPerAddress connections that said nothing.
  bool accepted(const Link& conn, const std::string& address) {
    std::lock_guard lock(mu_);
    std::size_t unknown = 0;
    for (const auto& a : accepted_)
      if (a.address == address && a.conn->peer_id == UINT32_MAX) ++unknown;
    if (unknown >= kMaxUnknownPerAddress) return false;
    accepted_.push_back({conn, std::chrono::steady_clock::now(), address});
    return true;
  }

  // Accepted connections that were accepted before `before` and have not said who they are.
  std::vector<Link> silent_since(std::chrono::steady_clock::time_point before) const {
    std::lock_guard lock(mu_);
    std::vector<Link> out;
    for (const auto& a : accepted_)
      if (a.at < before && a.conn->peer_id == UINT32_MAX) out.push_back(a.conn);
    return out;
  }

  // `conn`, an accepted connection, said it comes from `peer`: it carries calls to the peer too,
  // unless this worker already connected to it.
  void introduced(std::uint32_t peer, const Link& conn) {
    std::lock_guard lock(mu_);
    conn->peer_id = peer;
    if (auto& link = slot(peer).link; !link) link = conn;
  }

  // `conn` closed. Returns true when its peer is now lost: it was the connection that carries
  // calls to the peer (another one that said the peer's name, a duplicate or an impostor, loses
  // nothing: the link itself reports the peer's death), and the agent is `running` (a stopping
  // agent closes every connection itself).
  bool closed(const Link& conn, const std::string& reason, bool running) {
    std::lock_guard lock(mu_);
    std::erase_if(accepted_, [&](const Accepted& a) { return a.conn == conn; });
    const std::uint32_t peer = conn->peer_id;
    const auto it = peers_.find(peer);
    if (it == peers_.end()) return false;  // it never said who it is
    auto& p = it->second;
    add(p.closed_traffic, *conn);
    if (p.link != conn) return false;
    p.link.reset();
    if (!running || !p.lost.empty()) return false;  // lost once (it left, or was replaced)
    p.lost = reason;
    return true;
  }

  // `peer` is gone (it left, or a new incarnation of its name replaced it): returns false when it
  // was already lost, else, with `take_link`, its connection taken out, for the caller to close.
  // (A peer that leaves closes its connection itself, after the answer to its leave.)
  std::pair<bool, Link> mark_lost(std::uint32_t peer, const std::string& reason, bool take_link) {
    if (peer == UINT32_MAX) return {false, nullptr};
    std::lock_guard lock(mu_);
    auto& p = slot(peer);
    if (!p.lost.empty()) return {false, nullptr};
    p.lost = reason;
    return {true, take_link ? std::exchange(p.link, nullptr) : nullptr};
  }

  // Why `peer` was lost; empty while it is alive.
  std::string lost_reason(std::uint32_t peer) const {
    std::lock_guard lock(mu_);
    const auto it = peers_.find(peer);
    return it != peers_.end() ? it->second.lost : std::string();
  }
  bool is_lost(std::uint32_t peer) const {
    std::lock_guard lock(mu_);
    const auto it = peers_.find(peer);
    return it != peers_.end() && !it->second.lost.empty();
  }

  // "tcp", "tls", "local", or "" while no connection to `peer` is open.
  std::string kind_to(std::uint32_t peer) const {
    std::lock_guard lock(mu_);
    const auto it = peers_.find(peer);
    return it != peers_.end() && it->second.link ? it->second.link->kind() : "";
  }

  std::size_t shared_bytes_in_use() const {
    std::lock_guard lock(mu_);
    std::size_t n = 0;
    for (const auto& [id, p] : peers_)
      if (p.link) n += p.link->shared_bytes_in_use();
    for (const auto& a : accepted_) n += a.conn->shared_bytes_in_use();
    return n;
  }

  // Per peer: frames and bytes of its connections, open and closed, and how many are open.
  struct PeerTraffic {
    std::uint64_t frames_sent = 0, bytes_sent = 0, frames_received = 0, bytes_received = 0;
    std::size_t connections = 0;
  };
  std::unordered_map<std::uint32_t, PeerTraffic> traffic() const {
    std::lock_guard lock(mu_);
    std::unordered_map<std::uint32_t, PeerTraffic> out;
    for (const auto& [id, p] : peers_) out[id] = p.closed_traffic;
    for_each_open([&](const Link& conn) {
      if (conn->peer_id == UINT32_MAX) return;  // not introduced yet
      auto& t = out[conn->peer_id];
      add(t, *conn);
      ++t.connections;
    });
    return out;
  }
  // Connections open now, introduced or not.
  std::size_t open_connections() const {
    std::lock_guard lock(mu_);
    std::size_t n = 0;
    for_each_open([&](const Link&) { ++n; });
    return n;
  }

  // Asks every connection to close (each reports it through its close handler).
  void close_all(const std::string& reason) {
    std::lock_guard lock(mu_);
    for (auto& [id, p] : peers_)
      if (p.link) p.link->close(reason);
    for (auto& a : accepted_) a.conn->close(reason);
  }

  // Drops every connection (once no I/O thread is left to use them).
  void clear() {
    std::lock_guard lock(mu_);
    for (auto& [id, p] : peers_) p.link = nullptr;
    accepted_.clear();
  }

 private:
  mutable std::mutex mu_;
  struct Peer {
    Link link;                  // the connection that carries calls both ways; null: none open
    std::string lost;           // why it is gone; empty while it is alive
    PeerTraffic closed_traffic;  // its closed connections' traffic
  };
  std::unordered_map<std::uint32_t, Peer> peers_;  // by peer id
  struct Accepted {
    Link conn;
    std::chrono::steady_clock::time_point at;
    std::string address;
  };
  std::vector<Accepted> accepted_;

  // Each open connection once (a link to a peer may also be one it accepted); under mu_.
  template <class F>
  void for_each_open(F&& f) const {
    for (const auto& a : accepted_) f(a.conn);
    for (const auto& entry : peers_) {
      const Link& link = entry.second.link;  // (a lambda may not capture a structured binding in clang 14)
      if (link && std::none_of(accepted_.begin(), accepted_.end(), [&](const Accepted& a) { return a.conn == link; }))
        f(link);
    }
  }
  // `peer`'s entry, made when it is the first of its id (under mu_).
  Peer& slot(std::uint32_t peer) {
    return peers_[peer];
  }

  static void add(PeerTraffic& to, const transport::Connection& conn) {
    const auto& t = conn.traffic();
    to.frames_sent += t.frames_sent.load(std::memory_order_relaxed);
    to.bytes_sent += t.bytes_sent.load(std::memory_order_relaxed);
    to.frames_received += t.frames_received.load(std::memory_order_relaxed);
    to.bytes_received += t.bytes_received.load(std::memory_order_relaxed);
  }
};

}  // namespace remora::detail
