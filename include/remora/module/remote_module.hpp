#pragma once
// RemoteModule<I>: a module on another worker (or GPU), called through its interface I as if it
// were local. Everything is derived from &I::forward at compile time, as PyTorch derives its
// RemoteModule from a TorchScript interface:
//
//   auto m = remora::RemoteModule<Classifier>::create<Mlp>("ps/cuda:0", 128, 10);
//   torch::Tensor y = m.forward(x, 0.5);                // I::forward's parameters and defaults
//   remora::Future<torch::Tensor> f = m.forward_async(x, 0.5);
//   m.call<&Classifier::reset>();
#include <chrono>
#include <map>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "remora/module/concepts.hpp"
#include "remora/module/detail/module_shims.hpp"
#include "remora/module/detail/weight_sync.hpp"
#include "remora/module/remote_device.hpp"
#include "remora/rref/remote.hpp"

namespace remora {

namespace detail {
// What the owner runs for load(): defined in module/detail/script_adapter.hpp, which
// <remora/dynamic.hpp> includes (TorchScript's loader is not everyone's compile cost).
template <class I>
struct ScriptFactory;

// The first N types of a tuple.
template <std::size_t N, class Tuple, class Seq = std::make_index_sequence<N>>
struct take_front;
template <std::size_t N, class... Ts, std::size_t... Is>
struct take_front<N, std::tuple<Ts...>, std::index_sequence<Is...>> {
  using type = std::tuple<std::tuple_element_t<Is, std::tuple<Ts...>>...>;
};

template <class I, class... As>
concept forward_accepts = requires(I& i, As&&... a) { i.forward(std::forward<As>(a)...); };

template <class I, bool = ModuleInterface<I>>
struct forward_of {
  using result = void;
  using args = std::tuple<>;
};
template <class I>
struct forward_of<I, true> {
  using result = typename method_traits<decltype(&I::forward)>::result;
  using args = typename method_traits<decltype(&I::forward)>::args;
};
}  // namespace detail

template <class I>
class RemoteModule {
  static_assert(ModuleInterface<I>,
                "remora: RemoteModule<I> needs an interface I: a polymorphic class (an abstract class with virtual "
                "methods) that declares exactly one forward, not overloaded and not a template");

 public:
  using interface_type = I;
  using result_type = typename detail::forward_of<I>::result;

  RemoteModule() = default;  // refers to nothing; assign one made by create()

  // Builds M(args...) on the worker and device named by `remote_device` ("ps/cuda:0", "ps",
  // "rank:1/cpu") and waits until it exists. M derives from I, or is an existing module whose
  // forward takes I::forward's parameters (it is adapted). Throws remora::Error for an unknown
  // worker or device, RemoteError if M's constructor throws there.
  template <class M, class... As>
  static RemoteModule create(Agent& agent, std::string_view remote_device, As&&... args);
  template <class M, class... As>
  static RemoteModule create(std::string_view remote_device, As&&... args) {
    return create<M>(current_agent(), remote_device, std::forward<As>(args)...);
  }

  // Loads a TorchScript module (torch.jit.save from Python or C++) on the worker and device named,
  // presented as I: I::forward is checked against the script's forward there (a SchemaMismatch
  // naming both signatures and the file), then calls run the script's forward. I must have no
  // pure virtual method besides forward. Throws Error for a file the worker cannot read.
  // Needs <remora/dynamic.hpp> (else: "incomplete type detail::ScriptFactory<I>").
  static RemoteModule load(Agent& agent, std::string_view remote_device, std::string path);
  static RemoteModule load(std::string_view remote_device, std::string path) {
    return load(current_agent(), remote_device, std::move(path));
  }

  // A RemoteModule over a module an RRef already refers to (its owner must be the worker named).
  static RemoteModule from_module_rref(std::string_view remote_device, RRef<I> module_rref);

  // forward with the arguments a direct call of I::forward accepts (defaults included).
  template <class... As>
  result_type forward(As&&... args) const {
    auto f = forward_async(std::forward<As>(args)...);
    detail::AgentAccess::await_sync(agent(), f);
    return std::move(f).get();
  }
  template <class... As>
  Future<result_type> forward_async(As&&... args) const;

  // Any method of I, on the owner, with the same device rules: call<&I::reset>().
  template <auto M, class... As>
  auto call_async(As&&... args) const;
  template <auto M, class... As>
  auto call(As&&... args) const {
    auto f = call_async<M>(std::forward<As>(args)...);
    detail::AgentAccess::await_sync(agent(), f);
    return std::move(f).get();
  }

  // The module itself, for custom code on the owner: module_rref().rpc_sync().call<&I::m>(...),
  // or pass it to a function that runs there and calls local_value().
  const RRef<I>& module_rref() const { return module_; }
  // The module's parameters as RRefs owned by its worker (for a distributed optimizer).
  std::vector<RRef<torch::Tensor>> remote_parameters(bool recurse = true) const;
  // The module's parameters and buffers by name, copied to this worker (on the CPU), and the
  // reverse: each tensor of `state` copied into the one of that name on the owner. load_state_dict
  // throws Error (nothing copied) when a name is missing or extra or a shape differs. Both need a
  // torch::nn::Module or a TorchScript module behind the interface. Cost: the whole state crosses.
  std::map<std::string, torch::Tensor> state_dict() const;
  void load_state_dict(const std::map<std::string, torch::Tensor>& state) const;
  // Weight sync: `named` (a model's named_parameters(), or named_buffers() too) copied in place
  // into this module's tensors of those names. The module's names and shapes are fetched and
  // checked first: a name it lacks, a shape that differs or a parameter left out throws Error
  // naming it, and no tensor is sent. Cost: one small call, then the tensors once (on one host by
  // shared memory or CUDA IPC handle); buffers left out keep their values. The async form waits
  // for that small call before it returns, and reads `named` until its future completes.
  void load_state_dict(const torch::OrderedDict<std::string, torch::Tensor>& named) const {
    auto f = load_state_dict_async(named);
    detail::AgentAccess::await_sync(agent(), f);
    std::move(f).get();
  }
  Future<void> load_state_dict_async(const torch::OrderedDict<std::string, torch::Tensor>& named) const {
    return detail::load_named_state<I>({module_}, {owner_name() + "/" + device_.str()}, named);
  }
  // The state of `source` (a module of the same interface, on any worker) loaded into this one,
  // checked as load_state_dict checks it. This module's worker fetches it from the source's, so
  // the state crosses once and never through this caller (how a replica is restored).
  void copy_state_from(const RemoteModule& source) const;
  // train() / eval() of the module on its worker. Both need a torch::nn::Module or a TorchScript
  // module behind the interface (an Error otherwise: an AOTInductor package has neither).
  void train(bool on = true) const;
  void eval() const { train(false); }

  c10::Device device() const { return device_; }
  WorkerInfo owner() const { return module_.owner(); }
  std::string owner_name() const { return module_.owner_name(); }
  bool valid() const { return module_.valid(); }
  // The same module (one RRef's value), wherever the two handles were copied from.
  friend bool operator==(const RemoteModule& a, const RemoteModule& b) { return a.module_ == b.module_; }

  // A RemoteModule is a value: it travels in calls and results (its RRef is forked).
  template <class Archive>
  void save(Archive& ar) const {
    ar(module_, device_.str());
  }
  template <class Archive>
  void load(Archive& ar) {
    std::string device;
    ar(module_, device);
    try {
      device_ = c10::Device(device);
    } catch (const std::exception&) {
      throw ProtocolError("a RemoteModule names the device '" + device + "'");
    }
  }

 private:
  RemoteModule(RRef<I> module, c10::Device device) : module_(std::move(module)), device_(device) {}
  // Waits until the module behind `rref` exists on `owner`: its creation's error is raised here.
  static void wait_created(Agent& agent, std::uint32_t owner, const RRef<I>& rref);
  Agent& agent() const { return detail::RRefAccess::context(module_)->agent(); }

  RRef<I> module_;
  c10::Device device_{c10::kCPU};
};

// ---------------------------------------------------------------------------------------------

template <class I>
template <class M, class... As>
RemoteModule<I> RemoteModule<I>::create(Agent& agent, std::string_view remote_device, As&&... args) {
  static_assert(detail::derives_or_adapts<I, M>(),
                "remora: create<M>: M neither derives from the interface I nor has a forward that takes I::forward's "
                "parameters and returns something convertible to its result");
  static_assert(detail::adapter_complete<I, M>(),
                "remora: create<M>: M does not derive from I, and I has pure virtual methods besides forward that "
                "an adapter cannot implement; derive M from I");
  static_assert(std::is_constructible_v<M, std::decay_t<As>&&...>,
                "remora: create<M>: M has no constructor that takes these arguments");
  static_assert((Serializable<As> && ...), "remora: create<M>: a constructor argument is not Serializable");
  auto where = RemoteDevice::parse(remote_device);
  const auto owner = where.worker_id(agent);
  using Factory = detail::ModuleFactory<I, M, std::decay_t<As>...>;
  RRef<I> rref = remote<&Factory::make>(agent, agent.get_worker_info(owner).name, where.device.str(),
                                        std::forward<As>(args)...);
  // Wait for the module, so a bad device or a throwing constructor is an error here.
  wait_created(agent, owner, rref);
  return RemoteModule(std::move(rref), where.device);
}

template <class I>
void RemoteModule<I>::wait_created(Agent& agent, std::uint32_t owner, const RRef<I>& rref) {
  using Ready = detail::ReadyShim<I>;
  (void)detail::AutoRegisterAs<&Ready::call, Ready::identity>::registered;
  detail::call_as<&Ready::call>(agent, owner, Ready::identity, CallOptions{}, detail::RRefAccess::core(rref).id).get();
}

template <class I>
RemoteModule<I> RemoteModule<I>::load(Agent& agent, std::string_view remote_device, std::string path) {
  auto where = RemoteDevice::parse(remote_device);
  const auto owner = where.worker_id(agent);
  using Factory = detail::ScriptFactory<I>;
  const std::string file = path;
  RRef<I> rref = remote<&Factory::make>(agent, agent.get_worker_info(owner).name, where.device.str(), std::move(path));
  try {
    wait_created(agent, owner, rref);
  } catch (const RemoteError& e) {
    if (e.remote_type() == "remora::SchemaMismatch") throw SchemaMismatch(file, e.remote_message());
    throw;
  }
  return RemoteModule(std::move(rref), where.device);
}

template <class I>
RemoteModule<I> RemoteModule<I>::from_module_rref(std::string_view remote_device, RRef<I> module_rref) {
  auto where = RemoteDevice::parse(remote_device);
  auto& agent = detail::RRefAccess::context(module_rref)->agent();
  if (where.worker_id(agent) != module_rref.owner().id)
    throw Error("remora: from_module_rref: '" + std::string(remote_device) + "' does not name the owner of the "
                "module RRef ('" + module_rref.owner_name() + "')");
  return RemoteModule(std::move(module_rref), where.device);
}

template <class I>
template <class... As>
Future<typename RemoteModule<I>::result_type> RemoteModule<I>::forward_async(As&&... args) const {
  static_assert(detail::forward_accepts<I, As...>,
                "remora: RemoteModule<I>::forward: these arguments do not match I::forward's parameters (they must be "
                "what a direct call of I::forward accepts)");
  if constexpr (!detail::forward_accepts<I, As...>) {
    return Future<result_type>();  // the static_assert above is the one error shown
  } else {
    using Params = typename detail::take_front<sizeof...(As), typename detail::forward_of<I>::args>::type;
    using Shim = detail::ForwardShim<I, Params>;
    (void)detail::AutoRegisterAs<&Shim::call, Shim::identity>::registered;
    detail::RRefAccess::check_usable(module_, "forward");
    auto& core = detail::RRefAccess::core(module_);
    Params params(std::forward<As>(args)...);
    auto f = std::apply(
        [&](auto&&... p) {
          // The module lives at least until it answered.
          return detail::call_keeping<&Shim::call>(agent(), detail::RRefAccess::core_ptr(module_), core.owner, Shim::identity,
                                                            CallOptions{}, core.id, device_.str(), std::move(p)...);
        },
        std::move(params));
    return f;
  }
}

template <class I>
template <auto M, class... As>
auto RemoteModule<I>::call_async(As&&... args) const {
  detail::check_method<I, M, As...>();
  using Shim = detail::ModuleMethodShim<I, M>;
  (void)detail::AutoRegisterAs<&Shim::call, Shim::identity>::registered;
  detail::RRefAccess::check_usable(module_, "call");
  auto& core = detail::RRefAccess::core(module_);
  return detail::call_keeping<&Shim::call>(agent(), detail::RRefAccess::core_ptr(module_), core.owner, Shim::identity, CallOptions{},
                                                    core.id, device_.str(), std::forward<As>(args)...);
}

template <class I>
std::vector<RRef<torch::Tensor>> RemoteModule<I>::remote_parameters(bool recurse) const {
  using Shim = detail::ParametersShim<I>;
  (void)detail::AutoRegisterAs<&Shim::call, Shim::identity>::registered;
  detail::RRefAccess::check_usable(module_, "remote_parameters");
  return detail::call_as<&Shim::call>(agent(), detail::RRefAccess::core(module_).owner, Shim::identity, CallOptions{},
                                               detail::RRefAccess::core(module_).id, recurse).get();
}

template <class I>
std::map<std::string, torch::Tensor> RemoteModule<I>::state_dict() const {
  using Shim = detail::StateShim<I>;
  (void)detail::AutoRegisterAs<&Shim::call, Shim::identity>::registered;
  detail::RRefAccess::check_usable(module_, "state_dict");
  auto f = detail::call_as<&Shim::call>(agent(), detail::RRefAccess::core(module_).owner, Shim::identity, CallOptions{},
                                        detail::RRefAccess::core(module_).id);
  detail::AgentAccess::await_sync(agent(), f);
  return std::move(f).get();
}

template <class I>
void RemoteModule<I>::load_state_dict(const std::map<std::string, torch::Tensor>& state) const {
  using Shim = detail::LoadStateShim<I>;
  (void)detail::AutoRegisterAs<&Shim::call, Shim::identity>::registered;
  detail::RRefAccess::check_usable(module_, "load_state_dict");
  auto f = detail::call_as<&Shim::call>(agent(), detail::RRefAccess::core(module_).owner, Shim::identity, CallOptions{},
                                        detail::RRefAccess::core(module_).id, state, false);
  detail::AgentAccess::await_sync(agent(), f);
  std::move(f).get();
}

template <class I>
void RemoteModule<I>::copy_state_from(const RemoteModule& source) const {
  using Shim = detail::CopyStateShim<I>;
  (void)detail::AutoRegisterAs<&Shim::call, Shim::identity>::registered;
  detail::RRefAccess::check_usable(module_, "copy_state_from");
  detail::RRefAccess::check_usable(source.module_, "copy_state_from");
  auto f = detail::call_as<&Shim::call>(agent(), detail::RRefAccess::core(module_).owner, Shim::identity, CallOptions{},
                                        detail::RRefAccess::core(module_).id, source.module_);
  detail::AgentAccess::await_sync(agent(), f);
  std::move(f).get();
}

template <class I>
void RemoteModule<I>::train(bool on) const {
  using Shim = detail::TrainShim<I>;
  (void)detail::AutoRegisterAs<&Shim::call, Shim::identity>::registered;
  detail::RRefAccess::check_usable(module_, "train");
  detail::call_as<&Shim::call>(agent(), detail::RRefAccess::core(module_).owner, Shim::identity, CallOptions{},
                                        detail::RRefAccess::core(module_).id, on).get();
}

}  // namespace remora
