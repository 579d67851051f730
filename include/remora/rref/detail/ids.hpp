#pragma once
// Ids of remote references, as in PyTorch's RRef protocol: an RRefId names a value on its owner,
// a ForkId names one user's reference to it. Both are (worker that made the id, counter).
#include <cstdint>
#include <functional>
#include <string>

#include "remora/config.hpp"

namespace remora::detail {

struct GloballyUniqueId {
  std::uint32_t worker = UINT32_MAX;
  std::uint64_t local = 0;

  template <class Archive>
  void serialize(Archive& ar) {
    ar(worker, local);
  }
  friend bool operator==(const GloballyUniqueId&, const GloballyUniqueId&) = default;
  REMORA_DECL std::string str() const;
};

using RRefId = GloballyUniqueId;
using ForkId = GloballyUniqueId;

struct IdHash {
  std::size_t operator()(const GloballyUniqueId& g) const noexcept {
    return std::hash<std::uint64_t>{}(g.local * 0x9E3779B97F4A7C15ull ^ g.worker);
  }
};

// What travels for one RRef inside a message.
struct WireRRef {
  std::uint32_t owner = 0;
  RRefId id;
  ForkId fork;
  std::uint32_t parent = 0;  // the worker that forked it for the receiver
  std::uint64_t type = 0;    // type_identity_of<T>.id, checked on arrival

  template <class Archive>
  void serialize(Archive& ar) {
    ar(owner, id, fork, parent, type);
  }
};

}  // namespace remora::detail
