#pragma once
// Bounds a received frame must satisfy before anything is allocated for it.
#include <cstddef>
#include <cstdint>

namespace remora::wire {

struct Limits {
  std::uint64_t max_frame_bytes = std::uint64_t{4} << 30;  // whole frame: header, body, tensors
  std::uint32_t max_tensors = 1u << 16;                    // tensors in one frame
  std::uint32_t max_dims = 64;                             // dimensions of one tensor
  std::uint32_t max_depth = 256;                           // nesting of dynamic values (IValue)
  // Bytes the reader allocates ahead of the data actually received for body and descriptors:
  // a peer that announces a large body and then stalls holds at most this much.
  std::size_t read_ahead_bytes = std::size_t{1} << 20;

  // What a frame may be before its connection's peer is known (before its `hello`): room for a
  // hello and nothing more, so a stranger makes a worker hold a few hundred bytes at most.
  static constexpr Limits before_identity() {
    Limits l;
    l.max_frame_bytes = 1024;
    l.max_tensors = 0;
    l.max_depth = 4;
    l.read_ahead_bytes = 1024;
    return l;
  }
};

}  // namespace remora::wire
