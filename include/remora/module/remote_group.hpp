#pragma once
// RemoteGroup<T>: one object of any class T per point of a DeviceMesh, each owned by its point's
// worker, and Monarch's adverbs over them, checked by the compiler:
//
//   remora::RemoteGroup<Env> envs = remora::spawn<Env>(mesh, seed);   // T(seed) on every point
//   remora::ValueMesh<Obs> obs = envs.call<&Env::reset>();              // all members, mesh order
//   remora::Future<remora::ValueMesh<Obs>> f = envs.call_async<&Env::reset>();
//   envs.broadcast<&Env::set_policy>(weights);                          // the caller waits for nothing
//   remora::Future<Act> a = envs.choose<&Env::step>(action);           // the least busy member
//   remora::Stream<Traj> s = envs.stream<&Env::rollout>(128);           // results as they finish
//   remora::RemoteGroup<Env> row = envs.slice("dp", 0);                 // as DeviceMesh::slice
//   envs.on_failure([](const remora::MemberLost&) { return remora::Recovery::await_restart(30s); });
//
// Arguments are placed as for RemoteModuleGroup (placement.hpp): a plain one goes to every
// member, Shard(dim, tensor) gives each member its piece. A method that T does not have, or
// arguments it does not take, fail to compile, as an RRef proxy call does.
//
// Ownership: a group holds an RRef to each member; copies share them (a member replaced through
// one copy is replaced for all), and a member lives until the last group (or RRef) that names it
// is gone. Cost: one call per member, sent back to back before any is waited for; choose() is
// one call.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "remora/core/errors.hpp"
#include "remora/module/detail/group_adverbs.hpp"
#include "remora/module/detail/group_placement.hpp"
#include "remora/module/detail/group_spawn.hpp"
#include "remora/module/device_mesh.hpp"
#include "remora/module/recovery.hpp"
#include "remora/module/stream.hpp"
#include "remora/module/value_mesh.hpp"

namespace remora {

template <class T>
class RemoteGroup {
 public:
  using Member = RRef<T>;

  RemoteGroup() = default;  // no members; assign one made by spawn()
  // A group over objects that already exist, one per point of `mesh` in its order (each owned
  // by its point's worker). It cannot make a member again (replace and the replacing policies
  // throw Error). Throws remora::Error when the counts differ.
  RemoteGroup(DeviceMesh mesh, std::vector<Member> members) : shared_(std::make_shared<Shared>(std::move(mesh))) {
    if (static_cast<std::int64_t>(members.size()) != shared_->mesh.size())
      throw Error("remora: RemoteGroup: " + std::to_string(members.size()) + " members for a mesh of " +
                  std::to_string(shared_->mesh.size()) + " points");
    shared_->members = std::move(members);
  }

  std::size_t size() const { return shared_ ? view().members.size() : 0; }
  DeviceMesh mesh() const { return view().mesh; }
  Member member(std::size_t i) const { return view().members.at(i); }
  std::vector<Member> members() const { return view().members; }
  // Calls in flight to member `i` from this group and its copies (what choose() weighs).
  std::int64_t in_flight(std::size_t i) const {
    if (i >= size()) throw Error("remora: RemoteGroup::in_flight: no member " + std::to_string(i));
    return shared_->loads->in_flight(i);
  }

  // Member `i` made again on `point` ("worker/device") from spawn()'s arguments: a new T, since
  // a T has no state another could be given; the mesh's point `i` becomes `point`. Throws Error
  // for a group not made by spawn(), or as spawn() does.
  void replace(std::size_t i, std::string_view point) const {
    auto& s = checked();
    if (!s.make) throw Error("remora: RemoteGroup::replace: a group not made by spawn() cannot make a member again");
    auto points = mesh().devices();
    if (i >= points.size()) throw Error("remora: RemoteGroup::replace: no member " + std::to_string(i));
    points[i] = std::string(point);
    DeviceMesh next(std::move(points), s.mesh.shape(), s.mesh.dims());  // checked before anything is made
    auto m = s.make(agent(), std::string(point));
    std::lock_guard lock(s.mu);
    s.members[i] = std::move(m);
    s.mesh = std::move(next);
  }
  // What call does when a member's worker is lost during it: `policy` says, per lost member
  // (recovery.hpp): the member is made again (replace_on, await_restart) and runs the call once
  // more; the others are not called again. Without one, or with fail(), call fails with the
  // member's WorkerLost. The other adverbs hand the lost member's WorkerLost back as it is.
  void on_failure(std::function<Recovery(const MemberLost&)> policy) const {
    auto& s = checked();
    std::lock_guard lock(s.mu);
    s.policy = std::move(policy);
  }

  // Method M on every member; one future per member, in mesh order. A member already known
  // lost gets a future that holds its WorkerLost. Throws remora::Error for a placement that does
  // not fit, before anything is sent.
  template <auto M, class... As>
  auto call_each(const As&... args) const {
    check<M, As...>();
    return each<M>(view().members, args...);
  }
  // All members' results in a ValueMesh (nothing for a void method) once every member answered;
  // a failed member (WorkerLost names a lost one) fails it with its error, and call_each keeps
  // the others' results.
  template <auto M, class... As>
  auto call_async(const As&... args) const {
    check<M, As...>();
    auto v = view();
    return detail::gather_mesh(std::move(v.mesh), each<M>(v.members, args...));
  }
  // call_async, waited for (on the calls themselves: no pool thread is needed to finish it, so a
  // pool thread may call this), with lost members recovered as on_failure says.
  template <auto M, class... As>
  auto call(const As&... args) const {
    check<M, As...>();
    auto members = view().members;
    auto futures = each<M>(members, args...);
    auto all = when_all(futures);
    detail::AgentAccess::await_sync(agent(), all, futures.size());
    recover_lost<M>(members, futures, args...);
    if constexpr (std::is_void_v<typename decltype(all)::value_type>) {
      detail::gather_all(futures);
    } else {
      auto values = detail::gather_all(futures);
      return ValueMesh(mesh(), std::move(values));
    }
  }
  // Method M on every member; the caller waits for nothing and hears no result. A member that
  // fails is logged here (a warning naming its point, the method and why).
  template <auto M, class... As>
  void broadcast(const As&... args) const {
    check<M, As...>();
    auto v = view();
    auto futures = each<M>(v.members, args...);
    detail::log_broadcast_failures(futures, v.mesh, std::string(function_identity<M>.name));
  }
  // Method M on one member: the one with the fewest calls in flight from this group (round
  // robin among equals), skipping members whose worker is known lost. A future that holds
  // WorkerLost when every member is lost. Arguments go whole to the one member.
  template <auto M, class... As>
  auto choose(const As&... args) const {
    static_assert(!(std::is_same_v<As, Shard> || ...),
                  "remora: choose() sends its arguments whole to one member: a Shard has no piece to give it");
    check<M, As...>();
    const auto members = view().members;
    return detail::choose_member(
        shared_->loads, [&](std::size_t j) { return !lost(members[j]); },
        [&](std::size_t i) { return one<M>(members[i], i, members.size(), args...); }, members[0].owner_name(),
        function_identity<M>.name);
  }
  // Method M on every member; the results in the order they finish (stream.hpp).
  template <auto M, class... As>
  auto stream(const As&... args) const {
    return Stream(call_each<M>(args...));
  }

  // The members along `dim` through the `index`-th point of the other dimensions, as
  // DeviceMesh::slice picks them: the same objects (no copy on any worker), in a group of their
  // own that recovers nothing (take slices again after a recovery of the whole group).
  RemoteGroup slice(std::string_view dim, std::int64_t index) const {
    auto v = view();
    DeviceMesh sub = v.mesh.slice(dim, index);
    auto picked = detail::members_at(v.mesh, sub, v.members);
    return RemoteGroup(std::move(sub), std::move(picked));
  }

 private:
  template <class U, class... As>
  friend RemoteGroup<U> spawn(Agent&, const DeviceMesh&, const As&...);

  struct Shared {
    explicit Shared(DeviceMesh m) : mesh(std::move(m)), loads(std::make_shared<detail::MemberLoads>(mesh.devices().size())) {}
    mutable std::mutex mu;          // mesh, members, policy
    mutable std::mutex recovering;  // one recovery at a time (two callers may meet one loss)
    DeviceMesh mesh;
    std::vector<Member> members;
    std::function<Member(Agent&, const std::string&)> make;  // spawn()'s T and arguments
    std::function<Recovery(const MemberLost&)> policy;
    std::shared_ptr<detail::MemberLoads> loads;
  };
  struct View {
    DeviceMesh mesh;
    std::vector<Member> members;
  };

  Shared& checked() const {
    if (!shared_) throw Error("remora: RemoteGroup: this group is empty (default-constructed)");
    return *shared_;
  }
  View view() const {  // the mesh and its members as one snapshot
    auto& s = checked();
    std::lock_guard lock(s.mu);
    return View{s.mesh, s.members};
  }
  Agent& agent() const { return detail::RRefAccess::context(member(0))->agent(); }
  bool lost(const Member& m) const {
    return detail::AgentAccess::is_lost(detail::RRefAccess::context(m)->agent(), detail::RRefAccess::core(m).owner);
  }

  template <auto M, class... As>
  static constexpr void check() {
    static_assert(detail::method_of<T, M>(),
                  "remora: RemoteGroup<T>: this method is not a method of T (nor of a class T derives from)");
    detail::check_method<T, M, detail::placed_t<As>...>();
  }
  // Every member's call (each counted as in flight until it completes).
  template <auto M, class... As>
  auto each(const std::vector<Member>& members, const As&... args) const {
    (detail::check_placement(args, "RemoteGroup::call", members.size()), ...);
    using F = decltype(one<M>(members.at(0), 0, 1, args...));
    std::vector<F> out;
    out.reserve(members.size());
    for (std::size_t i = 0; i < members.size(); ++i) {
      out.push_back(one<M>(members[i], i, members.size(), args...));
      detail::MemberLoads::track(shared_->loads, i, out.back());
    }
    return out;
  }
  // Member i's call (of n). What fails before it is sent (an argument that does not encode, say)
  // is its future's, so the other members are still called.
  template <auto M, class... As>
  static auto one(const Member& m, std::size_t i, std::size_t n, const As&... args) {
    using F = decltype(m.rpc_async().template call<M>(detail::piece_for(args, i, n)...));
    try {
      return F(m.rpc_async().template call<M>(detail::piece_for(args, i, n)...));
    } catch (...) {
      return make_exceptional_future<typename F::value_type>(std::current_exception());
    }
  }

  // call()'s recovery: each member whose own worker was lost during it is made again as the
  // policy says and called once more (at most three recoveries per member and call).
  template <auto M, class F, class... As>
  void recover_lost(std::vector<Member>& members, std::vector<F>& futures, const As&... args) const {
    std::function<Recovery(const MemberLost&)> policy;
    {
      std::lock_guard lock(shared_->mu);
      policy = shared_->policy;
    }
    if (!policy) return;
    detail::recover_members(
        members, futures, shared_->recovering, [&](std::size_t i) { return lost_member(futures[i], members[i], i); },
        [&](std::size_t i) { return member(i); }, [&](const MemberLost& gone) { return recover(gone, policy(gone)); },
        [&](std::size_t i) {
          auto f = one<M>(members[i], i, members.size(), args...);
          detail::MemberLoads::track(shared_->loads, i, f);
          return f;
        });
  }
  template <class F>
  std::optional<MemberLost> lost_member(const F& future, const Member& m, std::size_t i) const {
    return detail::member_lost(future, i, mesh().devices().at(i), m.owner(), [&] { return lost(m); });
  }
  // False: the policy says fail. Throws Error when the recovery itself fails.
  bool recover(const MemberLost& gone, const Recovery& r) const {
    switch (r.kind()) {
      case Recovery::Kind::fail:
        return false;
      case Recovery::Kind::replace_on:
        replace(gone.index, r.device());
        return true;
      case Recovery::Kind::await_restart:
        detail::await_rejoin(agent(), gone, r.timeout(), "RemoteGroup");
        replace(gone.index, gone.device);
        return true;
    }
    return false;
  }

  std::shared_ptr<Shared> shared_;
};

// One T(args...) on every point of `mesh`, owned by the point's worker, in the mesh's order;
// waits until all exist. Throws as remote() does (RemoteError when a constructor throws there,
// naming its worker) once every member answered. T needs a constructor from the arguments, and
// each argument must be Serializable. The group keeps copies of `args` to make a member again
// (replace, on_failure).
template <class T, class... As>
RemoteGroup<T> spawn(Agent& agent, const DeviceMesh& mesh, const As&... args) {
  static_assert(std::is_constructible_v<T, std::decay_t<As>&&...>,
                "remora: spawn<T>: T has no constructor that takes these arguments");
  static_assert((Serializable<As> && ...), "remora: spawn<T>: a constructor argument is not Serializable");
  RemoteGroup<T> g(mesh, detail::spawn_members<T>(agent, mesh.devices(), args...));
  g.shared_->make = [args...](Agent& a, const std::string& point) {
    return detail::spawn_members<T>(a, std::vector<std::string>{point}, args...).at(0);
  };
  return g;
}
template <class T, class... As>
RemoteGroup<T> spawn(const DeviceMesh& mesh, const As&... args) {
  return spawn<T>(current_agent(), mesh, args...);
}

}  // namespace remora
