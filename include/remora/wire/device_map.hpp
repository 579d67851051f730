#pragma once
// Where CUDA tensors arrive on a peer: a device map, as PyTorch's TensorPipe options set them
// (`set_device_map("ps", {{"cuda:0", "cuda:1"}})`: a tensor on this worker's cuda:0 arrives on
// ps's cuda:1). Calls use the caller's map; replies use its inverse. A CUDA tensor whose device
// the map does not name cannot be sent. CPU tensors always arrive on the CPU.
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <c10/core/Device.h>

namespace remora::wire {

struct DeviceMap {
  std::vector<std::pair<c10::Device, c10::Device>> entries;  // from (sender) -> to (receiver)
  bool identity = false;                                     // calls to self: every device to itself

  std::optional<c10::Device> find(c10::Device from) const {
    if (identity) return from;
    for (const auto& [f, t] : entries)
      if (f == from) return t;
    return std::nullopt;
  }
  DeviceMap inverse() const {
    DeviceMap out;
    out.identity = identity;
    for (const auto& [f, t] : entries) out.entries.emplace_back(t, f);
    return out;
  }
  bool empty() const { return !identity && entries.empty(); }
};

// Where a frame's CUDA tensors go: the map to its receiver and the receiver's name (for errors).
struct EncodeDevices {
  const DeviceMap* map = nullptr;
  std::string_view peer;
};

}  // namespace remora::wire
