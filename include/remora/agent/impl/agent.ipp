#pragma once
// The Agent's and AgentAccess's functions that are not templates: compiled in every translation
// unit (header-only) or once, in <remora/impl/src.hpp> (REMORA_SEPARATE_COMPILATION).
#include "remora/agent/agent.hpp"
#include "remora/agent/detail/reply_decoding.hpp"
#include "remora/agent/detail/runtime.hpp"

namespace remora {

namespace detail {
// Served by rank 0 of a group with a secret: that a call reaches it proves the caller holds the
// same secret (its connection authenticated).
REMORA_DECL void secret_probe() {}
// What a worker joining an elastic group calls on each member it found: the call's connection
// introduces it (its hello), and the answer tells it the member is there.
REMORA_DECL void elastic_greet() {}
// The last call a worker leaving an elastic group makes to each member.
REMORA_DECL void elastic_leave() { AgentAccess::member_left(*serving_agent, serving_peer); }

inline Options checked_static(Options o) {
  if (o.elastic)
    throw Error("remora: an elastic group (Options::elastic) takes no rank or world size: use "
                "init_rpc(name, options) or Agent(name, options)");
  return o;
}
inline Options checked_elastic(Options o) {
  if (!o.elastic) throw Error("remora: Agent(name, options) joins an elastic group: set Options::elastic");
  return o;
}
}  // namespace detail

REMORA_DECL Agent::Agent(std::string name, Options options)
    : rt_(std::make_unique<detail::AgentRuntime>(*this, std::move(name), -1, 0,
                                                 detail::checked_elastic(std::move(options)))) {
  (void)detail::AutoRegister<&detail::elastic_greet>::registered;  // served by every member
  (void)detail::AutoRegister<&detail::elastic_leave>::registered;
  const auto members = rt_->other_members();
  std::vector<Future<void>> greetings;
  for (auto id : members)
    greetings.push_back(detail::call_as<&detail::elastic_greet>(*this, id, function_identity<&detail::elastic_greet>,
                                                                CallOptions{rt_->options.init_timeout}));
  // A member whose address refuses connections died without leaving: its record goes. One that answers
  // but refuses this worker (another secret, say) is a reason not to join: if every member
  // there refused it, the join fails.
  std::string first_refusal;
  std::size_t refused = 0;
  for (std::size_t i = 0; i < greetings.size(); ++i) {
    try {
      greetings[i].get();
    } catch (const Error& e) {
      const std::string why = e.what();
      if (why.find("cannot connect") != std::string::npos) {  // not there (or not reachable from here)
        if (why.find("Connection refused") != std::string::npos) rt_->forget_record(members[i]);
      } else {
        ++refused;
        if (first_refusal.empty()) first_refusal = why;
      }
    }
  }
  if (refused > 0 && refused == members.size()) {
    rt_->abandon_join();
    rt_->shutdown(false);
    throw Error("remora: worker '" + self().name + "' was refused by all " + std::to_string(members.size()) +
                " members of its elastic group (" + first_refusal + ")");
  }
}

REMORA_DECL Agent::Agent(std::string name, int rank, int world_size, Options options)
    : rt_(std::make_unique<detail::AgentRuntime>(*this, std::move(name), rank, world_size,
                                                 detail::checked_static(std::move(options)))) {
  if (!rt_->authenticates() || rt_->workers.size() < 2) return;
  // Every worker must hold the same secret: each one else proves it to rank 0, and all learn how
  // that went, so a worker with another secret fails here rather than at its first call.
  try {
    auto& store = rt_->store();
    if (rt_->self_id != 0) {
      std::string outcome = "ok";
      try {
        rpc_sync<&detail::secret_probe>(rt_->workers[0].name, CallOptions{rt_->options.init_timeout});
      } catch (const Error& e) {
        outcome = e.what();
      }
      store.set("secret/" + std::to_string(rt_->self_id), detail::bytes_of(outcome));
    }
    std::vector<std::string> keys;
    for (std::size_t r = 1; r < rt_->workers.size(); ++r) keys.push_back("secret/" + std::to_string(r));
    try {
      store.wait(keys, rt_->options.init_timeout);
    } catch (const std::exception& e) {
      throw Error("remora: worker '" + self().name + "' timed out waiting for every worker to authenticate: " +
                  e.what());
    }
    for (std::size_t r = 1; r < rt_->workers.size(); ++r) {
      const auto outcome = detail::string_of(store.get(keys[r - 1]));
      if (outcome != "ok")
        throw Error("remora: worker '" + rt_->workers[r].name + "' could not authenticate with worker '" +
                    rt_->workers[0].name + "' (" + outcome + "): every worker of a group needs the same secret");
    }
  } catch (...) {
    rt_->shutdown(false);
    throw;
  }
}

REMORA_DECL Agent::~Agent() { shutdown(false); }

REMORA_DECL const WorkerInfo& Agent::self() const { return rt_->workers[rt_->self_id]; }
REMORA_DECL const Options& Agent::options() const { return rt_->shown_options; }
REMORA_DECL WorkerInfo Agent::get_worker_info(std::string_view name) const { return rt_->workers[rt_->id_of(name)]; }
REMORA_DECL WorkerInfo Agent::get_worker_info(std::uint32_t id) const {
  if (!rt_->knows(id)) throw Error("remora: no worker has id " + std::to_string(id));
  return rt_->workers[id];
}
REMORA_DECL std::vector<WorkerInfo> Agent::get_worker_infos() const { return rt_->members(); }
REMORA_DECL Subscription Agent::on_membership(std::function<void(const MembershipEvent&)> callback) {
  auto watchers = rt_->watchers();
  const auto id = watchers->add(std::move(callback));
  return Subscription(watchers, id);
}
REMORA_DECL Subscription detail::AgentAccess::on_membership_unwaited(Agent& agent,
                                                                   std::function<void(const MembershipEvent&)> callback) {
  auto watchers = agent.rt_->watchers();
  const auto id = watchers->add(std::move(callback), /*removal_waits=*/false);
  return Subscription(watchers, id);
}
REMORA_DECL std::uint16_t Agent::listen_port() const { return rt_->listen_port(); }
REMORA_DECL std::string Agent::transport_to(std::string_view worker) const {
  return rt_->links.kind_to(rt_->id_of(worker));
}
REMORA_DECL std::size_t Agent::shared_bytes_in_use() const { return rt_->links.shared_bytes_in_use(); }
REMORA_DECL void Agent::shutdown(bool graceful) {
  if (rt_->elastic && graceful && is_running()) {
    // Leaving alone: this worker's calls first, then what it holds for others goes back, then the
    // last call to each member, which it answers after everything sent before it on that link.
    const auto timeout = rt_->options.shutdown_timeout;
    if (!rt_->calls.wait_quiet(timeout))
      detail::log_warning("worker '" + self().name + "': calls still pending after " + std::to_string(timeout.count()) +
                  " ms; leaving anyway");
    rt_->unpublish();  // a worker that joins from now on does not meet this one
    for (auto& s : rt_->services.snapshot()) s->on_group_quiet();
    std::vector<Future<void>> goodbyes;
    for (auto id : rt_->other_members())
      goodbyes.push_back(detail::call_as<&detail::elastic_leave>(*this, id, function_identity<&detail::elastic_leave>,
                                                                 CallOptions{timeout}));
    for (auto& g : goodbyes) {
      try {
        g.get();
      } catch (const Error&) {  // it is gone too
      }
    }
  }
  rt_->shutdown(graceful);
}
REMORA_DECL bool Agent::is_running() const { return rt_->state() == detail::AgentRuntime::State::running; }
REMORA_DECL std::size_t Agent::pending_calls() const { return rt_->calls.size(); }

REMORA_DECL DebugInfo Agent::debug_info() const {
  auto& rt = *rt_;
  DebugInfo d;
  d.worker = rt.workers[rt.self_id].name;
  d.id = rt.self_id;
  d.running = rt.state() == detail::AgentRuntime::State::running;
  d.calls_in_flight = rt.calls.size();
  d.connections = rt.links.open_connections();
  d.local_socket = rt.local_socket_of(rt.self_id);
  d.late_replies = rt.late_replies();
  const auto traffic = rt.links.traffic();
  const auto members = rt.members(true);
  const auto in_flight = rt.calls.size_per_peer(rt.workers.size());  // (after: every member's id is below)
  for (const auto& w : members) {
    PeerDebugInfo p;
    p.name = w.name;
    p.id = w.id;
    p.transport = w.id == rt.self_id ? "self" : rt.links.kind_to(w.id);
    p.lost_reason = rt.links.lost_reason(w.id);
    p.lost = !p.lost_reason.empty();
    p.calls_in_flight = in_flight[w.id];
    p.calls_pending_here = rt.pending_from(w.id);
    if (const auto it = traffic.find(w.id); it != traffic.end()) {
      const auto& t = it->second;
      p.connections = t.connections;
      p.frames_sent = t.frames_sent;
      p.bytes_sent = t.bytes_sent;
      p.frames_received = t.frames_received;
      p.bytes_received = t.bytes_received;
    }
    d.peers.push_back(std::move(p));
  }
  for (const auto& s : rt.services.snapshot()) s->add_debug_info(d.counters);
  return d;
}

namespace detail {

REMORA_DECL std::uint32_t AgentAccess::id_of(const Agent& agent, std::string_view name) {
  return agent.rt_->id_of(name);
}
REMORA_DECL std::uint64_t AgentAccess::next_request_id(Agent& agent) { return agent.rt_->next_request_id(); }
REMORA_DECL bool AgentAccess::is_lost(const Agent& agent, std::uint32_t peer) { return agent.rt_->links.is_lost(peer); }
REMORA_DECL bool AgentAccess::knows(const Agent& agent, std::uint32_t id) { return agent.rt_->knows(id); }
REMORA_DECL std::uint32_t AgentAccess::id_bound(const Agent& agent) {
  return agent.rt_->id_bound();
}
REMORA_DECL void AgentAccess::member_left(Agent& agent, std::uint32_t peer) {
  if (agent.rt_->elastic && agent.rt_->knows(peer)) agent.rt_->member_left(peer);
}
REMORA_DECL const wire::DeviceMap& AgentAccess::reply_device_map(const Agent& agent, std::uint32_t peer) {
  return agent.rt_->reply_map(peer);
}
REMORA_DECL bool AgentAccess::submit(Agent& agent, std::uint32_t to, std::string_view function,
                                     std::uint64_t request_id, wire::OutFrame frame, std::chrono::milliseconds timeout,
                                     std::shared_ptr<const void> keep, Completion complete) {
  return agent.rt_->submit(to, function, request_id, std::move(frame), timeout, std::move(keep), std::move(complete));
}
REMORA_DECL bool AgentAccess::notify(Agent& agent, std::uint32_t to, wire::OutFrame frame, bool with_next_call) {
  return agent.rt_->notify(to, std::move(frame), with_next_call);
}
REMORA_DECL std::exception_ptr AgentAccess::error_of(const Agent& agent, const wire::InFrame& reply,
                                                     std::uint32_t peer, std::string_view function) {
  return error_of_reply(reply, agent.rt_->options.limits, agent.rt_->workers[peer].name, function);
}
REMORA_DECL void AgentAccess::dispatch_to_pool(void* agent, UniqueFunction<void()> callback) {
  static_cast<Agent*>(agent)->rt_->run_counted(std::move(callback));
}
REMORA_DECL void AgentAccess::decode_off_io(Agent& agent, UniqueFunction<void()> job) {
  agent.rt_->decode_counted(std::move(job));
}
REMORA_DECL void AgentAccess::intercept(Agent& agent, CallInterceptor* interceptor) {
  agent.rt_->intercept(interceptor);
}
REMORA_DECL c10::intrusive_ptr<c10d::Store> AgentAccess::store(const Agent& agent) { return agent.rt_->store_ptr(); }
REMORA_DECL std::uint64_t AgentAccess::calls_batched(const Agent& agent) { return agent.rt_->calls_batched(); }
REMORA_DECL std::uint64_t AgentAccess::pending_from(const Agent& agent, std::uint32_t peer) {
  return agent.rt_->pending_from(peer);
}
REMORA_DECL bool AgentAccess::only_calls_in_flight(const Agent& agent, std::size_t calls) {
  return agent.rt_->calls.at_most_in_flight(calls);
}
REMORA_DECL std::shared_ptr<AgentService> AgentAccess::find_or_add_service(
    Agent& agent, const void* key, std::shared_ptr<AgentService> (*make)(Agent&)) {
  return agent.rt_->services.find_or_add(key, [&] { return make(agent); });
}

REMORA_DECL std::string serving_worker_name() {
  return serving_agent ? serving_agent->self().name : std::string("?");
}

REMORA_DECL wire::EncodeDevices encode_devices_for(Agent* agent, std::uint32_t peer, Direction direction) {
  return agent->rt_->encode_devices(peer, direction);
}

}  // namespace detail
}  // namespace remora
