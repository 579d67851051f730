#pragma once
// The process-wide agent and the free functions that use it, as in torch.distributed.rpc.
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>

#include "remora/agent/agent.hpp"

namespace remora {

namespace detail {
inline std::unique_ptr<Agent>& global_agent() {
  static std::unique_ptr<Agent> agent;
  return agent;
}
}  // namespace detail

// Starts this process's agent and joins the group; returns when every worker is known.
inline Agent& init_rpc(std::string name, int rank, int world_size, Options options = {}) {
  auto& g = detail::global_agent();
  if (g && g->is_running()) throw Error("remora: init_rpc called twice (worker '" + g->self().name + "' is running)");
  g = std::make_unique<Agent>(std::move(name), rank, world_size, std::move(options));
  return *g;
}

// As above, with rank and world size from RANK and WORLD_SIZE (as torchrun sets them).
inline Agent& init_rpc(std::string name, Options options = {}) {
  const char* rank = std::getenv("RANK");
  const char* world = std::getenv("WORLD_SIZE");
  if (!rank || !*rank || !world || !*world) throw Error("remora: init_rpc without a rank needs RANK and WORLD_SIZE");
  return init_rpc(std::move(name), std::stoi(rank), std::stoi(world), std::move(options));
}

// Inside a remote function: the agent serving it. Elsewhere: the process's agent.
inline Agent& current_agent() {
  if (detail::serving_agent) return *detail::serving_agent;
  auto& g = detail::global_agent();
  if (!g) throw Error("remora: no agent: call remora::init_rpc first");
  return *g;
}

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

inline void shutdown(bool graceful = true) {
  auto& g = detail::global_agent();
  if (g) g->shutdown(graceful);
}

}  // namespace remora
