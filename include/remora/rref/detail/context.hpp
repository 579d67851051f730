#pragma once
// Per-agent RRef bookkeeping, after PyTorch's RRefContext:
//  - as owner: for each value, the forks (users' references) that keep it alive, and whether it
//    was created yet. A value lives while a fork or a local RRef holds it.
//  - as user: live user references (to release them at graceful shutdown), and pending children:
//    forks this worker sent to a third worker that the owner has not yet confirmed. A pending
//    child keeps this worker's own fork alive, so the owner cannot drop the value in between.
#include <atomic>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "remora/agent/agent.hpp"
#include "remora/rref/detail/owner_state.hpp"
#include "remora/rref/stats.hpp"

namespace remora::detail {

using RRefStats = remora::RRefStats;

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
  REMORA_DECL std::shared_ptr<OwnerState> owner_state(const RRefId& id, std::uint32_t requester = UINT32_MAX);
  // Records that `holder` has the reference `fork` (a lost holder's fork is not recorded).
  REMORA_DECL void add_fork(const RRefId& id, const ForkId& fork, std::uint32_t holder);
  // Removes a fork; the value goes when nothing else holds it.
  REMORA_DECL void remove_fork(const RRefId& id, const ForkId& fork);
  // The creation finished (value or error): only forks and local RRefs hold it from now on.
  REMORA_DECL void mark_created(const RRefId& id);
  // Called by a dying OwnerState: forget its entry unless a new state took the id.
  REMORA_DECL void forget(const RRefId& id);

  // --- user side ---

  REMORA_DECL std::shared_ptr<RRefCore> make_user(const RRefId& id, const ForkId& fork, std::uint32_t owner,
                                                  std::uint64_t type);
  REMORA_DECL std::shared_ptr<RRefCore> make_owned(std::shared_ptr<OwnerState> state, std::uint64_t type);
  REMORA_DECL void add_child(const ForkId& fork, std::shared_ptr<RRefCore> parent_ref, std::uint32_t destination);
  REMORA_DECL void drop_child(const ForkId& fork);

  // The last handle on a user reference is gone: tell the owner (once).
  REMORA_DECL void user_dropped(RRefCore& core);

  // --- RRefs made and moved by messages (what RRef<T> does that does not depend on T) ---

  // The message that creates `core`'s value on its owner answered (`failure` null: it was
  // accepted). A failure that is not a timeout fails every use of `core` here and, on a user,
  // tells the owner to fail what waits for the value.
  static REMORA_DECL void creation_answered(const std::shared_ptr<RRefCore>& core, std::exception_ptr failure);
  // Forks `core` for the peer of the frame being encoded (wire_context); undone if the frame is
  // not sent.
  REMORA_DECL WireRRef fork_for_peer(const std::shared_ptr<RRefCore>& core);
  // The reference a received `w` gives this worker; `type_name` is for the error when `w`
  // refers to another type than `expected_type`. Confirms the fork with the owner if need be.
  REMORA_DECL std::shared_ptr<RRefCore> receive(const WireRRef& w, std::uint64_t expected_type,
                                                std::string_view type_name);

  REMORA_DECL RRefStats stats() const;

  // --- agent events ---
  REMORA_DECL void on_peer_lost(std::uint32_t peer) override;
  REMORA_DECL void on_group_quiet() override;
  REMORA_DECL void on_stop() override;
  void add_debug_info(std::map<std::string, std::int64_t>& counters) const override {
    const auto s = stats();
    counters["rref.owned_values"] = s.owned_values;
    counters["rref.forks"] = static_cast<std::int64_t>(s.forks);
    counters["rref.user_rrefs"] = static_cast<std::int64_t>(s.user_rrefs);
    counters["rref.pending_children"] = static_cast<std::int64_t>(s.pending_children);
  }

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

  REMORA_DECL std::shared_ptr<OwnerState> state_locked(const RRefId& id, std::uint32_t requester);

  // Re-derives the pin of `e`; returns the reference to drop (outside the lock).
  static std::shared_ptr<OwnerState> repin(Entry& e) {
    if (!e.forks.empty() || !e.created) return nullptr;
    return std::move(e.pinned);
  }
  REMORA_DECL void send_delete(const RRefCore& core, bool abandon);

  Agent& agent_;
  std::atomic<std::uint64_t> next_id_{1};
  std::shared_ptr<std::atomic<std::int64_t>> live_ = std::make_shared<std::atomic<std::int64_t>>(0);
  mutable std::mutex mu_;
  std::unordered_map<RRefId, Entry, IdHash> owners_;
  std::unordered_map<ForkId, std::weak_ptr<RRefCore>, IdHash> users_;
  std::unordered_map<ForkId, Child, IdHash> children_;
};

}  // namespace remora::detail
