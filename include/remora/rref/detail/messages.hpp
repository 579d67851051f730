#pragma once
// The RRef protocol's messages. They are ordinary remora calls to the library's own functions:
// they get request ids, timeouts, WorkerLost on a dead peer, and graceful shutdown waits for
// them like for any call.
//   fork_request(rref, fork)        user -> owner   a third worker received a fork; owner records it
//   child_accept(fork)              user -> parent  the owner knows the fork; the parent may let go
//   user_delete(rref, fork, abandon) user -> owner  the fork is gone (abandon: the creation failed)
#include <string>

#include "remora/rref/detail/context.hpp"

namespace remora::detail {

inline std::shared_ptr<RRefContext> rref_context(Agent& agent) { return AgentAccess::service<RRefContext>(agent); }

inline std::shared_ptr<RRefContext> serving_rref_context() {
  if (!serving_agent) throw Error("remora: RRef message outside a served call");
  return rref_context(*serving_agent);
}

namespace rref_msg {

inline void fork_request(RRefId id, ForkId fork) { serving_rref_context()->add_fork(id, fork, serving_peer); }

// The state a served call refers to (made if the call overtook the creation).
inline std::shared_ptr<OwnerState> requested_state(const RRefId& id) {
  return serving_rref_context()->owner_state(id, serving_peer);
}

inline void child_accept(ForkId fork) { serving_rref_context()->drop_child(fork); }

inline void user_delete(RRefId id, ForkId fork, bool abandon) {
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

inline void RRefContext::send_delete(const RRefCore& core, bool abandon) {
  if (AgentAccess::is_lost(agent_, core.owner)) return;
  send_rref_message<&rref_msg::user_delete>(agent_, core.owner, core.id, core.fork, abandon);
}

inline void RRefContext::user_dropped(RRefCore& core) {
  {
    std::lock_guard lock(mu_);
    users_.erase(core.fork);
  }
  if (!core.released.exchange(true)) send_delete(core, false);
}

inline void RRefContext::on_peer_lost(std::uint32_t peer) {
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

inline void RRefContext::on_group_quiet() {
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

inline void RRefContext::on_stop() {
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
