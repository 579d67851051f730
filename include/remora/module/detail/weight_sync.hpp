#pragma once
// Weight sync: a trainer's named tensors (model->named_parameters(), named_buffers()) copied in
// place into remote modules, one or a whole group. Every module's names and shapes are fetched
// and checked first, so a mismatch fails before any tensor is sent; then each module's worker
// receives the tensors once and copies them into its own (on one host CPU tensors through shared
// memory, in pieces that overlap; GPU tensors straight from the caller's memory, lent by CUDA IPC
// handle for the load's duration). Both steps start on the caller's thread, never on a pool.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <torch/ordered_dict.h>

#include "remora/core/when_all.hpp"
#include "remora/module/detail/module_shims.hpp"
#include "remora/wire/lending_calls.hpp"

namespace remora::detail {

// A module's parameter shapes and buffer shapes, by dotted name.
using StateShapes = std::pair<std::map<std::string, std::vector<std::int64_t>>,
                              std::map<std::string, std::vector<std::int64_t>>>;

template <class I>
struct StateShapesShim {
  static Future<StateShapes> call(RRefId id) {
    return typed_value<I>(rref_msg::requested_state(id)).then([](const std::shared_ptr<I>& obj) {
      return TrainableModule<I>(obj).shapes();
    });
  }
  static constexpr Identity identity{mix_id("remora/module/state_shapes", type_identity_of<I>.id),
                                     "Module::state_shapes"};
};

// `named` as a state to send: detached (the copy on the module is no step of this autograd graph).
inline std::map<std::string, torch::Tensor> state_of(const torch::OrderedDict<std::string, torch::Tensor>& named) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& item : named) out.emplace(item.key(), item.value().detach());
  return out;
}

// `state` cut into the loads sent to each module: CPU tensors in pieces of at most kLoadChunkBytes
// (a larger tensor alone), so that the module copies one piece out of shared memory (or the
// socket) while the next is being written (on one host a CPU state crosses by two copies, which
// then overlap); GPU tensors, lent in place, in pieces of at most `gpu_piece` bytes: few loads
// (one GPU wait each, and the loads run side by side), none past the frame limit (14.5 GB of
// GPU state is 15 loads).
inline constexpr std::uint64_t kLoadChunkBytes = std::uint64_t{64} << 20;
inline std::vector<std::map<std::string, torch::Tensor>> chunks_of(const std::map<std::string, torch::Tensor>& state,
                                                                   std::uint64_t gpu_piece) {
  std::vector<std::map<std::string, torch::Tensor>> chunks;
  for (const bool gpu : {true, false}) {
    const std::uint64_t piece = gpu ? gpu_piece : kLoadChunkBytes;
    bool open = false;  // whether chunks.back() takes tensors of this kind
    std::uint64_t filled = 0;
    for (const auto& [name, t] : state) {
      if (t.device().is_cpu() == gpu) continue;
      if (!open || (!chunks.back().empty() && filled + t.nbytes() > piece)) {  // (a larger tensor: a piece of its own)
        chunks.emplace_back();
        open = true;
        filled = 0;
      }
      chunks.back().emplace(name, t);
      filled += t.nbytes();
    }
  }
  if (chunks.empty()) chunks.emplace_back();  // an empty state is still checked and loaded
  return chunks;
}

// Throws Error naming the first mismatch of `state` against the module at `where` ("worker/device"):
// a name the module has no parameter or buffer of, a shape that differs, or a parameter left out
// (buffers may be left out: named_parameters() carries none).
inline void check_state_fits(const StateShapes& module, const std::map<std::string, torch::Tensor>& state,
                             const std::string& where) {
  const auto fail = [&](const std::string& why) {
    throw Error("remora: load_state_dict on " + where + ": " + why + "; nothing was sent");
  };
  for (const auto& [name, t] : state) {
    const std::vector<std::int64_t>* shape = nullptr;
    if (auto p = module.first.find(name); p != module.first.end()) shape = &p->second;
    if (auto b = module.second.find(name); b != module.second.end()) shape = &b->second;
    if (!shape) fail("the module has no parameter or buffer '" + name + "'");
    if (!t.sizes().equals(*shape))
      fail("'" + name + "' has shape " + c10::str(t.sizes()) + " here and " + c10::str(c10::IntArrayRef(*shape)) +
           " in the module");
  }
  for (const auto& entry : module.first)
    if (!state.count(entry.first)) fail("the state has no parameter '" + entry.first + "'");
}

// Lists Shim's function as one that only reads its GPU tensors while it runs, in every program
// that sends or serves it (wire/lending_calls.hpp).
template <class Shim>
struct LendsTo {
  static inline const bool allowed = (wire::LendingCalls::allow(Shim::identity.id), true);
};

// Flags the call `frame` as lending its GPU tensors (wire::kLendsDeviceTensors).
inline void offer_device_tensors(wire::OutFrame& frame) {
  wire::FrameHeader h;
  std::memcpy(&h, frame.head.data(), sizeof h);
  h.flags |= wire::kLendsDeviceTensors;
  std::memcpy(frame.head.data(), &h, sizeof h);
}

// Loads `named` into every module of `modules` (`points[i]` names module i in errors). First,
// on this thread, every module's shapes are fetched (one small call each, waited for here) and
// checked: a mismatch throws before any tensor is sent. Then every load is encoded and sent from
// this thread, so GPU tensors are exported after the work queued on its current stream; a load
// that cannot be sent (no device map to that worker, say) fails its own future. The returned
// future completes when every module has copied, or holds the first failure. `named`'s tensors
// are read until then: leave them unchanged until the future completes.
template <class I>
Future<void> load_named_state(const std::vector<RRef<I>>& modules, const std::vector<std::string>& points,
                              const torch::OrderedDict<std::string, torch::Tensor>& named) {
  using Shapes = StateShapesShim<I>;
  using Load = LoadStateShim<I>;
  (void)AutoRegisterAs<&Shapes::call, Shapes::identity>::registered;
  (void)AutoRegisterAs<&Load::call, Load::identity>::registered;
  (void)LendsTo<Load>::allowed;
  std::vector<Future<StateShapes>> asked;
  for (const auto& m : modules) {
    RRefAccess::check_usable(m, "load_state_dict");
    const auto& core = RRefAccess::core(m);
    asked.push_back(call_as<&Shapes::call>(RRefAccess::context(m)->agent(), core.owner, Shapes::identity,
                                           CallOptions{}, core.id));
  }
  const std::vector<StateShapes> shapes = when_all(std::move(asked)).get();
  const auto state = state_of(named);
  for (std::size_t i = 0; i < modules.size(); ++i) check_state_fits(shapes[i], state, points.at(i));
  // GPU pieces: 1 GiB, or less under a lower frame limit (the pieces carry a little more than
  // their tensors).
  const auto& limits = modules.empty() ? wire::Limits{} : RRefAccess::context(modules[0])->agent().options().limits;
  const auto chunks = chunks_of(state, std::min<std::uint64_t>(std::uint64_t{1} << 30, limits.max_frame_bytes / 2));
  std::vector<Future<void>> loads;
  for (const auto& m : modules) {
    for (const auto& chunk : chunks) {
      try {
        const auto& core = RRefAccess::core(m);
        Agent& agent = RRefAccess::context(m)->agent();
        const auto rid = AgentAccess::next_request_id(agent);
        WireScope scope(&agent, core.owner);
        auto frame = encode_call<&Load::call>(agent, rid, Load::identity, core.id, chunk, true);
        // The module reads the tensors only while the load runs: on the caller's host its GPU
        // copies them straight from the caller's memory (cuda_ipc.hpp), with no copy in between.
        offer_device_tensors(frame);
        bool sent = false;
        loads.push_back(start_call<void>(agent, core.owner, Load::identity.name, rid, std::move(frame),
                                         CallOptions{}.timeout, nullptr, &sent));
        if (sent) scope.commit();
      } catch (...) {
        loads.push_back(make_exceptional_future<void>(std::current_exception()));
      }
    }
  }
  return when_all(std::move(loads));
}

}  // namespace remora::detail
