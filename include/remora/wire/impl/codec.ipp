#pragma once
// The frame codec's parts that do not depend on the values' types: compiled in every translation
// unit (header-only) or once, in <remora/impl/src.hpp> (REMORA_SEPARATE_COMPILATION).
#include <cstring>
#include <string>

#include "remora/wire/value_codec.hpp"

namespace remora::wire {

REMORA_DECL BodyWriter::BodyWriter(FrameHead& out, std::vector<std::byte>& descriptors, FrameTensors& tensors,
                                   const EncodeDevices& devices)
    : OutputArchive(this), out_(out), descriptors_(descriptors), tensors_(tensors), devices_(devices) {}

REMORA_DECL BodyWriter::~BodyWriter() = default;

REMORA_DECL std::uint32_t BodyWriter::add_tensor(const torch::Tensor& t) {
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
    const auto& target = devices_;
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

REMORA_DECL BodyReader::BodyReader(std::span<const std::byte> body, std::span<const ReceivedTensor> tensors,
                                   const Limits& limits)
    : InputArchive(this), body_(body), tensors_(tensors), limits_(limits) {}

REMORA_DECL BodyReader::~BodyReader() = default;

REMORA_DECL void BodyReader::fail(const std::string& why) { throw ProtocolError(why); }

namespace detail {

// The descriptor buffer each thread reuses from one frame to the next.
REMORA_DECL std::vector<std::byte>& spare_descriptors() {
  thread_local std::vector<std::byte> spare;
  return spare;
}

REMORA_DECL FrameEncoding::FrameEncoding() : descriptors(std::move(spare_descriptors())) {
  descriptors.clear();
  frame.head.resize(sizeof(FrameHeader));
}

REMORA_DECL FrameEncoding::~FrameEncoding() {
  auto& spare = spare_descriptors();
  if (descriptors.capacity() > spare.capacity()) spare = std::move(descriptors);
}

REMORA_DECL OutFrame FrameEncoding::finish(FrameKind kind, std::uint64_t request_id, const Limits& limits) {
  auto& f = frame;
  const std::size_t body = f.head.size() - sizeof(FrameHeader);
  if (body > UINT32_MAX || descriptors.size() > UINT32_MAX)
    throw SerializationError("message body of " + std::to_string(body) + " bytes is too large");
  if (f.tensors.size() > limits.max_tensors)
    throw SerializationError("message holds " + std::to_string(f.tensors.size()) + " tensors, limit is " +
                             std::to_string(limits.max_tensors));
  f.head.insert(f.head.end(), descriptors.begin(), descriptors.end());
  FrameHeader h;
  h.kind = static_cast<std::uint8_t>(kind);
  h.request_id = request_id;
  h.body_bytes = static_cast<std::uint32_t>(body);
  h.descriptor_bytes = static_cast<std::uint32_t>(descriptors.size());
  h.tensor_count = static_cast<std::uint32_t>(f.tensors.size());
  std::memcpy(f.head.data(), &h, sizeof h);
  if (f.total_bytes() > limits.max_frame_bytes)
    throw SerializationError("message of " + std::to_string(f.total_bytes()) + " bytes exceeds the frame limit of " +
                             std::to_string(limits.max_frame_bytes));
  return std::move(f);
}

REMORA_DECL void rethrow_as_malformed() {
  try {
    throw;
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw ProtocolError(std::string("malformed body: ") + e.what());
  }
}

}  // namespace detail
}  // namespace remora::wire
