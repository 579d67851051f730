#pragma once
// Weight sync: a trainer's named tensors (model->named_parameters(), named_buffers()) copied in
// place into remote modules, one or a whole group. Every module's names and shapes are fetched
// and checked first, so a mismatch fails before any tensor is sent; then each module's worker
// receives the tensors once and copies them into its own (on one host through shared memory or
// CUDA IPC, as any call's tensors). Both steps start on the caller's thread, never on a pool.
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <torch/ordered_dict.h>

#include "remora/core/when_all.hpp"
#include "remora/module/detail/module_shims.hpp"

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
  std::vector<Future<void>> loads;
  for (const auto& m : modules) {
    try {
      const auto& core = RRefAccess::core(m);
      loads.push_back(call_as<&Load::call>(RRefAccess::context(m)->agent(), core.owner, Load::identity,
                                           CallOptions{}, core.id, state, true));
    } catch (...) {
      loads.push_back(make_exceptional_future<void>(std::current_exception()));
    }
  }
  return when_all(std::move(loads));
}

}  // namespace remora::detail
