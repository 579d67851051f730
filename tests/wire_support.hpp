#pragma once
// Helpers for wire tests: encode values, flatten the gather list as a transport would, decode.
#include <cstring>
#include <vector>

#include "remora/wire/frame_reader.hpp"
#include "remora/wire/value_codec.hpp"

namespace remora::test {

inline std::vector<std::byte> flatten(const wire::OutFrame& f) {
  std::vector<std::byte> bytes;
  for (auto s : f.segments()) bytes.insert(bytes.end(), s.begin(), s.end());
  return bytes;
}

template <class... Ts>
std::vector<std::byte> encode_bytes(const Ts&... values) {
  return flatten(wire::encode_frame(wire::FrameKind::call, 7, values...));
}

template <class... Ts>
std::tuple<Ts...> roundtrip(const Ts&... values) {
  return wire::decode<Ts...>(wire::read_frame(encode_bytes(values...)));
}

inline bool bit_equal(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  auto ca = a.contiguous(), cb = b.contiguous();
  return ca.nbytes() == cb.nbytes() && std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.nbytes()) == 0;
}

}  // namespace remora::test
