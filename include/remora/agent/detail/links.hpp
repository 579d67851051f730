#pragma once
// An agent's connections: per peer the one connection that carries calls both ways, the
// accepted connections whose peer has not said who it is yet, and why a peer was lost.
// Thread-safe; one mutex guards everything.
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "remora/transport/connection.hpp"

namespace remora::detail {

class PeerLinks {
 public:
  using Link = std::shared_ptr<transport::Connection>;

  // Called once the group is known.
  void resize(std::size_t workers) {
    std::lock_guard lock(mu_);
    links_.resize(workers);
    lost_.resize(workers);
    closed_traffic_.resize(workers);
  }

  // The connection to `peer`, made by `connect()` (under the lock: one connection per peer) when
  // there is none yet.
  template <class Connect>
  Link get(std::uint32_t peer, Connect&& connect) {
    std::lock_guard lock(mu_);
    if (!links_[peer]) links_[peer] = connect();
    return links_[peer];
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
    if (!links_[peer]) links_[peer] = conn;
  }

  // `conn` closed. Returns true when its peer is now lost: it was the connection that carries
  // calls to the peer (another one that said the peer's name, a duplicate or an impostor, loses
  // nothing: the link itself reports the peer's death), and the agent is `running` (a stopping
  // agent closes every connection itself).
  bool closed(const Link& conn, const std::string& reason, bool running) {
    std::lock_guard lock(mu_);
    std::erase_if(accepted_, [&](const Accepted& a) { return a.conn == conn; });
    const std::uint32_t peer = conn->peer_id;
    if (peer < closed_traffic_.size()) add(closed_traffic_[peer], *conn);
    if (peer == UINT32_MAX || links_[peer] != conn) return false;
    links_[peer].reset();
    if (!running || !lost_[peer].empty()) return false;  // lost once (it left, or was replaced)
    lost_[peer] = reason;
    return true;
  }

  // `peer` is gone (it left, or a new incarnation of its name replaced it): returns false when it
  // was already lost, else, with `take_link`, its connection taken out, for the caller to close.
  // (A peer that leaves closes its connection itself, after the answer to its leave.)
  std::pair<bool, Link> mark_lost(std::uint32_t peer, const std::string& reason, bool take_link) {
    std::lock_guard lock(mu_);
    if (peer >= lost_.size() || !lost_[peer].empty()) return {false, nullptr};
    lost_[peer] = reason;
    return {true, take_link ? std::exchange(links_[peer], nullptr) : nullptr};
  }

  // Why `peer` was lost; empty while it is alive.
  std::string lost_reason(std::uint32_t peer) const {
    std::lock_guard lock(mu_);
    return peer < lost_.size() ? lost_[peer] : std::string();
  }
  bool is_lost(std::uint32_t peer) const {
    std::lock_guard lock(mu_);
    return peer < lost_.size() && !lost_[peer].empty();
  }

  // "tcp", "tls", "local", or "" while no connection to `peer` is open.
  std::string kind_to(std::uint32_t peer) const {
    std::lock_guard lock(mu_);
    return links_[peer] ? links_[peer]->kind() : "";
  }

  std::size_t shared_bytes_in_use() const {
    std::lock_guard lock(mu_);
    std::size_t n = 0;
    for (const auto& l : links_)
      if (l) n += l->shared_bytes_in_use();
    for (const auto& a : accepted_) n += a.conn->shared_bytes_in_use();
    return n;
  }

  // Per peer: frames and bytes of its connections, open and closed, and how many are open.
  struct PeerTraffic {
    std::uint64_t frames_sent = 0, bytes_sent = 0, frames_received = 0, bytes_received = 0;
    std::size_t connections = 0;
  };
  std::vector<PeerTraffic> traffic() const {
    std::lock_guard lock(mu_);
    auto out = closed_traffic_;
    for_each_open([&](const Link& conn) {
      if (conn->peer_id >= out.size()) return;  // not introduced yet
      add(out[conn->peer_id], *conn);
      ++out[conn->peer_id].connections;
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
    for (auto& l : links_)
      if (l) l->close(reason);
    for (auto& a : accepted_) a.conn->close(reason);
  }

  // Drops every connection (once no I/O thread is left to use them).
  void clear() {
    std::lock_guard lock(mu_);
    links_.assign(links_.size(), nullptr);
    accepted_.clear();
  }

 private:
  mutable std::mutex mu_;
  std::vector<Link> links_;  // per peer rank
  struct Accepted {
    Link conn;
    std::chrono::steady_clock::time_point at;
    std::string address;
  };
  std::vector<Accepted> accepted_;
  std::vector<std::string> lost_;  // per peer rank: why it is gone; empty while it is alive
  std::vector<PeerTraffic> closed_traffic_;  // per peer rank: its closed connections' traffic

  // Each open connection once (a link to a peer may also be one it accepted); under mu_.
  template <class F>
  void for_each_open(F&& f) const {
    for (const auto& a : accepted_) f(a.conn);
    for (const auto& l : links_)
      if (l && std::none_of(accepted_.begin(), accepted_.end(), [&](const Accepted& a) { return a.conn == l; })) f(l);
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
