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
#include "remora/wire/device_map.hpp"

namespace remora::wire {

inline constexpr std::uint32_t kUndefinedTensor = std::numeric_limits<std::uint32_t>::max();

inline std::uint32_t BodyWriter::add_tensor(const torch::Tensor& t) {
  if (t.is_sparse() || t.layout() != c10::kStrided)
    throw SerializationError("sparse and other non-strided tensors are not supported; send t.to_dense()");
  if (t.is_quantized()) throw SerializationError("quantized tensors are not supported; send t.dequantize()");
  auto wire_dtype = to_wire(t.scalar_type());
  if (!wire_dtype) throw SerializationError(std::string("dtype ") + c10::toString(t.scalar_type()) + " cannot travel");
  if (t.dim() > 255) throw SerializationError("tensor has more than 255 dimensions");
  if (tensors_.size() >= kUndefinedTensor - 1) throw SerializationError("too many tensors in one message");
  // Where it arrives: the CPU, or for a CUDA tensor the device the peer's map names.
  c10::Device arrives(c10::kCPU);
  if (!t.device().is_cpu()) {
    const auto& target = encode_devices;
    auto mapped = target.map ? target.map->find(t.device()) : std::nullopt;
    if (!mapped)
      throw SerializationError("a tensor on " + t.device().str() + " cannot be sent to worker '" +
                               std::string(target.peer.empty() ? "(unknown)" : target.peer) +
                               "': no device map entry for " + t.device().str() +
                               " (set one with Options::set_device_map, or move the tensor to the CPU)");
    arrives = *mapped;
  }
  // A CUDA tensor stays on its device here: the transport hands it over by IPC handle, or stages
  // it through host memory when it sends the frame (OutFrame::stage_to_host).
  // Checked first: each of these is a dispatched op even when it has nothing to do.
  torch::Tensor v = t.is_conj() || t.is_neg() || !t.is_contiguous() ? t.resolve_conj().resolve_neg().contiguous() : t;

  TensorDescriptor d;
  d.dtype = *wire_dtype;
  d.ndim = static_cast<std::uint8_t>(v.dim());
  d.flags = t.requires_grad() ? kRequiresGrad : 0;
  d.device_type = static_cast<std::int8_t>(arrives.type());
  d.device_index = arrives.index();
  d.nbytes = v.nbytes();
  auto put = [&](const void* p, std::size_t n) {
    auto b = static_cast<const std::byte*>(p);
    descriptors_.insert(descriptors_.end(), b, b + n);
  };
  put(&d, sizeof d);
  put(v.sizes().data(), v.dim() * sizeof(int64_t));
  tensors_.push_back(std::move(v));
  return static_cast<std::uint32_t>(tensors_.size() - 1);
}

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
