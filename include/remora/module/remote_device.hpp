#pragma once
// "worker/device" strings, as PyTorch's RemoteModule takes them: "ps", "ps/cpu", "ps/cuda:1",
// "rank:1/cuda:0".
#include <string>
#include <string_view>

#include <c10/core/Device.h>

#include "remora/agent/agent.hpp"
#include "remora/config.hpp"

namespace remora {

struct RemoteDevice {
  std::string worker;
  c10::Device device = c10::Device(c10::kCPU);

  // Parses the string; throws remora::Error naming what is wrong.
  REMORA_DECL static RemoteDevice parse(std::string_view text);
  // The worker's id in `agent`'s group ("rank:N" names it by rank).
  REMORA_DECL std::uint32_t worker_id(const Agent& agent) const;
};

}  // namespace remora

#if REMORA_HEADER_ONLY
#include "remora/module/impl/module.ipp"
#endif
