#pragma once
// torch::Tensor in a frame: the body holds an index, the descriptor table its dtype and shape,
// and its bytes follow as their own segment, sent from the tensor's memory.
//
// What is sent is the tensor's value: a non-contiguous tensor or a view goes as a contiguous
// copy of just the elements it shows (a contiguous view is sent in place, without copying its
// base); lazy conjugate/negative bits are resolved; requires_grad is kept. Sparse, quantized and
// other non-strided tensors are refused with a SerializationError naming the fix.
#include <cstdint>
#include <limits>
#include <string>

#include <torch/types.h>

#include "remora/wire/archive.hpp"

namespace remora::wire {


// Constrained to Tensor exactly, so no implicit conversion makes another type look like one.
template <class T>
  requires std::is_same_v<T, torch::Tensor>
void CEREAL_SAVE_FUNCTION_NAME(BodyWriter& ar, const T& t) {
  std::uint32_t index = t.defined() ? ar.add_tensor(t) : kUndefinedTensor;
  ar(index);
}

template <class T>
  requires std::is_same_v<T, torch::Tensor>
void CEREAL_LOAD_FUNCTION_NAME(BodyReader& ar, T& t) {
  std::uint32_t index;
  ar(index);
  t = index == kUndefinedTensor ? torch::Tensor() : ar.tensor(index).tensor;
}

}  // namespace remora::wire
