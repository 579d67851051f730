#pragma once
// Device maps across the group: each worker publishes its CUDA device count and its maps with
// the rendezvous; each checks every map (the workers exist, the devices exist on both sides, the
// map is one-to-one so replies can come back) and keeps, per peer, the map its calls use (its
// own) and the map its replies use (the inverse of the peer's map to it). Errors name the worker
// and the device, and every worker raises the same one.
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include <torch/cuda.h>

#include "remora/agent/options.hpp"
#include "remora/agent/rendezvous.hpp"
#include "remora/core/errors.hpp"
#include "remora/wire/device_map.hpp"

namespace remora::detail {

// Whether this process's CUDA work would go through an MPS server: CUDA connects a process to one
// when an MPS control daemon listens in its pipe directory ($CUDA_MPS_PIPE_DIRECTORY, by default
// /tmp/nvidia-mps). No CUDA call says so; the daemon's socket does.
inline bool cuda_mps_server() {
  if (torch::cuda::device_count() == 0) return false;
  const char* dir = std::getenv("CUDA_MPS_PIPE_DIRECTORY");
  const std::string control = std::string(dir && *dir ? dir : "/tmp/nvidia-mps") + "/control";
  return ::access(control.c_str(), F_OK) == 0;
}

// "count[ mps]\nworker\nfrom\nto\n..." for the store.
inline std::string device_record(const Options& o) {
  std::string v = std::to_string(torch::cuda::device_count()) + (cuda_mps_server() ? " mps" : "");
  for (const auto& [worker, map] : o.device_maps)
    for (const auto& [from, to] : map.entries) v += "\n" + worker + "\n" + from.str() + "\n" + to.str();
  return v;
}

struct PeerDeviceMaps {
  std::vector<wire::DeviceMap> call, reply;  // per peer rank
};

// `records[r]` is rank r's device_record.
inline PeerDeviceMaps check_device_maps(const std::vector<WorkerInfo>& workers, std::uint32_t self,
                                        const std::vector<std::string>& records) {
  const auto n = workers.size();
  std::vector<int> counts(n);
  std::vector<std::vector<std::pair<std::string, wire::DeviceMap>>> maps(n);  // per rank: worker -> map
  for (std::size_t r = 0; r < n; ++r) {
    auto lines = split_lines(records[r]);
    try {
      counts[r] = std::stoi(lines[0]);
    } catch (const std::exception&) {
      throw Error("remora: rank " + std::to_string(r) + " published devices this build cannot read");
    }
    for (std::size_t i = 1; i + 2 < lines.size(); i += 3) {
      auto it = std::find_if(maps[r].begin(), maps[r].end(), [&](const auto& m) { return m.first == lines[i]; });
      if (it == maps[r].end()) it = maps[r].insert(maps[r].end(), {lines[i], {}});
      it->second.entries.emplace_back(c10::Device(lines[i + 1]), c10::Device(lines[i + 2]));
    }
  }
  auto check = [&](const std::string& owner, std::uint32_t from_rank, const std::string& to_worker,
                   const wire::DeviceMap& map) {
    std::uint32_t to_rank = UINT32_MAX;
    for (const auto& w : workers)
      if (w.name == to_worker) to_rank = w.id;
    const std::string where = "the device map of worker '" + owner + "' to '" + to_worker + "'";
    if (to_rank == UINT32_MAX) throw Error("remora: " + where + " names a worker that is not in the group");
    for (std::size_t i = 0; i < map.entries.size(); ++i)
      for (std::size_t j = 0; j < i; ++j)
        if (map.entries[j].second == map.entries[i].second)
          throw Error("remora: " + where + " maps both " + map.entries[j].first.str() + " and " +
                      map.entries[i].first.str() + " to " + map.entries[i].second.str() +
                      "; a map must be one-to-one so replies can come back");
    for (const auto& [from, to] : map.entries) {
      if (!from.is_cuda() || !to.is_cuda() || !from.has_index() || !to.has_index())
        throw Error("remora: " + where + " maps " + from.str() + " to " + to.str() +
                    "; device maps map indexed CUDA devices (cuda:N)");
      if (from.index() >= counts[from_rank])
        throw Error("remora: " + where + " maps from " + from.str() + ", but '" + owner + "' has " +
                    std::to_string(counts[from_rank]) + " CUDA devices");
      if (to.index() >= counts[to_rank])
        throw Error("remora: " + where + " maps to " + to.str() + ", but '" + to_worker + "' has " +
                    std::to_string(counts[to_rank]) + " CUDA devices");
    }
    return to_rank;
  };
  PeerDeviceMaps out{std::vector<wire::DeviceMap>(n), std::vector<wire::DeviceMap>(n)};
  for (std::uint32_t r = 0; r < n; ++r)
    for (const auto& [worker, map] : maps[r]) {
      const auto to_rank = check(workers[r].name, r, worker, map);
      if (r == self) out.call[to_rank] = map;
      if (to_rank == self && r != self) out.reply[r] = map.inverse();
    }
  return out;
}

}  // namespace remora::detail
