#pragma once
// What makes a process group made over a mesh fail with a clear error once the mesh's membership
// changed (a member lost, left, or joined again as a new incarnation), instead of a backend's
// connection error or a wait until its timeout: process_group() returns a FencedGroup, whose
// collectives check the fence first. The fence is set by the agent's membership events (one
// Subscription per group), so a collective started in the instant between a loss and its event
// still meets the backend's own error.
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include "remora/agent/agent.hpp"
#include "remora/agent/detail/outbound.hpp"
#include "remora/agent/membership.hpp"
#include "remora/core/errors.hpp"

namespace remora::detail {

class GroupFence {
 public:
  virtual ~GroupFence() = default;

  // Watches `members` (each worker as it was when the group was made) through `agent`'s events;
  // `what` names the group in errors ("process_group(\"dp\")"). Call once, before any collective.
  void watch(Agent& agent, std::vector<WorkerInfo> members, std::string what) {
    what_ = std::move(what);
    auto state = state_;
    state->members = std::move(members);
    // A group dropped while a callback of the user's runs must not wait for it (the thread that
    // drops it may hold a lock that callback waits for): this callback holds its state.
    subscription_ = AgentAccess::on_membership_unwaited(agent, [state](const MembershipEvent& e) {
      for (const auto& m : state->members) {
        if (m.name != e.worker.name) continue;
        // (Events of earlier incarnations, delivered late, say nothing of this group.)
        if (e.kind == MembershipEvent::left && e.worker.incarnation == m.incarnation)
          state->mark(m.name, "left");
        else if (e.kind == MembershipEvent::lost && e.worker.incarnation == m.incarnation)
          state->mark(m.name, "was lost" + (e.reason.empty() ? std::string() : " (" + e.reason + ")"));
        else if (e.kind == MembershipEvent::joined && e.worker.incarnation > m.incarnation)
          state->mark(m.name, "joined again (incarnation " + std::to_string(e.worker.incarnation) +
                                  "; the group has " + std::to_string(m.incarnation) + ")");
      }
    });
  }

  // Marks the group stale: `worker` `why` (a change seen other than by an event: one that came
  // while the group was being made).
  void mark(const std::string& worker, const std::string& why) { state_->mark(worker, why); }

  // Whether the membership changed since the group was made.
  bool stale() const { return state_->stale.load(std::memory_order_acquire); }

  // Throws WorkerLost naming the changed member when the group is stale. Cost: one atomic load.
  void check(const char* collective) const {
    if (!stale()) return;
    std::string worker, why;
    {
      std::lock_guard lock(state_->mu);
      worker = state_->worker;
      why = state_->why;
    }
    throw WorkerLost(worker, what_ + "." + collective,
                     "the mesh's membership changed since this process group was made: member '" + worker + "' " +
                         why + "; call process_group again for a group of the members there are now");
  }

  // The fence of a group process_group() made, or null for another group.
  static const GroupFence* of(const c10d::ProcessGroup& group) { return dynamic_cast<const GroupFence*>(&group); }

 private:
  struct State {
    std::vector<WorkerInfo> members;
    std::atomic<bool> stale{false};
    std::mutex mu;
    std::string worker, why;  // the first change seen
    void mark(const std::string& w, const std::string& y) {
      std::lock_guard lock(mu);
      if (!stale.load(std::memory_order_relaxed)) worker = w, why = y;
      stale.store(true, std::memory_order_release);
    }
  };
  std::shared_ptr<State> state_ = std::make_shared<State>();  // shared with the subscription's callback
  std::string what_;
  Subscription subscription_;  // ends with the group, at once; outliving the agent is fine
};

// `Group` (c10d::ProcessGroup with libtorch 2's backends set on it, or a libtorch 1 backend,
// which is a ProcessGroup) with the fence checked before each collective and point-to-point
// operation. The methods keep the base's signatures (no `override`: where a libtorch version
// lacks one as a virtual, it only hides it, and a call through c10d::ProcessGroup skips the fence).
template <class Group>
class FencedGroup : public Group, public GroupFence {
 public:
  using Group::Group;
  using Work = c10d::Work;
  template <class T>
  using Ptr = c10::intrusive_ptr<T>;

  Ptr<Work> broadcast(std::vector<at::Tensor>& t, const c10d::BroadcastOptions& o = {}) {
    return check("broadcast"), Group::broadcast(t, o);
  }
  Ptr<Work> allreduce(std::vector<at::Tensor>& t, const c10d::AllreduceOptions& o = {}) {
    return check("allreduce"), Group::allreduce(t, o);
  }
  Ptr<Work> allreduce_coalesced(std::vector<at::Tensor>& t, const c10d::AllreduceCoalescedOptions& o = {}) {
    return check("allreduce_coalesced"), Group::allreduce_coalesced(t, o);
  }
  Ptr<Work> reduce(std::vector<at::Tensor>& t, const c10d::ReduceOptions& o = {}) {
    return check("reduce"), Group::reduce(t, o);
  }
  Ptr<Work> allgather(std::vector<std::vector<at::Tensor>>& out, std::vector<at::Tensor>& in,
                      const c10d::AllgatherOptions& o = {}) {
    return check("allgather"), Group::allgather(out, in, o);
  }
  Ptr<Work> _allgather_base(at::Tensor& out, at::Tensor& in, const c10d::AllgatherOptions& o = {}) {
    return check("_allgather_base"), Group::_allgather_base(out, in, o);
  }
  Ptr<Work> allgather_coalesced(std::vector<std::vector<at::Tensor>>& out, std::vector<at::Tensor>& in,
                                const c10d::AllgatherOptions& o = {}) {
    return check("allgather_coalesced"), Group::allgather_coalesced(out, in, o);
  }
  // (libtorch 2; in a version whose group lacks one, it is never instantiated.)
  Ptr<Work> allgather_into_tensor_coalesced(std::vector<at::Tensor>& out, std::vector<at::Tensor>& in,
                                            const c10d::AllgatherOptions& o = {}) {
    return check("allgather_into_tensor_coalesced"), Group::allgather_into_tensor_coalesced(out, in, o);
  }
  Ptr<Work> reduce_scatter_tensor_coalesced(std::vector<at::Tensor>& out, std::vector<at::Tensor>& in,
                                            const c10d::ReduceScatterOptions& o = {}) {
    return check("reduce_scatter_tensor_coalesced"), Group::reduce_scatter_tensor_coalesced(out, in, o);
  }
  Ptr<Work> gather(std::vector<std::vector<at::Tensor>>& out, std::vector<at::Tensor>& in,
                   const c10d::GatherOptions& o = {}) {
    return check("gather"), Group::gather(out, in, o);
  }
  Ptr<Work> scatter(std::vector<at::Tensor>& out, std::vector<std::vector<at::Tensor>>& in,
                    const c10d::ScatterOptions& o = {}) {
    return check("scatter"), Group::scatter(out, in, o);
  }
  Ptr<Work> reduce_scatter(std::vector<at::Tensor>& out, std::vector<std::vector<at::Tensor>>& in,
                           const c10d::ReduceScatterOptions& o = {}) {
    return check("reduce_scatter"), Group::reduce_scatter(out, in, o);
  }
  Ptr<Work> _reduce_scatter_base(at::Tensor& out, at::Tensor& in, const c10d::ReduceScatterOptions& o = {}) {
    return check("_reduce_scatter_base"), Group::_reduce_scatter_base(out, in, o);
  }
  Ptr<Work> alltoall_base(at::Tensor& out, at::Tensor& in, std::vector<int64_t>& out_splits,
                          std::vector<int64_t>& in_splits, const c10d::AllToAllOptions& o = {}) {
    return check("alltoall_base"), Group::alltoall_base(out, in, out_splits, in_splits, o);
  }
  Ptr<Work> alltoall(std::vector<at::Tensor>& out, std::vector<at::Tensor>& in, const c10d::AllToAllOptions& o = {}) {
    return check("alltoall"), Group::alltoall(out, in, o);
  }
  Ptr<Work> send(std::vector<at::Tensor>& t, int dst, int tag) { return check("send"), Group::send(t, dst, tag); }
  Ptr<Work> recv(std::vector<at::Tensor>& t, int src, int tag) { return check("recv"), Group::recv(t, src, tag); }
  Ptr<Work> recvAnysource(std::vector<at::Tensor>& t, int tag) {
    return check("recvAnysource"), Group::recvAnysource(t, tag);
  }
  Ptr<Work> barrier(const c10d::BarrierOptions& o = {}) { return check("barrier"), Group::barrier(o); }
  void monitoredBarrier(const c10d::BarrierOptions& o, bool wait_all_ranks = false) {
    check("monitoredBarrier");
    Group::monitoredBarrier(o, wait_all_ranks);
  }
};

}  // namespace remora::detail
