#pragma once
// What the harnesses share: the limits they read under (small enough that no input makes them
// allocate much) and the decoders a worker runs on a received frame.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <ATen/core/ivalue.h>
#include <torch/types.h>

#include "remora/core/errors.hpp"
#include "remora/wire/frame_reader.hpp"
#include "remora/autograd/detail/grad_record.hpp"
#include "remora/wire/ivalue_codec.hpp"
#include "remora/wire/value_codec.hpp"

namespace remora::fuzz {

inline wire::Limits fuzz_limits() {
  wire::Limits l;
  l.max_frame_bytes = 1 << 20;
  l.max_tensors = 64;
  l.read_ahead_bytes = 64 << 10;
  return l;
}

// Decodes `frame` as each kind of message a worker reads; refusals (remora::Error) are expected,
// anything else escapes to the fuzzer as a finding.
template <class... Ts>
void try_decode(const wire::InFrame& frame, const wire::Limits& limits) {
  try {
    std::tuple<Ts...> values;
    std::apply([&](auto&... v) { wire::decode_into(frame, limits, v...); }, values);
  } catch (const remora::Error&) {
  }
}

inline void decode_every_way(wire::InFrame& frame, const wire::Limits& limits) {
  try {
    (void)remora::autograd::detail::take_grad_record(frame);
  } catch (const remora::Error&) {
    return;
  }
  try_decode<std::uint8_t, std::uint32_t, std::string>(frame, limits);               // control: hello
  try_decode<std::uint64_t, std::int32_t, std::int32_t>(frame, limits);              // call: id, ints
  try_decode<std::uint64_t, torch::Tensor, double>(frame, limits);                   // call: tensor
  try_decode<std::uint64_t, std::vector<torch::Tensor>>(frame, limits);              // containers
  try_decode<std::uint64_t, std::map<std::string, torch::Tensor>>(frame, limits);
  try_decode<std::uint64_t, c10::IValue>(frame, limits);                             // by name
  try_decode<std::uint64_t, std::string, std::vector<c10::IValue>>(frame, limits);
  try_decode<std::uint8_t, std::string, std::string, std::string, std::string>(frame, limits);  // error
}

}  // namespace remora::fuzz
