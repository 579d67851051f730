#pragma once
// What runs on a RemoteModule's owner, as PyTorch's _remote_forward template does: arguments move
// to the module's device, forward runs, and results come back on the CPU when the module is on
// CUDA, unless the caller set a device map to this worker (then they stay on the GPU). Like the RRef shims, each is registered under an id derived from
// the interface and the method.
#include <algorithm>
#include <map>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <c10/core/impl/DeviceGuardImplInterface.h>

#include "remora/module/detail/module_of.hpp"
#include "remora/module/to_device.hpp"
#include "remora/rref/rref.hpp"

namespace remora::detail {

template <class I, class M, class... Ds>
struct ModuleFactory {
  static std::shared_ptr<I> make(std::string device, Ds... args) {
    c10::Device dev(device);
    check_device_exists(dev, serving_worker_name());
    return make_module<I, M>(dev, std::move(args)...);
  }
};

// Completes once the value of an RRef exists (or raises why it never will).
template <class T>
struct ReadyShim {
  static Future<void> call(RRefId id) {
    return typed_value<T>(rref_msg::requested_state(id)).then([](const std::shared_ptr<T>&) {});
  }
  static constexpr Identity identity{mix_id("remora/rref/ready", type_identity_of<T>.id), "RRef readiness"};
};

// Runs `invoke(obj, args...)` with PyTorch's device rules: on a CUDA module, tensors in the
// arguments go to its device, and results come back on the CPU unless the caller set a device
// map to this worker (then they travel device to device).
template <class I, class Args, class Invoke>
auto run_on_module(const std::shared_ptr<OwnerState>& state, std::string device, Args args, Invoke invoke) {
  const bool caller_has_map = serving_agent && serving_peer != UINT32_MAX && serving_peer != serving_agent->self().id &&
                              !AgentAccess::reply_device_map(*serving_agent, serving_peer).empty();
  return with_typed_value<I>(
      state,
      [device = std::move(device), args = std::move(args), invoke, caller_has_map](const std::shared_ptr<I>& obj) mutable {
        const c10::Device dev(device);
        const bool on_cuda = dev.is_cuda();
        if (on_cuda) args = to_device_queued(std::move(args), dev);
        using R = decltype(std::apply([&](auto&... a) -> decltype(auto) { return invoke(*obj, a...); }, args));
        if constexpr (std::is_void_v<R>) {
          std::apply([&](auto&... a) { invoke(*obj, a...); }, args);
        } else {
          R result = std::apply([&](auto&... a) -> decltype(auto) { return invoke(*obj, a...); }, args);
          if constexpr (!is_future_v<R>) {
            if (on_cuda && !caller_has_map) result = to_device(std::move(result), c10::Device(c10::kCPU));
          } else if constexpr (std::is_same_v<R, Future<typename future_value<R>::type>> &&
                               !std::is_void_v<typename future_value<R>::type>) {
            if (on_cuda && !caller_has_map)
              return R(result.then([](auto value) { return to_device(std::move(value), c10::Device(c10::kCPU)); }));
          }
          return result;
        }
      });
}

// forward with the first N of I::forward's parameters: the rest take I's default arguments,
// because the call below is a normal call through I.
template <class I, class Params>
struct ForwardShim;
template <class I, class... Qs>
struct ForwardShim<I, std::tuple<Qs...>> {
  static auto call(RRefId id, std::string device, Qs... args) {
    return run_on_module<I>(rref_msg::requested_state(id), std::move(device), std::make_tuple(std::move(args)...),
                            [](I& obj, auto&... a) -> decltype(auto) { return obj.forward(std::move(a)...); });
  }
  static constexpr Identity identity{mix_id("remora/module/forward", type_identity_of<I>.id, sizeof...(Qs)),
                                     function_identity<&I::forward>.name};
};

// Any other method of the interface, with all its arguments.
template <class I, auto M, class Params = typename method_traits<decltype(M)>::args>
struct ModuleMethodShim;
template <class I, auto M, class... Qs>
struct ModuleMethodShim<I, M, std::tuple<Qs...>> {
  static auto call(RRefId id, std::string device, Qs... args) {
    return run_on_module<I>(rref_msg::requested_state(id), std::move(device), std::make_tuple(std::move(args)...),
                            [](I& obj, auto&... a) -> decltype(auto) { return std::invoke(M, obj, std::move(a)...); });
  }
  static constexpr Identity identity{mix_id("remora/module/call", type_identity_of<I>.id, function_identity<M>.id),
                                     function_identity<M>.name};
};

// What stands behind an interface object that has parameters and a train mode: a
// torch::nn::Module or a TorchScript module. Throws Error for anything else (an AOTInductor
// package, a plain class).
template <class I>
struct TrainableModule {
  std::shared_ptr<torch::nn::Module> nn;
  ScriptAccess* script = nullptr;

  explicit TrainableModule(const std::shared_ptr<I>& obj) : nn(nn_module_of(obj)) {
    if (!nn) script = dynamic_cast<ScriptAccess*>(obj.get());
    if (!nn && !script)
      throw Error("remora: the module behind RemoteModule<" + std::string(type_identity_of<I>.name) +
                  "> is neither a torch::nn::Module nor a TorchScript module");
  }
  std::vector<torch::Tensor> parameters(bool recurse) const {
    if (nn) return nn->parameters(recurse);
    std::vector<torch::Tensor> out;
    for (const auto& p : script->jit_module().parameters(recurse)) out.push_back(p);
    return out;
  }
  void train(bool mode) const {
    if (nn)
      nn->train(mode);
    else
      script->jit_module().train(mode);
  }
  // `visit(name, tensor, is_parameter)` for each parameter, then each buffer, by dotted name
  // (the tensors themselves, not copies).
  template <class Visit>
  void for_each_state(const Visit& visit) const {
    if (nn) {
      for (const auto& p : nn->named_parameters(true)) visit(p.key(), p.value(), true);
      for (const auto& b : nn->named_buffers(true)) visit(b.key(), b.value(), false);
    } else {
      for (const auto& p : script->jit_module().named_parameters(true)) visit(p.name, p.value, true);
      for (const auto& b : script->jit_module().named_buffers(true)) visit(b.name, b.value, false);
    }
  }
  // The shapes of its parameters and of its buffers, by dotted name.
  using Shapes = std::map<std::string, std::vector<std::int64_t>>;
  std::pair<Shapes, Shapes> shapes() const {
    std::pair<Shapes, Shapes> out;
    for_each_state([&](const std::string& name, const torch::Tensor& t, bool parameter) {
      (parameter ? out.first : out.second).emplace(name, t.sizes().vec());
    });
    return out;
  }
  // Parameters and buffers by their dotted names.
  std::vector<std::pair<std::string, torch::Tensor>> named_state() const {
    std::vector<std::pair<std::string, torch::Tensor>> out;
    for_each_state([&](const std::string& name, const torch::Tensor& t, bool) { out.emplace_back(name, t); });
    return out;
  }
};

// train(mode) / eval() of the module behind the interface.
template <class I>
struct TrainShim {
  static Future<void> call(RRefId id, bool mode) {
    return typed_value<I>(rref_msg::requested_state(id)).then([mode](const std::shared_ptr<I>& obj) {
      TrainableModule<I>(obj).train(mode);
    });
  }
  static constexpr Identity identity{mix_id("remora/module/train", type_identity_of<I>.id), "Module::train"};
};

// The module's parameters, each as an RRef owned by the module's worker (the same tensors the
// module uses, not copies), as PyTorch's remote_parameters.
template <class I>
struct ParametersShim {
  static Future<std::vector<RRef<torch::Tensor>>> call(RRefId id, bool recurse) {
    auto ctx = serving_rref_context();
    return typed_value<I>(rref_msg::requested_state(id)).then([ctx, recurse](const std::shared_ptr<I>& obj) {
      std::vector<RRef<torch::Tensor>> out;
      for (auto& p : TrainableModule<I>(obj).parameters(recurse))
        out.push_back(make_local_rref<torch::Tensor>(*ctx, std::make_shared<torch::Tensor>(p)));
      return out;
    });
  }
  static constexpr Identity identity{mix_id("remora/module/parameters", type_identity_of<I>.id),
                                     "Module::parameters"};
};

// The module's parameters and buffers by name, as copies on the CPU (what another replica loads).
template <class I>
struct StateShim {
  static Future<std::map<std::string, torch::Tensor>> call(RRefId id) {
    return typed_value<I>(rref_msg::requested_state(id)).then([](const std::shared_ptr<I>& obj) {
      std::map<std::string, torch::Tensor> out;
      for (auto& [name, t] : TrainableModule<I>(obj).named_state()) out.emplace(name, t.detach().to(torch::kCPU));
      return out;
    });
  }
  static constexpr Identity identity{mix_id("remora/module/state_dict", type_identity_of<I>.id), "Module::state_dict"};
};

// Copies `state` into the module held by `owned`: each tensor into its own device. The names
// must be the module's: an extra one, a wrong shape or (unless `partial`) a missing one is an
// Error naming it, and nothing is copied then. `partial`: names the state leaves out keep their
// tensors (weight sync checks on the caller that every parameter is there).
template <class I>
Future<void> load_state(const std::shared_ptr<OwnerState>& owned, std::map<std::string, torch::Tensor> state,
                        bool partial = false) {
  return typed_value<I>(owned).then([state = std::move(state), partial](const std::shared_ptr<I>& obj) {
    auto named = TrainableModule<I>(obj).named_state();
    std::size_t found = 0;
    for (const auto& [name, t] : named) {
      auto it = state.find(name);
      if (it == state.end()) {
        if (partial) continue;
        throw Error("remora: load_state_dict: the state has no '" + name + "'");
      }
      if (it->second.sizes() != t.sizes()) throw Error("remora: load_state_dict: '" + name + "' has the wrong shape");
      ++found;
    }
    if (state.size() != found)
      for (const auto& entry : state)  // no structured binding: clang 14 cannot capture one
        if (std::none_of(named.begin(), named.end(), [&](const auto& n) { return n.first == entry.first; }))
          throw Error("remora: load_state_dict: the module has no '" + entry.first + "'");
    torch::NoGradGuard no_grad;
    std::vector<c10::Device> gpus;  // where copies were queued (both ends of each)
    const auto note = [&](c10::Device d) {
      if (!d.is_cpu() && std::find(gpus.begin(), gpus.end(), d) == gpus.end()) gpus.push_back(d);
    };
    for (auto& [name, t] : named)
      if (auto it = state.find(name); it != state.end()) {
        t.copy_(it->second);
        note(t.device());
        note(it->second.device());
      }
    // The reply says the state was copied: the caller may change its tensors then (an optimizer
    // step), and a GPU copy may still read them (from the caller's own memory, on one host).
    for (const auto& d : gpus) c10::impl::getDeviceGuardImpl(d.type())->getStream(d).synchronize();
  });
}

template <class I>
struct LoadStateShim {
  static Future<void> call(RRefId id, std::map<std::string, torch::Tensor> state, bool partial) {
    return load_state<I>(rref_msg::requested_state(id), std::move(state), partial);
  }
  static constexpr Identity identity{mix_id("remora/module/load_state_dict/partial", type_identity_of<I>.id),
                                     "Module::load_state_dict"};
};

// The state of the module `source` (on another worker) loaded into this one: this owner asks the
// source's owner for it, so the state crosses once, owner to owner, not through the caller.
template <class I>
struct CopyStateShim {
  static Future<void> call(RRefId id, RRef<I> source) {
    auto owned = rref_msg::requested_state(id);  // (needs the serving context: taken here)
    using Get = StateShim<I>;
    (void)AutoRegisterAs<&Get::call, Get::identity>::registered;
    const auto& core = RRefAccess::core(source);
    auto state = call_as<&Get::call>(*serving_agent, core.owner, Get::identity, CallOptions{}, core.id);
    return state.then([owned, source](std::map<std::string, torch::Tensor> s) { return load_state<I>(owned, std::move(s)); });
  }
  static constexpr Identity identity{mix_id("remora/module/copy_state_from", type_identity_of<I>.id),
                                     "Module::copy_state_from"};
};

}  // namespace remora::detail
