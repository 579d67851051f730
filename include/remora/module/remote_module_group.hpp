#pragma once
// RemoteModuleGroup<I>: one RemoteModule<I> per point of a DeviceMesh (replicas of one module,
// or the members of a data-parallel dimension), called together. Arguments reach the members as
// their placements say (placement.hpp: a plain argument is replicated), results come back
// combined; every placement is checked before anything is sent.
//
//   auto g = remora::RemoteModuleGroup<Scorer>::create<Affine>(dp, 4, 2);
//   torch::Tensor y = g.forward(remora::Shard(0, x), remora::Replicate(2.0));  // batch split, concatenated
//   auto each = g.forward_each(x, 1.0);                     // the same arguments to all, one future each
//   std::vector<int64_t> n = g.call<&Scorer::calls>();
//
// Cost: one call per member, sent back to back before any is waited for; a Shard argument costs
// a view per member (a copy only when the piece is not contiguous). A failed member fails the
// group call with its own error (WorkerLost names the worker) once every member has answered:
// forward_each keeps the others' results.
#include <chrono>
#include <cstddef>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "remora/core/errors.hpp"
#include "remora/module/device_mesh.hpp"
#include "remora/module/detail/group_adverbs.hpp"
#include "remora/module/detail/group_placement.hpp"
#include "remora/module/placement.hpp"
#include "remora/module/recovery.hpp"
#include "remora/module/remote_module.hpp"
#include "remora/module/stream.hpp"
#include "remora/module/value_mesh.hpp"

namespace remora {

template <class I>
class RemoteModuleGroup {
 public:
  using Member = RemoteModule<I>;
  using result_type = typename Member::result_type;
  using State = std::map<std::string, torch::Tensor>;

  RemoteModuleGroup() = default;  // no members; assign one made by create()

  // Builds M(args...) at every point of `mesh` (each "worker/device"), in the mesh's order, and
  // waits until all exist. Throws as RemoteModule::create does, naming the failing point. The
  // group keeps copies of `args` to make a member again (replace, on_failure).
  template <class M, class... As>
  static RemoteModuleGroup create(Agent& agent, const DeviceMesh& mesh, const As&... args) {
    RemoteModuleGroup g(&agent, mesh);
    g.shared_->make = [args...](Agent& a, const std::string& point) { return Member::template create<M>(a, point, args...); };
    for (const auto& point : mesh.devices()) g.shared_->members.push_back(g.shared_->make(agent, point));
    return g;
  }
  template <class M, class... As>
  static RemoteModuleGroup create(const DeviceMesh& mesh, const As&... args) {
    return create<M>(current_agent(), mesh, args...);
  }
  // A group over modules that already exist (one per point of `mesh`, in its order). It cannot
  // make a member again (replace and the replacing policies throw Error).
  static RemoteModuleGroup from_members(DeviceMesh mesh, std::vector<Member> members) {
    if (members.size() != static_cast<std::size_t>(mesh.size()))
      throw Error("remora: RemoteModuleGroup: " + std::to_string(members.size()) + " members for a mesh of " +
                  std::to_string(mesh.size()) + " points");
    RemoteModuleGroup g(nullptr, std::move(mesh));
    g.shared_->members = std::move(members);
    return g;
  }

  // Copies of a group share its members: a member replaced through one is replaced for all.
  std::size_t size() const { return shared_ ? snapshot().size() : 0; }
  Member member(std::size_t i) const { return snapshot().at(i); }
  std::vector<Member> members() const { return snapshot(); }
  DeviceMesh mesh() const {
    std::lock_guard lock(checked().mu);
    return shared_->mesh;
  }

  // Member `i` made again on `device` ("worker/device") from create()'s arguments, with the
  // parameters and buffers of the first healthy member (copy_state_from: worker to worker), or
  // with `state` (through this worker); the mesh's point `i` becomes `device`. Throws Error when
  // the group was not made by create(), when no other member answers, or as RemoteModule::create
  // and load_state_dict do. Cost: one create and the whole state once.
  void replace(std::size_t i, std::string_view device) { replace_member(i, device, nullptr); }
  void replace(std::size_t i, std::string_view device, const State& state) { replace_member(i, device, &state); }

  // Weight sync to every member (RemoteModule::load_state_dict of named tensors): all members'
  // names and shapes are checked before any tensor is sent, then each member's worker receives
  // `named` once and copies it in place. The future completes when every member has copied, or
  // holds the first failure (a lost member: its WorkerLost; nothing is recovered here); the async
  // form waits for the members' shapes before it returns, and reads `named` until then.
  void load_state_dict(const torch::OrderedDict<std::string, torch::Tensor>& named) const {
    auto f = load_state_dict_async(named);
    if (shared_->agent) detail::AgentAccess::await_sync(*shared_->agent, f);
    std::move(f).get();
  }
  Future<void> load_state_dict_async(const torch::OrderedDict<std::string, torch::Tensor>& named) const {
    std::vector<RRef<I>> modules;
    std::vector<std::string> points;
    {
      std::lock_guard lock(checked().mu);  // the members and their points as one snapshot
      for (const auto& m : shared_->members) modules.push_back(m.module_rref());
      points = shared_->mesh.devices();
    }
    if (modules.empty()) throw Error("remora: RemoteModuleGroup::load_state_dict: this group has no members");
    return detail::load_named_state<I>(modules, points, named);
  }

  // What forward, forward_as and call do when a member's worker is lost during them: `policy`
  // says, per lost member (recovery.hpp). Without one, or with Recovery::fail(), the group call
  // fails with that member's WorkerLost. A recovered member runs the call once more, on its new
  // module; the others are not called again. forward_each and call_each hand back the members'
  // futures as they are.
  void on_failure(std::function<Recovery(const MemberLost&)> policy) {
    std::lock_guard lock(checked().mu);
    shared_->policy = std::move(policy);
  }

  // Every member's forward, with each argument placed (a plain one replicated); one future per
  // member, in mesh order. Throws remora::Error for a placement that does not fit, before any call.
  template <class... As>
  std::vector<Future<result_type>> forward_each(const As&... args) const {
    return each("RemoteModuleGroup::forward", snapshot(), forward_call(args...), args...);
  }

  // forward on every member, results combined as `placement` says (Shard(dim), Partial(),
  // Replicate()). Throws the first member's error once all have answered.
  template <class Placement, class... As>
  result_type forward_as(const Placement& placement, const As&... args) const {
    return combine(recovering("RemoteModuleGroup::forward", forward_call(args...), args...), placement);
  }
  // forward_as(Shard(0), ...) for tensor results (a data-parallel batch comes back whole), else
  // forward_as(Replicate(), ...).
  template <class... As>
  result_type forward(const As&... args) const {
    if constexpr (std::is_same_v<result_type, torch::Tensor>) return forward_as(Shard(0), args...);
    else return forward_as(Replicate(), args...);
  }

  // Method M of I on every member (arguments placed as for forward); one future per member.
  template <auto M, class... As>
  auto call_each(const As&... args) const {
    return each("RemoteModuleGroup::call", snapshot(), method_call<M>(args...), args...);
  }
  // The members' results in a ValueMesh, in mesh order (nothing for a void method); a lost
  // member is recovered as on_failure says.
  template <auto M, class... As>
  auto call(const As&... args) const {
    if constexpr (std::is_void_v<typename decltype(call_each<M>(args...))::value_type::value_type>) {
      recovering("RemoteModuleGroup::call", method_call<M>(args...), args...);
    } else {
      auto values = recovering("RemoteModuleGroup::call", method_call<M>(args...), args...);
      return ValueMesh(mesh(), std::move(values));
    }
  }

  // The adverbs of RemoteGroup (remote_group.hpp), over I's methods with RemoteModule's device
  // rules. They do not recover a lost member (call and forward do): its future holds WorkerLost.
  template <auto M, class... As>
  auto call_async(const As&... args) const {
    return detail::gather_mesh(mesh(), call_each<M>(args...));
  }
  // Method M on every member; the caller waits for nothing, a member's failure is logged here.
  template <auto M, class... As>
  void broadcast(const As&... args) const {
    auto futures = call_each<M>(args...);
    detail::log_broadcast_failures(futures, mesh(), std::string(function_identity<M>.name));
  }
  // Method M on the member with the fewest calls in flight from this group (round robin among
  // equals), skipping members whose worker is known lost.
  template <auto M, class... As>
  auto choose(const As&... args) const {
    static_assert(!(std::is_same_v<As, Shard> || ...),
                  "remora: choose() sends its arguments whole to one member: a Shard has no piece to give it");
    const auto members = snapshot();
    if (members.empty()) throw Error("remora: RemoteModuleGroup: this group has no members");
    return detail::choose_member(
        shared_->loads,
        [&](std::size_t j) {
          const auto& rref = members[j].module_rref();
          return !detail::AgentAccess::is_lost(detail::RRefAccess::context(rref)->agent(), members[j].owner().id);
        },
        [&](std::size_t i) { return call_one(members, method_call<M>(args...), i, false); },  // (claim counted it)
        point(0), function_identity<M>.name);
  }
  // Method M on every member; the results in the order they finish (stream.hpp).
  template <auto M, class... As>
  auto stream(const As&... args) const {
    return Stream(call_each<M>(args...));
  }
  // The members along `dim` through the `index`-th point of the other dimensions (as
  // DeviceMesh::slice): the same modules, in a group of their own as from_members() makes it. It
  // recovers nothing (replace throws): a member replaced through the whole group is not seen by
  // a slice taken before, so take slices again after a recovery.
  RemoteModuleGroup slice(std::string_view dim, std::int64_t index) const {
    auto& from = checked();
    std::lock_guard lock(from.mu);  // the mesh and the members as one snapshot
    RemoteModuleGroup g(nullptr, from.mesh.slice(dim, index));
    g.shared_->members = detail::members_at(from.mesh, g.shared_->mesh, from.members);
    return g;
  }

 private:
  struct Shared {
    Shared(Agent* a, DeviceMesh m) : agent(a), mesh(std::move(m)) {}
    mutable std::mutex mu;          // members, mesh, policy
    mutable std::mutex recovering;  // one recovery at a time (two callers may meet one loss)
    Agent* agent;  // create()'s (null for from_members)
    DeviceMesh mesh;
    std::vector<Member> members;
    std::function<Member(Agent&, const std::string&)> make;  // create()'s M and arguments
    std::function<Recovery(const MemberLost&)> policy;
    std::shared_ptr<detail::MemberLoads> loads = std::make_shared<detail::MemberLoads>(mesh.devices().size());
  };
  RemoteModuleGroup(Agent* agent, DeviceMesh mesh) : shared_(std::make_shared<Shared>(agent, std::move(mesh))) {}

  // (const: the members live in the shared state, which every copy of the group sees.)
  // With `state` null, from the first other member that answers.
  void replace_member(std::size_t i, std::string_view device, const State* state) const {
    if (i >= size()) throw Error("remora: RemoteModuleGroup::replace: no member " + std::to_string(i));
    if (!shared_->make)
      throw Error("remora: RemoteModuleGroup::replace: a group made by from_members() cannot make a member again");
    auto points = mesh().devices();
    points[i] = std::string(device);
    DeviceMesh next(std::move(points), shared_->mesh.shape(), shared_->mesh.dims());  // checked before anything is made
    auto m = shared_->make(*shared_->agent, std::string(device));
    if (state) m.load_state_dict(*state);
    else copy_from_healthy(m, i);
    std::lock_guard lock(shared_->mu);
    shared_->members[i] = std::move(m);
    shared_->mesh = std::move(next);
  }
  Shared& checked() const {
    if (!shared_) throw Error("remora: RemoteModuleGroup: this group is empty (default-constructed)");
    return *shared_;
  }

  std::vector<Member> snapshot() const {
    if (!shared_) return {};
    std::lock_guard lock(shared_->mu);
    return shared_->members;
  }
  std::string point(std::size_t i) const {
    std::lock_guard lock(shared_->mu);
    return shared_->mesh.devices().at(i);
  }

  template <class... As>
  auto forward_call(const As&... args) const {
    return [&args...](const Member& m, std::size_t i, std::size_t n) {
      return m.forward_async(detail::piece_for(args, i, n)...);
    };
  }
  template <auto M, class... As>
  auto method_call(const As&... args) const {
    return [&args...](const Member& m, [[maybe_unused]] std::size_t i, [[maybe_unused]] std::size_t n) {
      return m.template call_async<M>(detail::piece_for(args, i, n)...);
    };
  }

  // `call(member, i, n)` for every member, after checking `args`' placements (before anything is
  // sent). A member already known lost refuses at once: its future carries that, not the group call.
  template <class Call, class... As>
  auto each([[maybe_unused]] const char* what, const std::vector<Member>& members, const Call& call,
            const As&... args) const {
    (detail::check_placement(args, what, members.size()), ...);
    using F = decltype(call(members.at(0), 0, 0));
    std::vector<F> out;
    out.reserve(members.size());
    for (std::size_t i = 0; i < members.size(); ++i) out.push_back(call_one(members, call, i));
    return out;
  }
  // Member i's call (counted as in flight until it completes, for choose). What fails before it
  // is sent is its future's, so the other members are still called.
  template <class Call>
  auto call_one(const std::vector<Member>& members, const Call& call, std::size_t i, bool count = true) const {
    using F = decltype(call(members.at(0), 0, 0));
    F f;
    try {
      f = call(members[i], i, members.size());
    } catch (...) {
      f = make_exceptional_future<typename F::value_type>(std::current_exception());
    }
    if (count) detail::MemberLoads::track(shared_->loads, i, f);
    return f;
  }

  // each(), then the results in mesh order; a member lost on the way is recovered as the policy
  // says and called again (at most once per recovery, three recoveries per member and call).
  template <class Call, class... As>
  auto recovering(const char* what, const Call& call, const As&... args) const {
    checked();
    auto members = snapshot();
    auto futures = each(what, members, call, args...);
    std::function<Recovery(const MemberLost&)> policy;
    {
      std::lock_guard lock(shared_->mu);
      policy = shared_->policy;
    }
    if (policy)
      detail::recover_members(
          members, futures, shared_->recovering, [&](std::size_t i) { return lost_member(futures[i], members[i], i); },
          [&](std::size_t i) { return member(i); }, [&](const MemberLost& lost) { return recover(lost, policy(lost)); },
          [&](std::size_t i) { return call_one(members, call, i); });
    return detail::gather_all(futures);
  }

  template <class F>
  std::optional<MemberLost> lost_member(const F& future, const Member& m, std::size_t i) const {
    const auto owner = m.owner();
    return detail::member_lost(future, i, point(i), owner, [&] {
      return !shared_->agent || detail::AgentAccess::is_lost(*shared_->agent, owner.id);
    });
  }

  // False: the policy says fail. Throws Error when recovery itself fails.
  bool recover(const MemberLost& lost, const Recovery& r) const {
    if (r.kind() != Recovery::Kind::fail && !shared_->make)
      throw Error("remora: RemoteModuleGroup: member " + std::to_string(lost.index) + " ('" + lost.device +
                  "') was lost, and a group made by from_members() cannot make a member again (" + lost.reason + ")");
    switch (r.kind()) {
      case Recovery::Kind::fail:
        return false;
      case Recovery::Kind::replace_on:
        replace_member(lost.index, r.device(), nullptr);
        return true;
      case Recovery::Kind::await_restart: {
        detail::await_rejoin(*shared_->agent, lost, r.timeout(), "RemoteModuleGroup");
        replace_member(lost.index, lost.device, nullptr);
        return true;
      }
    }
    return false;
  }

  void copy_from_healthy(const Member& m, std::size_t except) const {
    const auto members = snapshot();
    std::string why;
    for (std::size_t j = 0; j < members.size(); ++j) {
      if (j == except) continue;
      try {
        return m.copy_state_from(members[j]);
      } catch (const Error& e) {
        if (why.empty()) why = e.what();
      }
    }
    throw Error("remora: RemoteModuleGroup: no healthy member to copy member " + std::to_string(except) +
                "'s state from" + (why.empty() ? std::string() : " (" + why + ")"));
  }

  result_type combine(std::vector<result_type> results, const Shard& s) const {
    static_assert(std::is_same_v<result_type, torch::Tensor>, "remora: Shard(dim) combines tensor results only");
    if (s.tensor.defined()) throw Error("remora: RemoteModuleGroup::forward_as: the result placement is Shard(dim)");
    return torch::cat(results, s.dim);
  }
  result_type combine(std::vector<result_type> results, const Partial&) const {
    result_type sum = results.at(0);
    for (std::size_t i = 1; i < results.size(); ++i) sum = sum + results[i];
    return sum;
  }
  result_type combine(std::vector<result_type> results, const Replicate<void>&) const {
    for (std::size_t i = 1; i < results.size(); ++i)
      if (!detail::agree(results[0], results[i]))
        throw Error("remora: RemoteModuleGroup::forward_as(Replicate()): member " + std::to_string(i) + " ('" +
                    point(i) + "') disagrees with member 0 ('" + point(0) + "')");
    return results.at(0);
  }

  std::shared_ptr<Shared> shared_;
};

}  // namespace remora
