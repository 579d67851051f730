#pragma once
// ScriptRemoteModule: a TorchScript module on another worker, its methods called by name, as
// PyTorch's RemoteModule over a scripted module but untyped, for modules a program knows only
// at run time.
//
//   auto d = remora::ScriptRemoteModule::load("w1/cuda:0", "scorer.pt");
//   c10::IValue out = d.call("forward", x, 2.0);
//   d.call_async("reset");
//
// load() fetches the methods' schemas, so a call that fits none is a SchemaMismatch on the
// caller, before anything is sent (and the owner checks again). Device rules are RemoteModule's.
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "remora/module/detail/script_adapter.hpp"
#include "remora/module/remote_module.hpp"

namespace remora {

namespace detail {
// The methods of a loaded script module as its caller knows them.
struct ScriptMethods {
  std::string path;
  std::vector<std::string> text;                     // "forward(Tensor x, float s) -> Tensor"
  std::vector<std::optional<c10::FunctionSchema>> schemas;  // parsed (null: a type the caller cannot name)
};
REMORA_DECL std::shared_ptr<const ScriptMethods> parse_script_methods(std::string path,
                                                                      std::vector<std::string> text);
// Makes `stack` the full argument list of `method`, or throws SchemaMismatch.
REMORA_DECL void fit_script_call(const ScriptMethods& methods, std::string_view method,
                                 std::vector<c10::IValue>& stack, const Kwargs* kwargs);
}  // namespace detail

class ScriptRemoteModule {
 public:
  ScriptRemoteModule() = default;  // refers to nothing; assign one made by load()

  // Loads `path` on the worker and device named ("w1/cuda:0") and waits until it is there.
  // Throws Error if the worker cannot read it or it is not a TorchScript module.
  static REMORA_DECL ScriptRemoteModule load(Agent& agent, std::string_view remote_device, std::string path);
  static ScriptRemoteModule load(std::string_view remote_device, std::string path) {
    return load(current_agent(), remote_device, std::move(path));
  }

  // `method` with `args` (a Kwargs last), its result as an IValue.
  template <class... As>
  Future<c10::IValue> call_async(std::string_view method, As&&... args) const {
    return module_.call_async<&ScriptModule::run_method>(std::string(method),
                                                          fitted(method, std::forward<As>(args)...));
  }
  template <class... As>
  c10::IValue call(std::string_view method, As&&... args) const {
    return module_.call<&ScriptModule::run_method>(std::string(method), fitted(method, std::forward<As>(args)...));
  }

  // The script's parameters, each as an RRef owned by the module's worker (the tensors the
  // module uses), for a DistributedOptimizer; and its train mode.
  // (Out of line: their server shims would otherwise be instantiated in every TU that includes
  // this header.)
  REMORA_DECL std::vector<RRef<torch::Tensor>> remote_parameters(bool recurse = true) const;
  REMORA_DECL void train(bool on = true) const;
  void eval() const { train(false); }

  // The module itself, for code on its owner (local_value() there gives the ScriptModule).
  const RRef<ScriptModule>& module_rref() const { return module_.module_rref(); }
  // The methods' schemas, self excluded.
  const std::vector<std::string>& methods() const { return methods_->text; }
  const std::string& path() const { return methods_->path; }
  c10::Device device() const { return module_.device(); }
  bool valid() const { return module_.valid(); }

 private:
  // The arguments as the full stack of `method`, or a SchemaMismatch.
  template <class... As>
  std::vector<c10::IValue> fitted(std::string_view method, As&&... args) const {
    const Kwargs* kw = nullptr;
    auto stack = detail::to_ivalues(kw, std::forward<As>(args)...);
    detail::fit_script_call(*methods_, method, stack, kw);
    return stack;
  }

  RemoteModule<ScriptModule> module_;
  std::shared_ptr<const detail::ScriptMethods> methods_;
};

}  // namespace remora

#if REMORA_HEADER_ONLY
#include "remora/module/impl/script_remote_module.ipp"
#endif
