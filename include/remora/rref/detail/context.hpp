#pragma once
// Per-agent RRef bookkeeping, after PyTorch's RRefContext:
//  - as owner: for each value, the forks (users' references) that keep it alive, and whether it
//    was created yet. A value lives while a fork or a local RRef holds it.
//  - as user: live user references (to release them at graceful shutdown), and pending children:
//    forks this worker sent to a third worker that the owner has not yet confirmed. A pending
//    child keeps this worker's own fork alive, so the owner cannot drop the value in between.
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "remora/agent/agent.hpp"
#include "remora/rref/detail/owner_state.hpp"

namespace remora::detail {

// Counts of one agent's RRef tables (tests use them to prove nothing leaks).
struct RRefStats {
  std::int64_t owned_values = 0;   // values this worker holds for RRefs (created or awaited)
  std::size_t forks = 0;           // users' references to them that the owner knows of
  std::size_t user_rrefs = 0;      // references this worker holds to values on other workers
  std::size_t pending_children = 0;
};

class RRefContext : public AgentService, public std::enable_shared_from_this<RRefContext> {
 public:
  explicit RRefContext(Agent& agent) : agent_(agent) {}

  Agent& agent() const { return agent_; }
  std::uint32_t self() const { return agent_.self().id; }
  GloballyUniqueId new_id() { return {self(), next_id_.fetch_add(1, std::memory_order_relaxed)}; }

  // --- owner side ---

  // The state of `id`, made (awaiting creation) if this is the first news of it. `requester` is
  // the worker whose message asks; a lost worker's late messages must not make entries, since
  // nothing would ever release them.
  std::shared_ptr<OwnerState> owner_state(const RRefId& id, std::uint32_t requester = UINT32_MAX) {
    std::lock_guard lock(mu_);
    return state_locked(id, requester);
  }

  // Records that `holder` has the reference `fork` (a lost holder's fork is not recorded).
  void add_fork(const RRefId& id, const ForkId& fork, std::uint32_t holder) {
    std::lock_guard lock(mu_);
    // Checked under the lock: a holder lost before this point had on_peer_lost run (or queued
    // behind this lock) already, and would never delete this fork.
    if (AgentAccess::is_lost(agent_, holder)) return;
    auto state = state_locked(id, holder);
    auto& e = owners_[id];
    e.forks[fork] = holder;
    e.pinned = std::move(state);
  }

  // Removes a fork; the value goes when nothing else holds it.
  void remove_fork(const RRefId& id, const ForkId& fork) {
    std::shared_ptr<OwnerState> dropped;
    std::lock_guard lock(mu_);
    auto it = owners_.find(id);
    if (it == owners_.end()) return;
    it->second.forks.erase(fork);
    dropped = repin(it->second);
  }

  // The creation finished (value or error): only forks and local RRefs hold it from now on.
  void mark_created(const RRefId& id) {
    std::shared_ptr<OwnerState> dropped;
    std::lock_guard lock(mu_);
    auto it = owners_.find(id);
    if (it == owners_.end()) return;
    it->second.created = true;
    dropped = repin(it->second);
  }

  // Called by a dying OwnerState: forget its entry unless a new state took the id.
  void forget(const RRefId& id) {
    std::lock_guard lock(mu_);
    auto it = owners_.find(id);
    if (it != owners_.end() && it->second.weak.expired() && !it->second.pinned) owners_.erase(it);
  }

  // --- user side ---

  std::shared_ptr<RRefCore> make_user(const RRefId& id, const ForkId& fork, std::uint32_t owner, std::uint64_t type) {
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

  std::shared_ptr<RRefCore> make_owned(std::shared_ptr<OwnerState> state, std::uint64_t type) {
    auto core = std::make_shared<RRefCore>();
    core->id = state->id;
    core->owner = self();
    core->type = type;
    core->owned = std::move(state);
    core->ctx = weak_from_this();
    core->confirmed = true;
    return core;
  }

  void add_child(const ForkId& fork, std::shared_ptr<RRefCore> parent_ref, std::uint32_t destination) {
    std::lock_guard lock(mu_);
    children_[fork] = Child{std::move(parent_ref), destination};
  }
  void drop_child(const ForkId& fork) {
    Child dropped;
    std::lock_guard lock(mu_);
    auto it = children_.find(fork);
    if (it == children_.end()) return;
    dropped = std::move(it->second);
    children_.erase(it);
  }

  // The last handle on a user reference is gone: tell the owner (once).
  void user_dropped(RRefCore& core);

  RRefStats stats() const {
    std::lock_guard lock(mu_);
    RRefStats s;
    s.owned_values = live_->load();
    for (auto& [id, e] : owners_) s.forks += e.forks.size();
    s.user_rrefs = users_.size();
    s.pending_children = children_.size();
    return s;
  }

  // --- agent events ---
  void on_peer_lost(std::uint32_t peer) override;
  void on_group_quiet() override;
  void on_stop() override;

 private:
  struct Entry {
    std::weak_ptr<OwnerState> weak;
    std::shared_ptr<OwnerState> pinned;  // held while forks exist or creation is awaited
    std::unordered_map<ForkId, std::uint32_t, IdHash> forks;  // fork -> worker holding it
    bool created = false;
    std::uint32_t announced_by = UINT32_MAX;  // whose message made the entry
  };
  struct Child {
    std::shared_ptr<RRefCore> parent_ref;
    std::uint32_t destination = UINT32_MAX;
  };

  std::shared_ptr<OwnerState> state_locked(const RRefId& id, std::uint32_t requester) {
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

  // Re-derives the pin of `e`; returns the reference to drop (outside the lock).
  static std::shared_ptr<OwnerState> repin(Entry& e) {
    if (!e.forks.empty() || !e.created) return nullptr;
    return std::move(e.pinned);
  }
  void send_delete(const RRefCore& core, bool abandon);

  Agent& agent_;
  std::atomic<std::uint64_t> next_id_{1};
  std::shared_ptr<std::atomic<std::int64_t>> live_ = std::make_shared<std::atomic<std::int64_t>>(0);
  mutable std::mutex mu_;
  std::unordered_map<RRefId, Entry, IdHash> owners_;
  std::unordered_map<ForkId, std::weak_ptr<RRefCore>, IdHash> users_;
  std::unordered_map<ForkId, Child, IdHash> children_;
};

inline OwnerState::~OwnerState() {
  --*live;
  if (auto c = ctx.lock()) c->forget(id);
}

inline RRefCore::~RRefCore() {
  if (owned) return;
  if (auto c = ctx.lock()) c->user_dropped(*this);
}

}  // namespace remora::detail
