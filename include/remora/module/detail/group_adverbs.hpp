#pragma once
// What RemoteGroup and RemoteModuleGroup share for their adverbs: gathering members' futures into
// a ValueMesh, choosing the least busy member, and logging what a broadcast's members answer.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "remora/core/errors.hpp"
#include "remora/core/future.hpp"
#include "remora/core/log.hpp"
#include "remora/core/when_all.hpp"
#include "remora/module/value_mesh.hpp"

namespace remora::detail {

// The members' results in mesh order once all have answered, or the first failure (in mesh
// order). Nothing for a void method.
template <class R>
auto gather_mesh(DeviceMesh mesh, std::vector<Future<R>> futures) {
  if constexpr (std::is_void_v<R>) {
    return when_all(std::move(futures));
  } else {
    return when_all(std::move(futures)).then(
        [mesh = std::move(mesh)](std::vector<R> values) { return ValueMesh<R>(mesh, std::move(values)); });
  }
}

// Calls in flight per member, for choose(). Shared by the copies of a group (and by the calls,
// which count themselves out when they complete).
class MemberLoads {
 public:
  explicit MemberLoads(std::size_t n) : counts_(new std::atomic<std::int64_t>[n]), n_(n) {
    for (std::size_t i = 0; i < n; ++i) counts_[i].store(0, std::memory_order_relaxed);
  }
  // Among the members `usable(i)` accepts, the one with the fewest calls in flight, counted as
  // one more at once (so two choices at the same moment spread); ties go round-robin, so idle
  // members take turns. std::nullopt when none is usable. Follow with release_when_done.
  template <class Usable>
  std::optional<std::size_t> claim(const Usable& usable) {
    const std::size_t start = next_.fetch_add(1, std::memory_order_relaxed);
    std::optional<std::size_t> best;
    std::int64_t best_load = 0;
    for (std::size_t k = 0; k < n_; ++k) {
      const std::size_t i = (start + k) % n_;
      if (!usable(i)) continue;
      const auto load = counts_[i].load(std::memory_order_relaxed);
      if (!best || load < best_load) best = i, best_load = load;
    }
    if (best) counts_[*best].fetch_add(1, std::memory_order_relaxed);
    return best;
  }
  // Counts member i's claimed call out once `f` completes.
  template <class T>
  static void release_when_done(const std::shared_ptr<MemberLoads>& loads, std::size_t i, const Future<T>& f) {
    FutureAccess::on_ready_inline(f, [loads, i] { loads->counts_[i].fetch_sub(1, std::memory_order_relaxed); });
  }
  // Counts `f` as a call to member `i` until it completes.
  template <class T>
  static void track(const std::shared_ptr<MemberLoads>& loads, std::size_t i, const Future<T>& f) {
    loads->counts_[i].fetch_add(1, std::memory_order_relaxed);
    release_when_done(loads, i, f);
  }
  std::int64_t in_flight(std::size_t i) const { return counts_[i].load(std::memory_order_relaxed); }

 private:
  std::unique_ptr<std::atomic<std::int64_t>[]> counts_;
  std::size_t n_;
  std::atomic<std::size_t> next_{0};
};

// choose(): `call(i)` on the least busy member `usable` accepts, counted as in flight until it
// completes; a future holding WorkerLost (naming `worker`, one of the group's) when none is.
template <class Usable, class Call>
auto choose_member(const std::shared_ptr<MemberLoads>& loads, const Usable& usable, const Call& call,
                   const std::string& worker, std::string_view method) {
  using F = decltype(call(std::size_t{0}));
  const auto i = loads->claim(usable);
  if (!i)
    return make_exceptional_future<typename F::value_type>(
        std::make_exception_ptr(WorkerLost(worker, std::string(method), "every member of the group is lost")));
  F f = call(*i);
  MemberLoads::release_when_done(loads, *i, f);
  return f;
}

// The members at the points of `sub` (a slice of `whole`), in `sub`'s order.
template <class M>
std::vector<M> members_at(const DeviceMesh& whole, const DeviceMesh& sub, const std::vector<M>& members) {
  std::vector<M> picked;
  for (const auto& point : sub.devices())
    for (std::size_t i = 0; i < members.size(); ++i)
      if (whole.devices()[i] == point) picked.push_back(members[i]);
  return picked;
}

// A broadcast hears no result: each member's failure is logged here once it is known, naming
// the member, its point and the method. The calls themselves hold what they need until then.
template <class T>
void log_broadcast_failures(std::vector<Future<T>>& futures, const DeviceMesh& mesh, const std::string& method) {
  for (std::size_t i = 0; i < futures.size(); ++i)
    futures[i].on_ready([f = futures[i], point = mesh.devices().at(i), method] {
      if (auto e = f.exception()) {
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& x) {
          log_warning(std::string("broadcast of ") + method + " to '" + point + "' failed: " + x.what());
        } catch (...) {
          log_warning(std::string("broadcast of ") + method + " to '" + point + "' failed");
        }
      }
    });
}

}  // namespace remora::detail
