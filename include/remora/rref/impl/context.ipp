#pragma once
// RRefContext and the RRef protocol's messages: compiled in every translation unit
// (header-only) or once, in <remora/impl/src.hpp> (REMORA_SEPARATE_COMPILATION).
#include <string>
#include <utility>
#include <vector>

#include "remora/agent/detail/outbound.hpp"
#include "remora/agent/detail/wire_context.hpp"
#include "remora/rref/detail/messages.hpp"

namespace remora::detail {

REMORA_DECL std::string GloballyUniqueId::str() const {
  return "(" + std::to_string(worker) + ", " + std::to_string(local) + ")";
}

REMORA_DECL OwnerState::~OwnerState() {
  --*live;
  if (auto c = ctx.lock()) c->forget(id);
}

REMORA_DECL RRefCore::~RRefCore() {
  if (owned) return;
  if (auto c = ctx.lock()) c->user_dropped(*this);
}

REMORA_DECL std::shared_ptr<RRefContext> rref_context(Agent& agent) {
  return AgentAccess::service<RRefContext>(agent);
}

REMORA_DECL std::shared_ptr<RRefContext> serving_rref_context() {
  if (!serving_agent) throw Error("remora: RRef message outside a served call");
  return rref_context(*serving_agent);
}

REMORA_DECL std::shared_ptr<RRefContext> wire_rref_context(const char* what) {
  if (!wire_context.agent)
    throw SerializationError(std::string("an RRef can only be ") + what + " inside a remora call or result");
  return rref_context(*wire_context.agent);
}

namespace rref_msg {

REMORA_DECL void fork_request(RRefId id, ForkId fork) { serving_rref_context()->add_fork(id, fork, serving_peer); }

REMORA_DECL std::shared_ptr<OwnerState> requested_state(const RRefId& id) {
  return serving_rref_context()->owner_state(id, serving_peer);
}

REMORA_DECL void child_accept(ForkId fork) { serving_rref_context()->drop_child(fork); }

REMORA_DECL void user_delete(RRefId id, ForkId fork, bool abandon) {
  auto ctx = serving_rref_context();
  if (abandon) {
    // The creation will never arrive: fail what waits for it.
    auto state = ctx->owner_state(id);
    state->set_error(std::make_exception_ptr(
        Error("remora: the RRef " + id.str() + " was never created on worker '" + ctx->agent().self().name + "'")));
    ctx->mark_created(id);
  }
  ctx->remove_fork(id, fork);
}

}  // namespace rref_msg

// Sends a protocol message and forgets it: failures are logged by nobody, since the peer's
// death is handled by on_peer_lost and a stopped agent drops every table anyway.
template <auto F, class... As>
void send_rref_message(Agent& agent, std::uint32_t to, As&&... args) {
  (void)AutoRegister<F>::registered;
  try {
    (void)detail::call_as<F>(agent, to, function_identity<F>, CallOptions{}, std::forward<As>(args)...);
  } catch (const std::exception&) {
    // the agent stopped: nothing left to tell
  }
}

// --- owner side ---

REMORA_DECL std::shared_ptr<OwnerState> RRefContext::owner_state(const RRefId& id, std::uint32_t requester) {
  std::lock_guard lock(mu_);
  return state_locked(id, requester);
}

REMORA_DECL void RRefContext::add_fork(const RRefId& id, const ForkId& fork, std::uint32_t holder) {
  std::lock_guard lock(mu_);
  // Checked under the lock: a holder lost before this point had on_peer_lost run (or queued
  // behind this lock) already, and would never delete this fork.
  if (AgentAccess::is_lost(agent_, holder)) return;
  auto state = state_locked(id, holder);
  auto& e = owners_[id];
  e.forks[fork] = holder;
  e.pinned = std::move(state);
}

REMORA_DECL void RRefContext::remove_fork(const RRefId& id, const ForkId& fork) {
  std::shared_ptr<OwnerState> dropped;
  std::lock_guard lock(mu_);
  auto it = owners_.find(id);
  if (it == owners_.end()) return;
  it->second.forks.erase(fork);
  dropped = repin(it->second);
}

REMORA_DECL void RRefContext::mark_created(const RRefId& id) {
  std::shared_ptr<OwnerState> dropped;
  std::lock_guard lock(mu_);
  auto it = owners_.find(id);
  if (it == owners_.end()) return;
  it->second.created = true;
  dropped = repin(it->second);
}

REMORA_DECL void RRefContext::forget(const RRefId& id) {
  std::lock_guard lock(mu_);
  auto it = owners_.find(id);
  if (it != owners_.end() && it->second.weak.expired() && !it->second.pinned) owners_.erase(it);
}

REMORA_DECL std::shared_ptr<OwnerState> RRefContext::state_locked(const RRefId& id, std::uint32_t requester) {
  auto it = owners_.find(id);
  if (it != owners_.end())
    if (auto state = it->second.weak.lock()) return state;
  if (requester != UINT32_MAX && requester != self() && AgentAccess::is_lost(agent_, requester))
    throw Error("remora: a late message about RRef " + id.str() + " from a lost worker");
  auto state = std::make_shared<OwnerState>(id, weak_from_this(), live_);
  auto& e = owners_[id];
  e = Entry{};
  e.weak = state;
  e.pinned = state;  // until created
  e.announced_by = requester;
  return state;
}

// --- user side ---

REMORA_DECL std::shared_ptr<RRefCore> RRefContext::make_user(const RRefId& id, const ForkId& fork,
                                                             std::uint32_t owner, std::uint64_t type) {
  auto core = std::make_shared<RRefCore>();
  core->id = id;
  core->fork = fork;
  core->owner = owner;
  core->type = type;
  core->ctx = weak_from_this();
  std::lock_guard lock(mu_);
  users_[fork] = core;
  return core;
}

REMORA_DECL std::shared_ptr<RRefCore> RRefContext::make_owned(std::shared_ptr<OwnerState> state,
                                                              std::uint64_t type) {
  auto core = std::make_shared<RRefCore>();
  core->id = state->id;
  core->owner = self();
  core->type = type;
  core->owned = std::move(state);
  core->ctx = weak_from_this();
  core->confirmed = true;
  return core;
}

REMORA_DECL void RRefContext::add_child(const ForkId& fork, std::shared_ptr<RRefCore> parent_ref,
                                        std::uint32_t destination) {
  std::lock_guard lock(mu_);
  children_[fork] = Child{std::move(parent_ref), destination};
}

REMORA_DECL void RRefContext::drop_child(const ForkId& fork) {
  Child dropped;
  std::lock_guard lock(mu_);
  auto it = children_.find(fork);
  if (it == children_.end()) return;
  dropped = std::move(it->second);
  children_.erase(it);
}

REMORA_DECL void RRefContext::send_delete(const RRefCore& core, bool abandon) {
  if (AgentAccess::is_lost(agent_, core.owner)) return;
  send_rref_message<&rref_msg::user_delete>(agent_, core.owner, core.id, core.fork, abandon);
}

REMORA_DECL void RRefContext::user_dropped(RRefCore& core) {
  {
    std::lock_guard lock(mu_);
    users_.erase(core.fork);
  }
  if (!core.released.exchange(true)) send_delete(core, false);
}

REMORA_DECL RRefStats RRefContext::stats() const {
  std::lock_guard lock(mu_);
  RRefStats s;
  s.owned_values = live_->load();
  for (auto& [id, e] : owners_) s.forks += e.forks.size();
  s.user_rrefs = users_.size();
  s.pending_children = children_.size();
  return s;
}

// --- RRefs made and moved by messages ---

REMORA_DECL void RRefContext::creation_answered(const std::shared_ptr<RRefCore>& core, std::exception_ptr failure) {
  auto ctx = core->ctx.lock();
  if (core->owned) {  // created on this worker: the call's failure is the value's
    if (failure) {
      core->owned->set_error(failure);
      if (ctx) ctx->mark_created(core->id);
    }
    return;
  }
  if (!failure) {
    core->confirmed = true;
    return;
  }
  try {
    std::rethrow_exception(failure);
  } catch (const WorkerLost&) {
    core->fail(failure);
    core->released = true;
  } catch (const Timeout&) {
    // The owner may still create it; uses go to the owner and see the outcome.
  } catch (...) {
    // The owner cannot create it (unknown function, arguments that did not decode): fail uses
    // here and anything waiting there.
    core->fail(failure);
    if (!core->released.exchange(true) && ctx) ctx->send_delete(*core, true);
  }
}

REMORA_DECL WireRRef RRefContext::fork_for_peer(const std::shared_ptr<RRefCore>& core) {
  const std::uint32_t to = wire_context.peer;
  WireRRef w{core->owner, core->id, new_id(), self(), core->type};
  auto ctx = shared_from_this();
  if (core->owned) {
    // The owner forks: it records the fork now, and the receiver's reference is confirmed on arrival.
    add_fork(core->id, w.fork, to);
    if (auto* undo = wire_context.undo)
      undo->push_back([ctx, id = core->id, fork = w.fork] { ctx->remove_fork(id, fork); });
  } else {
    // A user forks: its own reference stays alive (a pending child) until the owner confirmed
    // the receiver's.
    add_child(w.fork, core, to);
    if (auto* undo = wire_context.undo) undo->push_back([ctx, fork = w.fork] { ctx->drop_child(fork); });
  }
  return w;
}

REMORA_DECL std::shared_ptr<RRefCore> RRefContext::receive(const WireRRef& w, std::uint64_t expected_type,
                                                           std::string_view type_name) {
  if (w.type != expected_type)
    throw ProtocolError("an RRef arrived as RRef<" + std::string(type_name) +
                        "> but refers to a value of another type");
  const auto workers = AgentAccess::id_bound(agent_);
  if (w.owner >= workers || w.parent >= workers) throw ProtocolError("an RRef names an unknown worker");
  if (w.owner == self()) {
    auto core = make_owned(owner_state(w.id, wire_context.peer), w.type);
    if (w.parent == self())
      remove_fork(w.id, w.fork);  // sent to itself: the fork was only for the way
    else
      send_rref_message<&rref_msg::child_accept>(agent_, w.parent, w.fork);
    return core;
  }
  auto core = make_user(w.id, w.fork, w.owner, w.type);
  if (w.parent == w.owner) {
    core->confirmed = true;  // the owner recorded this fork when it sent it
    return core;
  }
  (void)AutoRegister<&rref_msg::fork_request>::registered;
  auto f = call_as<&rref_msg::fork_request>(agent_, w.owner, function_identity<&rref_msg::fork_request>,
                                            CallOptions{}, w.id, w.fork);
  f.on_ready([f, core, parent = w.parent] {
    if (auto e = f.exception()) {
      try {
        std::rethrow_exception(e);
      } catch (const WorkerLost&) {
        core->fail(e);
        core->released = true;
        // The owner is lost to this worker, so this fork will never count there (had the request
        // arrived, the owner drops it with this lost worker's other forks): the parent, which
        // holds its own reference until the owner knows of the fork, may let go. Without this, a
        // link cut between this worker and the owner alone would keep the value forever.
        if (auto ctx = core->ctx.lock(); ctx && parent != ctx->self())
          send_rref_message<&rref_msg::child_accept>(ctx->agent(), parent, core->fork);
        else if (ctx)
          ctx->drop_child(core->fork);
      } catch (...) {
        core->fail(e);  // the owner may not know this fork: it must not be used, nor let the parent go
      }
      return;
    }
    core->confirmed = true;
    auto ctx = core->ctx.lock();
    if (!ctx) return;
    if (parent == ctx->self())
      ctx->drop_child(core->fork);
    else
      send_rref_message<&rref_msg::child_accept>(ctx->agent(), parent, core->fork);
  });
  return core;
}

// --- agent events ---

REMORA_DECL void RRefContext::on_peer_lost(std::uint32_t peer) {
  std::vector<std::shared_ptr<OwnerState>> dropped;
  std::vector<std::shared_ptr<OwnerState>> never_created;
  std::vector<std::shared_ptr<RRefCore>> orphans;
  std::vector<Child> children;
  {
    std::lock_guard lock(mu_);
    // Forks the lost worker held can never be deleted by it.
    for (auto& [id, e] : owners_) {
      std::erase_if(e.forks, [&](const auto& f) { return f.second == peer; });
      // Awaiting a creation that cannot come (its creator is lost), or that only the lost
      // worker's late messages announced (the value was already deleted): fail it.
      if (!e.created && (id.worker == peer || (e.forks.empty() && e.announced_by == peer)))
        if (auto s = e.weak.lock()) never_created.push_back(std::move(s));
      if (auto d = repin(e)) dropped.push_back(std::move(d));
    }
    for (auto it = children_.begin(); it != children_.end();) {
      if (it->second.destination == peer) {
        children.push_back(std::move(it->second));
        it = children_.erase(it);
      } else {
        ++it;
      }
    }
    for (auto& [fork, weak] : users_)
      if (auto core = weak.lock(); core && core->owner == peer) orphans.push_back(std::move(core));
  }
  const std::string name = agent_.get_worker_info(peer).name;
  for (auto& s : never_created) {
    s->set_error(std::make_exception_ptr(WorkerLost(name, "remote", "a worker this RRef depended on was lost")));
    mark_created(s->id);
  }
  for (auto& core : orphans) {  // its owner is gone: nothing to tell, and every use fails
    // The failure first: a use that sees `released` must find why (RRef::check_usable).
    core->fail(std::make_exception_ptr(WorkerLost(name, "RRef", "the owner of this RRef was lost")));
    core->released = true;
  }
}

REMORA_DECL void RRefContext::on_group_quiet() {
  // As PyTorch's shutdown: every user reference still held is released now, so owners can drop
  // the values. Handles that outlive shutdown refuse to be used.
  std::vector<std::shared_ptr<RRefCore>> users;
  std::vector<Child> children;
  {
    std::lock_guard lock(mu_);
    for (auto& [fork, weak] : users_)
      if (auto core = weak.lock()) users.push_back(std::move(core));
    for (auto& [fork, child] : children_) children.push_back(std::move(child));
    children_.clear();
  }
  for (auto& core : users)
    if (!core->released.exchange(true)) send_delete(*core, false);
}

REMORA_DECL void RRefContext::on_stop() {
  std::unordered_map<RRefId, Entry, IdHash> owners;
  std::vector<std::shared_ptr<RRefCore>> users;
  std::vector<Child> children;
  {
    std::lock_guard lock(mu_);
    owners.swap(owners_);
    for (auto& [fork, weak] : users_)
      if (auto core = weak.lock()) users.push_back(std::move(core));
    for (auto& [fork, child] : children_) children.push_back(std::move(child));
    children_.clear();
  }
  for (auto& core : users) core->released = true;
  for (auto& [id, e] : owners)
    if (auto s = e.pinned) s->set_error(std::make_exception_ptr(Error("remora: the owner of this RRef shut down")));
}

}  // namespace remora::detail
