#pragma once
// "worker/device" strings, as PyTorch's RemoteModule takes them: "ps", "ps/cpu", "ps/cuda:1",
// "rank:1/cuda:0".
#include <string>
#include <string_view>

#include <c10/core/Device.h>

#include "remora/agent/agent.hpp"

namespace remora {

struct RemoteDevice {
  std::string worker;
  c10::Device device = c10::Device(c10::kCPU);

  // Parses the string; throws remora::Error naming what is wrong.
  static RemoteDevice parse(std::string_view text) {
    RemoteDevice out;
    auto slash = text.find('/');
    out.worker = std::string(text.substr(0, slash));
    if (out.worker.empty()) throw Error("remora: '" + std::string(text) + "' names no worker (expected \"worker/device\")");
    if (slash != std::string_view::npos) {
      auto dev = std::string(text.substr(slash + 1));
      try {
        out.device = c10::Device(dev);
      } catch (const std::exception&) {
        throw Error("remora: '" + dev + "' in '" + std::string(text) + "' is not a device (e.g. cpu, cuda:0)");
      }
    }
    return out;
  }

  // The worker's id in `agent`'s group ("rank:N" names it by rank).
  std::uint32_t worker_id(const Agent& agent) const {
    if (worker.rfind("rank:", 0) == 0) {
      std::size_t used = 0;
      int r = -1;
      try {
        r = std::stoi(worker.substr(5), &used);
      } catch (const std::exception&) {
      }
      if (r < 0 || used != worker.size() - 5 || static_cast<std::size_t>(r) >= agent.get_worker_infos().size())
        throw Error("remora: '" + worker + "' is not a rank of this group of " +
                    std::to_string(agent.get_worker_infos().size()));
      return static_cast<std::uint32_t>(r);
    }
    return detail::AgentAccess::id_of(agent, worker);
  }
};

}  // namespace remora
