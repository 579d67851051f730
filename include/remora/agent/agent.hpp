#pragma once
// The Agent: one per worker. It joins the group, makes typed calls to the other workers and
// serves theirs, and stops together with the group. This class is the whole of what users call;
// the machinery (connections, threads, the table of calls in flight) lives in
// detail::AgentRuntime, and the typed call path the layers above use in detail/outbound.hpp.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "remora/agent/debug_info.hpp"
#include "remora/agent/detail/wire_context.hpp"
#include "remora/agent/membership.hpp"
#include "remora/agent/options.hpp"
#include "remora/config.hpp"
#include "remora/core/future.hpp"

namespace remora {

namespace detail {
class AgentRuntime;
struct AgentAccess;
}  // namespace detail

class Agent {
 public:
  // Joins the group: returns once every worker is known and every device map checked. Throws
  // remora::Error on a duplicate name, a bad rank or option, or a rendezvous timeout.
  REMORA_DECL Agent(std::string name, int rank, int world_size, Options options = {});
  // Joins an elastic group (options.elastic must be set): returns once this worker is published
  // and has greeted every member it found. Throws remora::Error on a bad option, a store it
  // cannot reach, or when no member it found could be reached (a wrong secret, say).
  REMORA_DECL Agent(std::string name, Options options);
  // Stops at once if shutdown() was not called: pending calls fail with WorkerLost.
  REMORA_DECL ~Agent();
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  REMORA_DECL const WorkerInfo& self() const;
  // The options in force: the ones given, what they left unset filled in from the environment or
  // the defaults; `secret` is empty (the agent keeps the only copy, for its handshakes).
  REMORA_DECL const Options& options() const;
  // Throws remora::Error for a name or id that is not in the group. In an elastic group a name
  // is its newest incarnation, and one this worker has not met yet is looked up in the store.
  REMORA_DECL WorkerInfo get_worker_info(std::string_view name) const;
  REMORA_DECL WorkerInfo get_worker_info(std::uint32_t id) const;
  // The group now: every worker of a static group (lost ones too); an elastic group's members
  // this worker knows, less those that left or were lost. A copy.
  REMORA_DECL std::vector<WorkerInfo> get_worker_infos() const;
  // Calls `callback` with each membership change from now on (membership.hpp), until the
  // Subscription goes. Cost: one queue push per event; callbacks run on a pool thread.
  REMORA_DECL Subscription on_membership(std::function<void(const MembershipEvent&)> callback);
  // The TCP port this worker listens on (useful with Options::listen_port = 0).
  REMORA_DECL std::uint16_t listen_port() const;
  // What carries calls to `worker` now: "tcp", "tls", "local", or "" while no connection is open.
  REMORA_DECL std::string transport_to(std::string_view worker) const;
  // Bytes of this worker's shared memory that peers still hold (tensors they received and keep).
  REMORA_DECL std::size_t shared_bytes_in_use() const;

  // Calls F on worker `to`; the result arrives in the Future. An optional CallOptions first
  // argument sets this call's timeout. Cost: one frame encoded on this thread, no thread hop.
  template <auto F, class... As>
  auto rpc_async(std::string_view to, As&&... args);
  // As rpc_async, waiting for the result (or rethrowing the call's error).
  template <auto F, class... As>
  auto rpc_sync(std::string_view to, As&&... args);

  // Graceful (default): waits until no worker has calls outstanding, then the whole group stops
  // together. In an elastic group, graceful leaves alone: once this worker's calls are answered,
  // it releases the references it holds, tells every member (their calls to it and their
  // references to its values then fail with WorkerLost) and stops; the others go on.
  // Non-graceful: stops now and fails what is pending. Calls afterwards throw.
  REMORA_DECL void shutdown(bool graceful = true);
  REMORA_DECL bool is_running() const;
  // Calls currently awaiting a reply from a peer (or from this worker).
  REMORA_DECL std::size_t pending_calls() const;
  // A snapshot of calls, connections, traffic and references (debug_info.hpp).
  REMORA_DECL DebugInfo debug_info() const;

 private:
  friend struct detail::AgentAccess;
  friend wire::EncodeDevices detail::encode_devices_for(Agent*, std::uint32_t, detail::Direction);
  std::unique_ptr<detail::AgentRuntime> rt_;
  mutable std::atomic<int> sync_waiters_{0};  // threads waiting for a sync call's answer
};

}  // namespace remora

#include "remora/agent/detail/outbound.hpp"
