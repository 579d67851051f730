#pragma once
// RemoteModule's parts that are not templates: compiled in every translation unit (header-only)
// or once, in <remora/impl/src.hpp> (REMORA_SEPARATE_COMPILATION).
#include <torch/cuda.h>

#include "remora/module/detail/module_of.hpp"
#include "remora/module/remote_device.hpp"

namespace remora {

REMORA_DECL RemoteDevice RemoteDevice::parse(std::string_view text) {
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

REMORA_DECL std::uint32_t RemoteDevice::worker_id(const Agent& agent) const {
  if (worker.rfind("rank:", 0) == 0) {
    std::size_t used = 0;
    int r = -1;
    try {
      r = std::stoi(worker.substr(5), &used);
    } catch (const std::exception&) {
    }
    if (r < 0 || used != worker.size() - 5 || !detail::AgentAccess::knows(agent, static_cast<std::uint32_t>(r)))
      throw Error("remora: '" + worker + "' is not a rank of this group");
    return static_cast<std::uint32_t>(r);
  }
  return detail::AgentAccess::id_of(agent, worker);
}

namespace detail {

REMORA_DECL void check_device_exists(const c10::Device& device, const std::string& worker) {
  if (device.is_cpu()) return;
  if (device.is_cuda()) {
    const auto count = torch::cuda::is_available() ? torch::cuda::device_count() : 0;
    const auto index = device.has_index() ? device.index() : 0;
    if (static_cast<std::size_t>(index) >= count)
      throw Error("remora: device " + device.str() + " does not exist on worker '" + worker + "' (it has " +
                  std::to_string(count) + " CUDA device" + (count == 1 ? "" : "s") + ")");
    return;
  }
  throw Error("remora: RemoteModule supports cpu and cuda devices, not " + device.str());
}

}  // namespace detail
}  // namespace remora
