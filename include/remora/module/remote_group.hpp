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
//
// Arguments are placed as for RemoteModuleGroup (placement.hpp): a plain one goes to every
// member, Shard(dim, tensor) gives each member its piece. A method that T does not have, or
// arguments it does not take, fail to compile, as an RRef proxy call does.
//
// Ownership: a group holds an RRef to each member; copies and slices share them, and a member
// lives until the last group (or RRef) that names it is gone. Cost: one call per member, sent
// back to back before any is waited for; choose() is one call.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "remora/core/errors.hpp"
#include "remora/module/detail/group_adverbs.hpp"
#include "remora/module/detail/group_placement.hpp"
#include "remora/module/detail/module_shims.hpp"
#include "remora/module/device_mesh.hpp"
#include "remora/module/remote_device.hpp"
#include "remora/module/stream.hpp"
#include "remora/module/value_mesh.hpp"
#include "remora/rref/remote.hpp"

namespace remora {

namespace detail {
// What spawn() runs on each member's worker: T made from the arguments spawn was given.
// True when M is a member function of T or of a base of T.
template <class T, auto M>
constexpr bool method_of() {
  using Tr = method_traits<decltype(M)>;
  if constexpr (Tr::is_method) return std::is_base_of_v<typename Tr::object, T>;
  else return false;
}

template <class T, class... Ds>
struct SpawnFactory {
  static std::shared_ptr<T> make(Ds... args) { return std::make_shared<T>(std::move(args)...); }
};
}  // namespace detail

template <class T>
class RemoteGroup {
 public:
  using Member = RRef<T>;

  RemoteGroup() = default;  // no members; assign one made by spawn()
  // A group over objects that already exist, one per point of `mesh` in its order (each owned
  // by its point's worker). Throws remora::Error when the counts differ.
  RemoteGroup(DeviceMesh mesh, std::vector<Member> members)
      : mesh_(std::move(mesh)), members_(std::move(members)), loads_(std::make_shared<detail::MemberLoads>(members_.size())) {
    if (static_cast<std::int64_t>(members_.size()) != mesh_.size())
      throw Error("remora: RemoteGroup: " + std::to_string(members_.size()) + " members for a mesh of " +
                  std::to_string(mesh_.size()) + " points");
  }

  std::size_t size() const { return members_.size(); }
  const DeviceMesh& mesh() const { return checked().mesh_; }
  const Member& member(std::size_t i) const { return members_.at(i); }
  const std::vector<Member>& members() const { return members_; }
  // Calls in flight to member `i` from this group and its copies (what choose() weighs).
  std::int64_t in_flight(std::size_t i) const {
    if (i >= members_.size()) throw Error("remora: RemoteGroup::in_flight: no member " + std::to_string(i));
    return loads_->in_flight(i);
  }

  // Method M on every member; one future per member, in mesh order. A member already known
  // lost gets a future that holds its WorkerLost. Throws remora::Error for a placement that does
  // not fit, before anything is sent.
  template <auto M, class... As>
  auto call_each(const As&... args) const {
    static_assert(detail::method_of<T, M>(), "remora: RemoteGroup<T>: this method is not a method of T (nor of a class T derives from)");
    detail::check_method<T, M, detail::placed_t<As>...>();
    checked();
    (detail::check_placement(args, "RemoteGroup::call", members_.size()), ...);
    using R = typename decltype(one<M>(members_.at(0), 0, args...))::value_type;
    std::vector<Future<R>> out;
    out.reserve(members_.size());
    for (std::size_t i = 0; i < members_.size(); ++i) {
      out.push_back(one<M>(members_[i], i, args...));
      detail::MemberLoads::track(loads_, i, out.back());
    }
    return out;
  }
  // All members' results in a ValueMesh (nothing for a void method) once every member answered;
  // a failed member (WorkerLost names a lost one) fails it with its error, and call_each keeps
  // the others' results.
  template <auto M, class... As>
  auto call_async(const As&... args) const {
    return detail::gather_mesh(mesh_, call_each<M>(args...));
  }
  // (Waits on the calls themselves, not on call_async's continuation: no pool thread is needed
  // to finish it, so a pool thread may call this.)
  template <auto M, class... As>
  auto call(const As&... args) const {
    auto all = when_all(call_each<M>(args...));
    detail::AgentAccess::await_sync(agent(), all, members_.size());
    if constexpr (std::is_void_v<typename decltype(all)::value_type>) {
      std::move(all).get();
    } else {
      return ValueMesh(mesh_, std::move(all).get());
    }
  }
  // Method M on every member; the caller waits for nothing and hears no result. A member that
  // fails is logged here (a warning naming its point, the method and why).
  template <auto M, class... As>
  void broadcast(const As&... args) const {
    auto futures = call_each<M>(args...);
    detail::log_broadcast_failures(futures, mesh_, std::string(function_identity<M>.name));
  }
  // Method M on one member: the one with the fewest calls in flight from this group (round
  // robin among equals), skipping members whose worker is known lost. A future that holds
  // WorkerLost when every member is lost. Arguments go whole to the one member.
  template <auto M, class... As>
  auto choose(const As&... args) const {
    static_assert(!(std::is_same_v<As, Shard> || ...),
                  "remora: choose() sends its arguments whole to one member: a Shard has no piece to give it");
    static_assert(detail::method_of<T, M>(), "remora: RemoteGroup<T>: this method is not a method of T (nor of a class T derives from)");
    detail::check_method<T, M, detail::placed_t<As>...>();
    checked();
    return detail::choose_member(
        loads_, [&](std::size_t j) { return !lost(j); },
        [&](std::size_t i) { return one<M>(members_[i], i, args...); }, members_[0].owner_name(), function_identity<M>.name);
  }
  // Method M on every member; the results in the order they finish (stream.hpp).
  template <auto M, class... As>
  auto stream(const As&... args) const {
    return Stream(call_each<M>(args...));
  }

  // The members along `dim` through the `index`-th point of the other dimensions, as
  // DeviceMesh::slice picks them; they are the same objects (no copy on any worker).
  RemoteGroup slice(std::string_view dim, std::int64_t index) const {
    DeviceMesh sub = checked().mesh_.slice(dim, index);
    auto picked = detail::members_at(mesh_, sub, members_);
    return RemoteGroup(std::move(sub), std::move(picked));
  }

 private:
  const RemoteGroup& checked() const {
    if (members_.empty()) throw Error("remora: RemoteGroup: this group is empty (default-constructed)");
    return *this;
  }
  Agent& agent() const { return detail::RRefAccess::context(checked().members_[0])->agent(); }
  bool lost(std::size_t i) const {
    return detail::AgentAccess::is_lost(agent(), detail::RRefAccess::core(members_[i]).owner);
  }
  // Member i's call. What fails before it is sent (an argument that does not encode, say) is its
  // future's, so the other members are still called.
  template <auto M, class... As>
  auto one(const Member& m, std::size_t i, const As&... args) const {
    using F = decltype(m.rpc_async().template call<M>(detail::piece_for(args, i, members_.size())...));
    try {
      return F(m.rpc_async().template call<M>(detail::piece_for(args, i, members_.size())...));
    } catch (...) {
      return make_exceptional_future<typename F::value_type>(std::current_exception());
    }
  }

  DeviceMesh mesh_{std::vector<std::string>{"(none)/cpu"}};  // (replaced by every real group's)
  std::vector<Member> members_;
  std::shared_ptr<detail::MemberLoads> loads_;
};

// One T(args...) on every point of `mesh`, owned by the point's worker, in the mesh's order;
// waits until all exist. Throws as remote() does (RemoteError when a constructor throws there,
// naming its worker) once every member answered. T needs a constructor from the arguments, and
// each argument must be Serializable.
template <class T, class... As>
RemoteGroup<T> spawn(Agent& agent, const DeviceMesh& mesh, const As&... args) {
  static_assert(std::is_constructible_v<T, std::decay_t<As>&&...>,
                "remora: spawn<T>: T has no constructor that takes these arguments");
  static_assert((Serializable<As> && ...), "remora: spawn<T>: a constructor argument is not Serializable");
  using Factory = detail::SpawnFactory<T, std::decay_t<As>...>;
  using Ready = detail::ReadyShim<T>;
  (void)detail::AutoRegisterAs<&Ready::call, Ready::identity>::registered;
  std::vector<RRef<T>> members;
  std::vector<Future<void>> made;
  for (const auto& point : mesh.devices()) {
    const auto owner = RemoteDevice::parse(point).worker_id(agent);
    members.push_back(remote<&Factory::make>(agent, agent.get_worker_info(owner).name, args...));
    made.push_back(detail::call_as<&Ready::call>(agent, owner, Ready::identity, CallOptions{},
                                                 detail::RRefAccess::core(members.back()).id));
  }
  auto all = when_all(std::move(made));
  detail::AgentAccess::await_sync(agent, all);
  std::move(all).get();
  return RemoteGroup<T>(mesh, std::move(members));
}
template <class T, class... As>
RemoteGroup<T> spawn(const DeviceMesh& mesh, const As&... args) {
  return spawn<T>(current_agent(), mesh, args...);
}

}  // namespace remora
