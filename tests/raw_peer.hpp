#pragma once
// Frames as a raw socket sends them to a worker, for tests that speak the protocol by hand
// (strangers, impostors, attackers).
#include <cstdint>
#include <string>
#include <vector>

#include "remora/agent/detail/protocol.hpp"
#include "wire_support.hpp"

namespace remora::test {

// A worker's first frame on a connection it opened: `hello` as rank `rank`, named `name`.
inline std::vector<std::byte> hello_bytes(std::uint32_t rank, const std::string& name) {
  return flatten(wire::encode_frame(wire::FrameKind::control, 0, static_cast<std::uint8_t>(detail::ControlType::hello),
                                    rank, name));
}

}  // namespace remora::test
