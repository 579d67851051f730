#pragma once
// AgentRuntime's members: joining a static group (the roster) or an elastic one, meeting members,
// losing them (a connection failed, a member left, a new incarnation of its name replaced it),
// leaving; and the membership events of every group.
#include <limits>

#include "remora/agent/detail/runtime.hpp"

namespace remora::detail {

inline void AgentRuntime::join_static(const PeerAddress& me, int rank, int world_size) {
  self_id = static_cast<std::uint32_t>(rank);
  store_ = open_store(options, rank, world_size);
  // With this worker's CUDA devices and device maps, for the others to check.
  auto roster = rendezvous(*store_, me, device_record(options), rank, world_size, options.init_timeout,
                           /*get_waits=*/!options.store);  // open_store made a TCPStore with init_timeout
  const auto& peers = roster.peers;
  const auto n = static_cast<std::uint32_t>(peers.size());
  reserve_ids(n);
  std::vector<WorkerInfo> roster_workers;
  asio::ip::tcp::resolver resolver(io_);
  for (std::uint32_t r = 0; r < n; ++r) {
    roster_workers.push_back({peers[r].name, r});
    asio::error_code numeric;  // a numeric address needs no lookup (N of them per worker)
    const auto address = asio::ip::make_address(peers[r].host, numeric);
    endpoints_.make(r) = numeric ? *resolver.resolve(peers[r].host, std::to_string(peers[r].port)).begin()
                                 : asio::ip::tcp::endpoint(address, peers[r].port);
  }
  choose_transports(peers);
  // Checks every map that involves this worker and keeps the maps frames are encoded with.
  auto maps = check_device_maps(roster_workers, self_id, roster.devices);
  for (std::uint32_t r = 0; r < n; ++r) {
    roster_workers[r].cuda_mps = maps.mps[r];
    workers.make(r) = roster_workers[r];
    call_maps_.make(r) = std::move(maps.call[r]);
    reply_maps_.make(r) = std::move(maps.reply[r]);
  }
  std::vector<std::string> names;
  for (const auto& w : roster_workers) names.push_back(w.name);
  inbound_.set_group(std::move(names), self_id);
}

// Local to peers of this host (when allowed), TCP to the rest.
inline void AgentRuntime::choose_transports(const std::vector<PeerAddress>& peers) {
  const auto& me = peers[self_id];
  for (std::uint32_t r = 0; r < peers.size(); ++r) {
    const auto& p = peers[r];
    const bool same_host = !me.local_socket.empty() && !p.local_socket.empty() && p.host_identity == me.host_identity;
    local_sockets_.make(r) = same_host ? p.local_socket : std::string();
    if (options.transport == Transport::local && !same_host)
      throw Error("remora: Options::transport is local, but worker '" + p.name +
                  "' is on another host or cannot use local sockets (use Transport::automatic)");
  }
}

// Publishes this worker in the store, then makes known every member published there (without
// events: they were there first). Both of two workers joining at once publish before they read,
// so at least one of them finds the other, and greets it (Agent's constructor).
inline void AgentRuntime::join_elastic(const PeerAddress& me) {
  // Device maps: this worker's own are checked against its devices now, against each member's
  // as it is met (register_member); maps to workers that have not joined wait for them.
  const std::string devices = device_record(options);
  my_devices_ = read_device_record(devices, "worker '" + me.name + "'");
  for (const auto& [worker, map] : my_devices_.maps)
    check_device_map(me.name, my_devices_.count, worker, std::numeric_limits<int>::max(), map);
  store_ = open_elastic_store(options);
  const auto self = remora::detail::join_elastic(*store_, me, my_devices_.mps, devices, previous_name_);
  self_record_ = self;
  self_id = self.id;
  try {
    meet_published(me);
  } catch (...) {
    abandon_join();
    throw;
  }
}

// Every member published in the store, made known without events (they were there first).
inline void AgentRuntime::meet_published(const PeerAddress& me) {
  const auto& self = self_record_;
  reserve_ids(kElasticIds);
  inbound_.set_group({}, self_id, kElasticIds);
  workers.make(self_id) = {me.name, self_id, self.incarnation, self.cuda_mps};
  local_sockets_.make(self_id) = me.local_socket;
  inbound_.set_name(self_id, me.name);
  mark_known(self_id);
  names_[me.name] = self_id;
  for (const auto& m : published_members(*store_)) {
    if (m.id == self_id) continue;
    if (m.address.authenticates != me.authenticates)
      throw Error("remora: worker '" + (me.authenticates ? me.name : m.address.name) +
                  "' has a secret (Options::secret) and '" + (me.authenticates ? m.address.name : me.name) +
                  "' has none: every worker of a group needs the same secret");
    if (m.address.tls != me.tls)
      throw Error("remora: worker '" + (me.tls ? me.name : m.address.name) + "' uses TLS (Options::tls) and '" +
                  (me.tls ? m.address.name : me.name) + "' does not: every worker of a group needs TLS, or none");
    if (m.address.name == me.name) continue;  // this name's earlier incarnation
    register_member(m, false);
  }
}

// The id `name` has here; one not met, or one whose known incarnation is lost (a newer one may
// have joined without greeting this worker yet), is looked up in the store.
inline std::optional<std::uint32_t> AgentRuntime::elastic_id_of(std::string_view name) {
  std::optional<std::uint32_t> cached;
  {
    std::lock_guard lock(members_mu_);
    if (auto it = names_.find(std::string(name)); it != names_.end()) cached = it->second;
  }
  if (cached && !links.is_lost(*cached)) return cached;
  try {
    if (const auto id = member_id(*store_, std::string(name)); id && id != cached)
      if (auto m = read_member(*store_, *id)) register_member(*m, true);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error("remora: worker '" + workers[self_id].name + "' could not ask the elastic group's store for '" +
                std::string(name) + "': " + store_reason(e));
  }
  std::lock_guard lock(members_mu_);
  if (auto it = names_.find(std::string(name)); it != names_.end()) return it->second;
  return std::nullopt;
}

inline bool AgentRuntime::register_member(const MemberRecord& m, bool announce) {
  if (m.id >= kElasticIds || m.id == self_id) return false;
  asio::ip::tcp::endpoint endpoint;
  try {
    std::error_code numeric;
    const auto address = asio::ip::make_address(m.address.host, numeric);
    if (!numeric) {
      endpoint = {address, m.address.port};
    } else {  // a host name: a lookup (on an I/O thread for a hello; advertise addresses instead)
      asio::ip::tcp::resolver resolver(io_);
      endpoint = *resolver.resolve(m.address.host, std::to_string(m.address.port)).begin();
    }
  } catch (const std::exception& e) {
    log_peer_warning("worker '" + workers[self_id].name + "': cannot resolve the address of worker '" +
                     m.address.name + "' (" + m.address.host + "): " + e.what());
    return false;
  }
  const auto& me = workers[self_id];
  const bool same_host = !me_.local_socket.empty() && !m.address.local_socket.empty() &&
                         m.address.host_identity == me_.host_identity;
  PairDeviceMaps maps;
  try {
    maps = pair_device_maps(me.name, my_devices_, m.address.name,
                            read_device_record(m.devices, "worker '" + m.address.name + "'"));
  } catch (const std::exception& e) {  // (c10::Error too: a device name that does not parse)
    if (!announce) throw Error(std::string(e.what()));  // met while joining: the join fails, naming the map
    log_peer_warning("worker '" + me.name + "': not meeting worker '" + m.address.name + "': " + e.what());
    return false;
  }
  std::optional<std::uint32_t> replaced;
  {
    std::lock_guard lock(members_mu_);
    if (is_known(m.id)) return workers[m.id].name == m.address.name && workers[m.id].incarnation == m.incarnation;
    if (m.address.name == me.name) return false;  // a stranger that says it is this worker
    if (auto it = names_.find(m.address.name); it != names_.end()) {
      if (workers[it->second].incarnation >= m.incarnation) return false;
      replaced = it->second;
    }
    workers.make(m.id) = {m.address.name, m.id, m.incarnation, m.cuda_mps};
    call_maps_.make(m.id) = std::move(maps.call);
    reply_maps_.make(m.id) = std::move(maps.reply);
    endpoints_.make(m.id) = endpoint;
    local_sockets_.make(m.id) = same_host ? m.address.local_socket : std::string();
    inbound_.set_name(m.id, m.address.name);
    mark_known(m.id);
    names_[m.address.name] = m.id;
  }
  if (replaced)
    lose(*replaced, "worker '" + m.address.name + "' joined again (incarnation " + std::to_string(m.incarnation) + ")",
         MembershipEvent::lost, true);
  if (announce) emit({MembershipEvent::joined, workers[m.id], ""});
  return true;
}

inline void AgentRuntime::lose(std::uint32_t peer, const std::string& reason, MembershipEvent::Kind kind,
                               bool take_link) {
  if (state_.load() != State::running) return;
  auto [newly, link] = links.mark_lost(peer, reason, take_link);
  if (!newly) return;
  if (link) link->close(reason);
  peer_gone(peer, reason, kind);
}

inline void AgentRuntime::peer_gone(std::uint32_t peer, const std::string& reason, MembershipEvent::Kind kind) {
  fail_calls(calls.take_to(peer), reason, false);
  pool_.post([this, peer] {
    for (auto& s : services.snapshot()) s->on_peer_lost(peer);
  });
  emit({kind, workers[peer], reason});
}

inline void AgentRuntime::emit(MembershipEvent event) {
  if (watchers_->push(std::move(event))) pool_.post([w = watchers_] { w->drain(); });
}

inline std::vector<WorkerInfo> AgentRuntime::members(bool with_gone) const {
  std::vector<WorkerInfo> out;
  if (!elastic) {
    workers.for_each([&](std::uint32_t, const WorkerInfo& w) { out.push_back(w); });
    return out;
  }
  std::lock_guard lock(members_mu_);
  if (with_gone) {  // every id met (debug_info): grows with the group's restarts
    for (std::uint32_t id = 0; id < known_.size(); ++id)
      if (known_[id]) out.push_back(workers[id]);
    return out;
  }
  for (const auto& [name, id] : names_)  // each name's newest id: grows with the names only
    if (!links.is_lost(id)) out.push_back(workers[id]);
  std::sort(out.begin(), out.end(), [](const WorkerInfo& a, const WorkerInfo& b) { return a.id < b.id; });
  return out;
}

inline std::vector<std::uint32_t> AgentRuntime::other_members() const {
  std::vector<std::uint32_t> out;
  for (const auto& w : members())
    if (w.id != self_id) out.push_back(w.id);
  return out;
}

}  // namespace remora::detail
