#pragma once
// Messages: values of any Serializable types in one frame. Tensors nested anywhere inside them
// (in vectors, tuples, optionals, maps, variants, user structs, IValues) travel as raw segments.
#include <cstdint>
#include <exception>
#include <string>
#include <tuple>

#include <cereal/types/array.hpp>
#include <cereal/types/common.hpp>
#include <cereal/types/complex.hpp>
#include <cereal/types/deque.hpp>
#include <cereal/types/list.hpp>
#include <cereal/types/map.hpp>
#include <cereal/types/optional.hpp>
#include <cereal/types/set.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/tuple.hpp>
#include <cereal/types/unordered_map.hpp>
#include <cereal/types/unordered_set.hpp>
#include <cereal/types/utility.hpp>
#include <cereal/types/variant.hpp>
#include <cereal/types/vector.hpp>

#include "remora/wire/frame.hpp"
#include "remora/wire/ivalue_codec.hpp"
#include "remora/wire/tensor_codec.hpp"

namespace remora::wire {

// Encodes `values` as one frame for the receiver `to` describes (where its CUDA tensors arrive).
// Throws SerializationError if a value cannot travel or the frame would exceed `limits` (the
// receiver would refuse it).
template <class... Ts>
OutFrame encode_frame_to(const EncodeDevices& to, FrameKind kind, std::uint64_t request_id, const Limits& limits,
                         const Ts&... values) {
  OutFrame f;
  f.head.resize(sizeof(FrameHeader));
  // The descriptors' buffer is reused by this thread's next frame (taken, so that a value that
  // encodes a frame of its own while it is saved gets a buffer of its own).
  thread_local std::vector<std::byte> spare;
  std::vector<std::byte> descriptors = std::move(spare);
  descriptors.clear();
  {
    BodyWriter ar(f.head, descriptors, f.tensors, to);
    if constexpr (sizeof...(Ts) > 0) ar(values...);
  }
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
  spare = std::move(descriptors);
  if (f.total_bytes() > limits.max_frame_bytes)
    throw SerializationError("message of " + std::to_string(f.total_bytes()) + " bytes exceeds the frame limit of " +
                             std::to_string(limits.max_frame_bytes));
  return f;
}

// As encode_frame_to, for a frame without CUDA tensors (they cannot be sent without a map).
template <class... Ts>
OutFrame encode_frame(FrameKind kind, std::uint64_t request_id, const Limits& limits, const Ts&... values) {
  return encode_frame_to(EncodeDevices{}, kind, request_id, limits, values...);
}
template <class... Ts>
OutFrame encode_frame(FrameKind kind, std::uint64_t request_id, const Ts&... values) {
  return encode_frame_to(EncodeDevices{}, kind, request_id, Limits{}, values...);
}

// Decodes the body of `frame` into `out...`; the body must hold exactly these values. Malformed
// input of any sort is reported as ProtocolError.
template <class... Ts>
void decode_into(const InFrame& frame, const Limits& limits, Ts&... out) {
  try {
    BodyReader ar(frame.body(), frame.tensors, limits);
    if constexpr (sizeof...(Ts) > 0) ar(out...);
    if (!ar.at_end()) throw ProtocolError(std::to_string(ar.remaining()) + " unread bytes at the end of the body");
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {  // cereal::Exception (bad variant index), c10::Error, ...
    throw ProtocolError(std::string("malformed body: ") + e.what());
  }
}

template <class... Ts>
std::tuple<Ts...> decode(const InFrame& frame, const Limits& limits = {}) {
  std::tuple<Ts...> out;
  std::apply([&](auto&... v) { decode_into(frame, limits, v...); }, out);
  return out;
}

}  // namespace remora::wire
