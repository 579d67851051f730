#pragma once
// The process-wide agent and the free functions that use it, as in torch.distributed.rpc.
#include <memory>
#include <string>
#include <string_view>

#include "remora/agent/agent.hpp"

namespace remora {

namespace detail {
// The agent init_rpc made (null before).
REMORA_DECL std::unique_ptr<Agent>& global_agent();
}  // namespace detail

// Starts this process's agent and joins the group; returns when every worker is known.
REMORA_DECL Agent& init_rpc(std::string name, int rank, int world_size, Options options = {});

// As above, with rank and world size from RANK and WORLD_SIZE (as torchrun sets them); with
// options.elastic, joins an elastic group instead (no rank or world size).
REMORA_DECL Agent& init_rpc(std::string name, Options options = {});

// Inside a remote function: the agent serving it. Elsewhere: the process's agent.
REMORA_DECL Agent& current_agent();

template <auto F, class... As>
auto rpc_async(std::string_view to, As&&... args) {
  return current_agent().rpc_async<F>(to, std::forward<As>(args)...);
}

template <auto F, class... As>
auto rpc_sync(std::string_view to, As&&... args) {
  return current_agent().rpc_sync<F>(to, std::forward<As>(args)...);
}

inline WorkerInfo get_worker_info(std::string_view name) { return current_agent().get_worker_info(name); }
inline WorkerInfo get_worker_info() { return current_agent().self(); }
inline std::vector<WorkerInfo> get_worker_infos() { return current_agent().get_worker_infos(); }
// Membership events of the process's agent (Agent::on_membership).
inline Subscription on_membership(std::function<void(const MembershipEvent&)> callback) {
  return current_agent().on_membership(std::move(callback));
}
// What the process's agent is doing now: calls in flight per peer, connections, bytes sent and
// received, RRefs owned and forked, autograd contexts (as PyTorch's _get_debug_info).
inline DebugInfo get_debug_info() { return current_agent().debug_info(); }

// Stops the process's agent (graceful: after every worker's outstanding calls are answered).
REMORA_DECL void shutdown(bool graceful = true);

}  // namespace remora

#if REMORA_HEADER_ONLY
#include "remora/agent/impl/rpc.ipp"
#endif
