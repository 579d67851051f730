#pragma once
// c10d process groups over the workers of a DeviceMesh, rendezvoused through the store init_rpc
// already uses: no second launch configuration, and collectives mix freely with remora's calls
// in one program.
//
//   auto pg = remora::process_group(mesh, "dp");   // this worker's slice along "dp"
//   std::vector<torch::Tensor> t = {grad};
//   pg->allreduce(t)->wait();
//
// Like every c10d constructor it is collective: each worker of the group calls it, in the same
// order as the others' other process_group calls. Gloo for CPU meshes; NCCL for CUDA meshes when
// libtorch has it. Cost: Gloo's own connections (one per pair of members), made here.
#include <algorithm>
#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO  // libtorch is built with Gloo; its header shows the class only with this
#endif
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#if defined(USE_C10D_NCCL)
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include "remora/agent/agent.hpp"
#include "remora/agent/detail/outbound.hpp"
#include "remora/agent/detail/services.hpp"
#include "remora/agent/rpc.hpp"
#include "remora/core/errors.hpp"
#include "remora/module/detail/group_fence.hpp"
#include "remora/module/device_mesh.hpp"

namespace remora {
namespace detail {

// A ProcessGroup carrying `backend` for `device`: the backend itself in libtorch 1.x, where
// backends are process groups; wrapped in one (libtorch 2.x, where they are c10d::Backend).
enum class BackendKind { gloo, nccl };

// What a backend is made as: fenced itself where it is a process group (libtorch 1.x); in
// libtorch 2.x the process group that carries it is (as_process_group).
template <class B>
using FencedIfGroup = std::conditional_t<std::is_base_of_v<c10d::ProcessGroup, B>, FencedGroup<B>, B>;

template <class PG = FencedGroup<c10d::ProcessGroup>, class B>
c10::intrusive_ptr<c10d::ProcessGroup> as_process_group(c10::intrusive_ptr<B> backend,
                                                        const c10::intrusive_ptr<c10d::Store>& store, int rank,
                                                        int size, c10::DeviceType device, BackendKind kind) {
  const char* name = kind == BackendKind::gloo ? "gloo" : "nccl";
  if constexpr (std::is_base_of_v<c10d::ProcessGroup, B>) {
    (void)store, (void)rank, (void)size, (void)device, (void)name;
    return backend;
  } else {
    const auto type = kind == BackendKind::gloo ? PG::BackendType::GLOO : PG::BackendType::NCCL;
    c10::intrusive_ptr<PG> pg;
    if constexpr (std::is_constructible_v<PG, const c10::intrusive_ptr<c10d::Store>&, int, int>)
      pg = c10::make_intrusive<PG>(store, rank, size);
    else
      pg = c10::make_intrusive<PG>(store, rank, size, c10::make_intrusive<typename PG::Options>(name));
    if constexpr (requires(PG& p) { p.setDefaultBackend(type); }) pg->setDefaultBackend(type);
    pg->setBackend(device, type, backend);
    return pg;
  }
}

// How many groups an agent made over each set of members: every member makes them in the same
// order, so the count names the same group everywhere. Lives as long as the agent (a service).
class MeshGroupCounts : public AgentService {
 public:
  explicit MeshGroupCounts(Agent&) {}
  int next(const std::string& key) {
    std::lock_guard lock(mu_);
    return made_[key]++;
  }

 private:
  std::mutex mu_;
  std::map<std::string, int> made_;
};
inline int next_group_generation(Agent& agent, const std::string& key) {
  return AgentAccess::service<MeshGroupCounts>(agent)->next(key);
}

inline c10::intrusive_ptr<c10d::ProcessGroup> make_backend_group(Agent& agent,
                                                                 const c10::intrusive_ptr<c10d::Store>& store,
                                                                 int rank, int size, bool cuda,
                                                                 std::chrono::milliseconds timeout,
                                                                 const std::string& what) {
  if (cuda) {
#if defined(USE_C10D_NCCL)
    auto options = c10d::ProcessGroupNCCL::Options::create();
    options->timeout = timeout;
    auto nccl = c10::make_intrusive<FencedIfGroup<c10d::ProcessGroupNCCL>>(store, rank, size, options);
    return as_process_group(nccl, store, rank, size, c10::DeviceType::CUDA, BackendKind::nccl);
#else
    throw Error("remora: process_group(" + what + "): a CUDA mesh needs NCCL, and this libtorch has none");
#endif
  }
  auto options = c10d::ProcessGroupGloo::Options::create();
  options->timeout = timeout;
  const auto& o = agent.options();
  const std::string host = o.advertise_host.empty() ? o.listen_host : o.advertise_host;
  options->devices.push_back(host.empty() || host == "0.0.0.0" ? c10d::ProcessGroupGloo::createDefaultDevice()
                                                                : c10d::ProcessGroupGloo::createDeviceForHostname(host));
  auto gloo = c10::make_intrusive<FencedIfGroup<c10d::ProcessGroupGloo>>(store, rank, size, options);
  return as_process_group(gloo, store, rank, size, c10::DeviceType::CPU, BackendKind::gloo);
}

inline c10::intrusive_ptr<c10d::ProcessGroup> make_process_group(Agent& agent, const DeviceMesh& members,
                                                                 std::int64_t rank, const std::string& what) {
  bool cuda = false, cpu = false;
  std::string key;
  std::vector<WorkerInfo> others;  // the other members, as they are now (the fence's reference)
  // Each point with its worker's incarnation: after a member joined again (an elastic group), its
  // groups are new ones, counted from the start on every member, not the old ones' successors.
  for (const auto& point : members.devices()) {
    const auto where = RemoteDevice::parse(point);
    (where.device.is_cuda() ? cuda : cpu) = true;
    const auto id = where.worker_id(agent);  // throws when the worker is not (or no longer) in the group
    // A lost member would leave the others waiting in the backend's rendezvous until its timeout.
    // (What this worker knows: one that has not met the loss yet goes on into the backend.)
    if (id != agent.self().id && AgentAccess::is_lost(agent, id))
      throw WorkerLost(agent.get_worker_info(id).name, "process_group(" + what + ")",
                       "a member of the mesh is lost; make the group over a mesh without it (or, in an elastic "
                       "group, once it has joined again)");
    const auto info = agent.get_worker_info(id);
    key += point + "#" + std::to_string(info.incarnation) + ",";
    if (id != agent.self().id &&
        std::none_of(others.begin(), others.end(), [&](const WorkerInfo& w) { return w.id == id; }))
      others.push_back(info);
  }
  if (cuda && cpu) throw Error("remora: process_group(" + what + "): its points mix CPU and CUDA devices");
  const int size = static_cast<int>(members.size());
  auto store = c10::make_intrusive<c10d::PrefixStore>(
      "mesh/" + key + std::to_string(next_group_generation(agent, key)), AgentAccess::store(agent));
  const auto timeout = agent.options().rpc_timeout;
  auto group = make_backend_group(agent, store, static_cast<int>(rank), size, cuda, timeout, what);
  auto* fence = dynamic_cast<GroupFence*>(group.get());
  TORCH_INTERNAL_ASSERT(fence != nullptr, "remora: make_backend_group made a group without a fence");
  fence->watch(agent, others, "process_group(" + what + ")");
  // A change while the backend met its members came before the subscription: look once more.
  for (const auto& m : others) {
    if (AgentAccess::is_lost(agent, m.id)) fence->mark(m.name, "was lost or left");
    try {
      if (const auto now = agent.get_worker_info(m.name).incarnation; now != m.incarnation)
        fence->mark(m.name, "joined again (incarnation " + std::to_string(now) + ")");
    } catch (const Error&) {  // no worker of that name now
      fence->mark(m.name, "left");
    }
  }
  return group;
}

}  // namespace detail

// The process group of this worker's slice of `mesh` along `dim` (the members whose other
// coordinates are this worker's), ranked by their position along `dim`. Throws remora::Error when
// this worker has no point in the mesh or the dimension is unknown.
inline c10::intrusive_ptr<c10d::ProcessGroup> process_group(Agent& agent, const DeviceMesh& mesh, std::string_view dim) {
  auto [slice, rank] = mesh.slice_through(dim, agent.self().name);
  return detail::make_process_group(agent, slice, rank, "\"" + std::string(dim) + "\"");
}
inline c10::intrusive_ptr<c10d::ProcessGroup> process_group(const DeviceMesh& mesh, std::string_view dim) {
  return process_group(current_agent(), mesh, dim);
}

// The process group of every point of `mesh`, ranked in the mesh's order. One point per worker.
inline c10::intrusive_ptr<c10d::ProcessGroup> process_group(Agent& agent, const DeviceMesh& mesh) {
  std::int64_t rank = -1;
  std::vector<std::string> workers;  // of the points so far
  for (const auto& point : mesh.devices()) {
    auto worker = RemoteDevice::parse(point).worker;
    if (std::find(workers.begin(), workers.end(), worker) != workers.end())
      throw Error("remora: process_group(mesh): worker '" + worker +
                  "' has two points in the mesh, and a process group has one rank per process");
    if (worker == agent.self().name) rank = static_cast<std::int64_t>(workers.size());
    workers.push_back(std::move(worker));
  }
  if (rank < 0) throw Error("remora: worker '" + agent.self().name + "' has no point in the mesh");
  return detail::make_process_group(agent, DeviceMesh(mesh.devices()), rank, "the whole mesh");
}
inline c10::intrusive_ptr<c10d::ProcessGroup> process_group(const DeviceMesh& mesh) {
  return process_group(current_agent(), mesh);
}

}  // namespace remora
