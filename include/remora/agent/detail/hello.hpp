#pragma once
// The first frame on a connection a worker opens (ControlType::hello): who is calling, whom it
// means, and, for an elastic group, what the receiver needs to call back.
#include <cstdint>
#include <string>

#include "remora/agent/detail/protocol.hpp"
#include "remora/wire/value_codec.hpp"

namespace remora::detail {

struct Hello {
  std::uint32_t rank = 0;  // the caller's id
  std::string name;
  // The id the caller means to reach: any other worker refuses the connection, so nothing meant
  // for one incarnation reaches the next one listening on the same address.
  std::uint32_t target = 0;
  std::uint64_t incarnation = 1;
  std::string host;  // the caller's address, as it published it
  std::uint16_t port = 0;
  std::string host_identity, local_socket;
  bool cuda_mps = false;
  std::string devices;  // elastic: the caller's device count and its device map to the target
};

inline wire::OutFrame encode_hello(const Hello& h) {
  return wire::encode_frame(wire::FrameKind::control, 0, static_cast<std::uint8_t>(ControlType::hello), h.rank, h.name,
                            h.target, h.incarnation, h.host, h.port, h.host_identity, h.local_socket, h.cuda_mps,
                            h.devices);
}

// Throws ProtocolError when `frame` is not a hello this build can read.
inline Hello decode_hello(const wire::InFrame& frame, const wire::Limits& limits) {
  std::uint8_t type = 0;
  Hello h;
  wire::decode_into(frame, limits, type, h.rank, h.name, h.target, h.incarnation, h.host, h.port, h.host_identity,
                    h.local_socket, h.cuda_mps, h.devices);
  if (type != static_cast<std::uint8_t>(ControlType::hello)) throw ProtocolError("unexpected control message");
  return h;
}

}  // namespace remora::detail
