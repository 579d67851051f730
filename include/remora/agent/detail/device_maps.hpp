#pragma once
// Device maps across the group: each worker publishes its CUDA device count and its maps with
// the rendezvous; each checks every map (the workers exist, the devices exist on both sides, the
// map is one-to-one so replies can come back) and keeps, per peer, the map its calls use (its
// own) and the map its replies use (the inverse of the peer's map to it). Errors name the worker
// and the device, and every worker raises the same one.
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include <torch/cuda.h>

#include "remora/agent/options.hpp"
#include "remora/agent/rendezvous.hpp"
#include "remora/core/errors.hpp"
#include "remora/transport/detail/cuda_mps.hpp"
#include "remora/wire/device_map.hpp"

namespace remora::detail {

// "count[ mps]\nworker\nfrom\nto\n..." for the store.
inline std::string device_record(const Options& o) {
  std::string v = std::to_string(torch::cuda::device_count()) + (transport::detail::cuda_mps_server() ? " mps" : "");
  for (const auto& [worker, map] : o.device_maps)
    for (const auto& [from, to] : map.entries) v += "\n" + worker + "\n" + from.str() + "\n" + to.str();
  return v;
}

// A worker's device record, read: its CUDA device count, whether it uses MPS, its maps by worker.
struct DeviceRecord {
  int count = 0;
  bool mps = false;
  std::vector<std::pair<std::string, wire::DeviceMap>> maps;  // worker -> map, as published
  const wire::DeviceMap* map_to(const std::string& worker) const {
    for (const auto& [w, m] : maps)
      if (w == worker) return &m;
    return nullptr;
  }
};

// Reads `record` (device_record's text); `who` names its publisher in the error.
inline DeviceRecord read_device_record(const std::string& record, const std::string& who) {
  DeviceRecord out;
  const auto lines = split_lines(record);
  try {
    out.count = std::stoi(lines.at(0));
  } catch (const std::exception&) {
    throw Error("remora: " + who + " published devices this build cannot read");
  }
  out.mps = lines[0].ends_with(" mps");
  for (std::size_t i = 1; i + 2 < lines.size(); i += 3) {
    auto it = std::find_if(out.maps.begin(), out.maps.end(), [&](const auto& m) { return m.first == lines[i]; });
    if (it == out.maps.end()) it = out.maps.insert(out.maps.end(), {lines[i], {}});
    it->second.entries.emplace_back(c10::Device(lines[i + 1]), c10::Device(lines[i + 2]));
  }
  return out;
}

// Throws Error unless `map`, worker `owner`'s (with `owner_count` CUDA devices) to `to_worker`
// (with `to_count`), is one-to-one between existing indexed CUDA devices.
inline void check_device_map(const std::string& owner, int owner_count, const std::string& to_worker, int to_count,
                             const wire::DeviceMap& map) {
  const std::string where = "the device map of worker '" + owner + "' to '" + to_worker + "'";
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
    if (from.index() >= owner_count)
      throw Error("remora: " + where + " maps from " + from.str() + ", but '" + owner + "' has " +
                  std::to_string(owner_count) + " CUDA devices");
    if (to.index() >= to_count)
      throw Error("remora: " + where + " maps to " + to.str() + ", but '" + to_worker + "' has " +
                  std::to_string(to_count) + " CUDA devices");
  }
}

struct PeerDeviceMaps {
  std::vector<wire::DeviceMap> call, reply;  // per peer rank
  std::vector<bool> mps;                     // per rank: its CUDA work goes through an MPS server
};

// `records[r]` is rank r's device_record.
inline PeerDeviceMaps check_device_maps(const std::vector<WorkerInfo>& workers, std::uint32_t self,
                                        const std::vector<std::string>& records) {
  const auto n = workers.size();
  std::vector<DeviceRecord> read(n);
  for (std::size_t r = 0; r < n; ++r) read[r] = read_device_record(records[r], "rank " + std::to_string(r));
  PeerDeviceMaps out{std::vector<wire::DeviceMap>(n), std::vector<wire::DeviceMap>(n), std::vector<bool>(n)};
  for (std::size_t r = 0; r < n; ++r) out.mps[r] = read[r].mps;
  for (std::uint32_t r = 0; r < n; ++r)
    for (const auto& [worker, map] : read[r].maps) {
      std::uint32_t to_rank = UINT32_MAX;
      for (const auto& w : workers)
        if (w.name == worker) to_rank = w.id;
      if (to_rank == UINT32_MAX)
        throw Error("remora: the device map of worker '" + workers[r].name + "' to '" + worker +
                    "' names a worker that is not in the group");
      check_device_map(workers[r].name, read[r].count, worker, read[to_rank].count, map);
      if (r == self) out.call[to_rank] = map;
      if (to_rank == self && r != self) out.reply[r] = map.inverse();
    }
  return out;
}

// A hello's devices: the caller's device count and its map to the hello's `target` only, without
// the target's name ("count[ mps]\nfrom\nto..."): a hello is read under a 1 KiB limit.
inline std::string hello_devices(const DeviceRecord& mine, const std::string& target) {
  std::string v = std::to_string(mine.count) + (mine.mps ? " mps" : "");
  if (const auto* map = mine.map_to(target))
    for (const auto& [from, to] : map->entries) v += "\n" + from.str() + "\n" + to.str();
  return v;
}
// The device record a hello's devices stand for, its maps naming `target` (this worker).
inline std::string record_of_hello(const std::string& devices, const std::string& target) {
  const auto lines = split_lines(devices);
  std::string v = lines[0];
  for (std::size_t i = 1; i + 1 < lines.size(); i += 2) v += "\n" + target + "\n" + lines[i] + "\n" + lines[i + 1];
  return v;
}

// Elastic groups: the maps between this worker (`self`, its record `mine`) and a member it meets
// (`member`, its record `theirs`): this worker's calls use its own map to the member, its replies
// the inverse of the member's map to it. Throws Error naming the map when either does not fit
// the two workers' devices (the worker that joins checks both directions with every member).
struct PairDeviceMaps {
  wire::DeviceMap call, reply;
};
inline PairDeviceMaps pair_device_maps(const std::string& self, const DeviceRecord& mine, const std::string& member,
                                       const DeviceRecord& theirs) {
  PairDeviceMaps out;
  if (const auto* m = mine.map_to(member)) {
    check_device_map(self, mine.count, member, theirs.count, *m);
    out.call = *m;
  }
  if (const auto* m = theirs.map_to(self)) {
    check_device_map(member, theirs.count, self, mine.count, *m);
    out.reply = m->inverse();
  }
  return out;
}

}  // namespace remora::detail
