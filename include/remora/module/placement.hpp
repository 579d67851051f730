#pragma once
// Placements, as PyTorch's DTensor names them, for the calls of a RemoteModuleGroup: how each
// argument reaches the members, and how their results come back.
//
//   arguments   Shard(dim, t)   t split evenly along dim, member i gets piece i (the last member
//                               also takes the remainder)
//               Replicate(v)    v to every member (what a plain argument means too)
//   results     Shard(dim)      the members' tensors concatenated along dim, in member order
//               Partial()       the members' results summed
//               Replicate()     the members' results, checked to agree; the first one
#include <cstdint>
#include <utility>

#include <torch/types.h>

namespace remora {

struct Shard {
  std::int64_t dim = 0;
  torch::Tensor tensor;  // undefined: a result placement
  Shard(std::int64_t dim, torch::Tensor tensor) : dim(dim), tensor(std::move(tensor)) {}
  explicit Shard(std::int64_t dim) : dim(dim) {}
};

template <class T = void>
struct Replicate {
  T value;
  explicit Replicate(T v) : value(std::move(v)) {}
};
template <>
struct Replicate<void> {};
template <class T>
Replicate(T) -> Replicate<T>;
Replicate() -> Replicate<void>;

struct Partial {};

namespace detail {
template <class T>
inline constexpr bool is_replicate_v = false;
template <class T>
inline constexpr bool is_replicate_v<Replicate<T>> = true;
}  // namespace detail

}  // namespace remora
