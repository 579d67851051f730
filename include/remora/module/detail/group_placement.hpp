#pragma once
// How a group call places its arguments (placement.hpp) on each member, and how it gathers the
// members' results: shared by RemoteModuleGroup and RemoteGroup.
#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>
#include <type_traits>
#include <vector>

#include <torch/types.h>

#include "remora/core/errors.hpp"
#include "remora/core/future.hpp"
#include "remora/module/placement.hpp"

namespace remora::detail {

inline std::int64_t shard_dim(const Shard& s, const char* what, std::size_t members) {
  if (!s.tensor.defined())
    throw Error(std::string("remora: ") + what +
                ": Shard(dim) without a tensor is a result placement; an argument is Shard(dim, tensor)");
  const auto ndim = s.tensor.dim();
  const auto d = s.dim < 0 ? s.dim + ndim : s.dim;
  if (d < 0 || d >= ndim)
    throw Error(std::string("remora: ") + what + ": Shard(" + std::to_string(s.dim) +
                ") of a tensor with " + std::to_string(ndim) + " dimensions");
  if (s.tensor.size(d) < static_cast<std::int64_t>(members))
    throw Error(std::string("remora: ") + what + ": Shard(" + std::to_string(s.dim) +
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
    const auto d = shard_dim(a, "a group call", n);
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

// The type member i gets for an argument of type A (a Shard's piece is a tensor).
template <class A>
using placed_t = decltype(piece_for(std::declval<const A&>(), 0, 1));

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

}  // namespace remora::detail
