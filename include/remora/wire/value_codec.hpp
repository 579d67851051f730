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

namespace detail {
// What encoding a frame does before and after its values are written, whatever their types:
// compiled once (wire/impl/codec.ipp), not per message type.
class FrameEncoding {
 public:
  // Takes this thread's spare descriptor buffer (a value that encodes a frame of its own while
  // it is saved finds none and makes its own).
  REMORA_DECL FrameEncoding();
  REMORA_DECL ~FrameEncoding();  // gives the buffer back
  FrameEncoding(const FrameEncoding&) = delete;
  FrameEncoding& operator=(const FrameEncoding&) = delete;
  // Checks the limits and completes the header. Throws SerializationError.
  REMORA_DECL OutFrame finish(FrameKind kind, std::uint64_t request_id, const Limits& limits);

  OutFrame frame;
  std::vector<std::byte> descriptors;
};
// Rethrows the exception in flight as a ProtocolError (malformed input); an Error as it is.
[[noreturn]] REMORA_DECL void rethrow_as_malformed();
}  // namespace detail

// Encodes `values` as one frame for the receiver `to` describes (where its CUDA tensors arrive).
// Throws SerializationError if a value cannot travel or the frame would exceed `limits` (the
// receiver would refuse it).
template <class... Ts>
OutFrame encode_frame_to(const EncodeDevices& to, FrameKind kind, std::uint64_t request_id, const Limits& limits,
                         const Ts&... values) {
  detail::FrameEncoding e;
  {
    BodyWriter ar(e.frame.head, e.descriptors, e.frame.tensors, to);
    if constexpr (sizeof...(Ts) > 0) ar(values...);
  }
  return e.finish(kind, request_id, limits);
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
  } catch (...) {
    detail::rethrow_as_malformed();  // cereal::Exception (bad variant index), c10::Error, ...
  }
}

template <class... Ts>
std::tuple<Ts...> decode(const InFrame& frame, const Limits& limits = {}) {
  std::tuple<Ts...> out;
  std::apply([&](auto&... v) { decode_into(frame, limits, v...); }, out);
  return out;
}

}  // namespace remora::wire

#if REMORA_HEADER_ONLY
#include "remora/wire/impl/codec.ipp"
#endif
