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
#include <cstddef>
#include <exception>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "remora/core/errors.hpp"
#include "remora/module/device_mesh.hpp"
#include "remora/module/placement.hpp"
#include "remora/module/remote_module.hpp"

namespace remora {
namespace detail {

inline std::int64_t shard_dim(const Shard& s, const char* what, std::size_t members) {
  if (!s.tensor.defined())
    throw Error(std::string("remora: RemoteModuleGroup::") + what +
                ": Shard(dim) without a tensor is a result placement; an argument is Shard(dim, tensor)");
  const auto ndim = s.tensor.dim();
  const auto d = s.dim < 0 ? s.dim + ndim : s.dim;
  if (d < 0 || d >= ndim)
    throw Error(std::string("remora: RemoteModuleGroup::") + what + ": Shard(" + std::to_string(s.dim) +
                ") of a tensor with " + std::to_string(ndim) + " dimensions");
  if (s.tensor.size(d) < static_cast<std::int64_t>(members))
    throw Error(std::string("remora: RemoteModuleGroup::") + what + ": Shard(" + std::to_string(s.dim) +
                ") of a tensor of size " + std::to_string(s.tensor.size(d)) + " along it cannot give each of " +
                std::to_string(members) + " members a piece");
  return d;
}

template <class A>
void check_placement(const A& a, const char* what, std::size_t members) {
  if constexpr (std::is_same_v<A, Shard>) shard_dim(a, what, members);
}

// What member `i` of `n` gets for the argument `a`.
template <class A>
auto piece_for(const A& a, std::size_t i, std::size_t n) {
  if constexpr (std::is_same_v<A, Shard>) {
    const auto d = shard_dim(a, "forward", n);
    const auto len = a.tensor.size(d) / static_cast<std::int64_t>(n);
    const auto start = static_cast<std::int64_t>(i) * len;
    const auto count = i + 1 == n ? a.tensor.size(d) - start : len;
    return a.tensor.narrow(d, start, count).contiguous();
  } else if constexpr (is_replicate_v<A>) {
    return a.value;
  } else {
    return a;
  }
}

// Waits for every future, then returns their values (nothing for void) or rethrows the first failure.
template <class R>
auto gather_all(std::vector<Future<R>>& futures) {
  std::exception_ptr first;
  auto take = [&](auto&& on_value) {
    for (auto& f : futures) {
      try {
        on_value(f);
      } catch (...) {
        if (!first) first = std::current_exception();
      }
    }
    if (first) std::rethrow_exception(first);
  };
  if constexpr (std::is_void_v<R>) {
    take([](Future<R>& f) { std::move(f).get(); });
  } else {
    std::vector<R> out;
    out.reserve(futures.size());
    take([&](Future<R>& f) { out.push_back(std::move(f).get()); });
    return out;
  }
}

template <class R>
bool agree(const R& a, const R& b) {
  if constexpr (std::is_same_v<R, torch::Tensor>) return a.sizes() == b.sizes() && torch::equal(a, b);
  else return a == b;
}

}  // namespace detail

template <class I>
class RemoteModuleGroup {
 public:
  using Member = RemoteModule<I>;
  using result_type = typename Member::result_type;

  RemoteModuleGroup() = default;  // no members; assign one made by create()

  // Builds M(args...) at every point of `mesh` (each "worker/device"), in the mesh's order, and
  // waits until all exist. Throws as RemoteModule::create does, naming the failing point.
  template <class M, class... As>
  static RemoteModuleGroup create(Agent& agent, const DeviceMesh& mesh, const As&... args) {
    RemoteModuleGroup g(mesh);
    for (const auto& point : mesh.devices()) g.members_.push_back(Member::template create<M>(agent, point, args...));
    return g;
  }
  template <class M, class... As>
  static RemoteModuleGroup create(const DeviceMesh& mesh, const As&... args) {
    return create<M>(current_agent(), mesh, args...);
  }
  // A group over modules that already exist (one per point of `mesh`, in its order).
  static RemoteModuleGroup from_members(DeviceMesh mesh, std::vector<Member> members) {
    if (members.size() != static_cast<std::size_t>(mesh.size()))
      throw Error("remora: RemoteModuleGroup: " + std::to_string(members.size()) + " members for a mesh of " +
                  std::to_string(mesh.size()) + " points");
    RemoteModuleGroup g(std::move(mesh));
    g.members_ = std::move(members);
    return g;
  }

  std::size_t size() const { return members_.size(); }
  const Member& member(std::size_t i) const { return members_.at(i); }
  const std::vector<Member>& members() const { return members_; }
  const DeviceMesh& mesh() const { return *mesh_; }

  // Every member's forward, with each argument placed (a plain one replicated); one future per
  // member, in mesh order. Throws remora::Error for a placement that does not fit, before any call.
  template <class... As>
  std::vector<Future<result_type>> forward_each(const As&... args) const {
    return each("forward", [&](const Member& m, std::size_t i) {
      return m.forward_async(detail::piece_for(args, i, size())...);
    }, args...);
  }

  // forward on every member, results combined as `placement` says (Shard(dim), Partial(),
  // Replicate()). Throws the first member's error once all have answered.
  template <class Placement, class... As>
  result_type forward_as(const Placement& placement, const As&... args) const {
    auto futures = forward_each(args...);
    return combine(detail::gather_all(futures), placement);
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
    return each("call", [&](const Member& m, [[maybe_unused]] std::size_t i) {
      return m.template call_async<M>(detail::piece_for(args, i, size())...);
    }, args...);
  }
  // The members' results in mesh order (nothing for a void method).
  template <auto M, class... As>
  auto call(const As&... args) const {
    auto futures = call_each<M>(args...);
    return detail::gather_all(futures);
  }

 private:
  explicit RemoteModuleGroup(DeviceMesh mesh) : mesh_(std::make_shared<const DeviceMesh>(std::move(mesh))) {}

  // `call(member, i)` for every member, after checking `args`' placements (before anything is
  // sent). A member already known lost refuses at once: its future carries that, not the group call.
  template <class Call, class... As>
  auto each([[maybe_unused]] const char* what, Call&& call, const As&... args) const {
    (detail::check_placement(args, what, size()), ...);
    using F = decltype(call(members_.at(0), 0));
    std::vector<F> out;
    out.reserve(size());
    for (std::size_t i = 0; i < size(); ++i) {
      try {
        out.push_back(call(members_[i], i));
      } catch (const Error&) {
        out.push_back(make_exceptional_future<typename F::value_type>(std::current_exception()));
      }
    }
    return out;
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
                    mesh_->devices()[i] + "') disagrees with member 0 ('" + mesh_->devices()[0] + "')");
    return results.at(0);
  }

  std::shared_ptr<const DeviceMesh> mesh_;
  std::vector<Member> members_;
};

}  // namespace remora
