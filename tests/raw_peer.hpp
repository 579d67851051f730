#pragma once
// Frames as a raw socket sends them to a worker, for tests that speak the protocol by hand
// (strangers, impostors, attackers).
#include <cstdint>
#include <string>
#include <vector>

#include "remora/agent/detail/hello.hpp"
#include "wire_support.hpp"

namespace remora::test {

// A worker's first frame on a connection it opened: `hello` as rank `rank`, named `name`, to the
// worker with id `target`.
inline std::vector<std::byte> hello_bytes(std::uint32_t rank, const std::string& name, std::uint32_t target) {
  detail::Hello h;
  h.rank = rank;
  h.name = name;
  h.target = target;
  return flatten(detail::encode_hello(h));
}

}  // namespace remora::test
