#pragma once
// RemoteModule<I>::load: a TorchScript module presented through the C++ interface I. The owner
// loads the file, checks I::forward against the script's forward schema (a SchemaMismatch naming
// both and the file), and serves I::forward by running the script's. A .pt2 file is an
// AOTInductor package instead (exported_adapter.hpp).
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "remora/dynamic/builtin.hpp"
#include "remora/dynamic/detail/serve_policy.hpp"
#include "remora/dynamic/script_module.hpp"
#include "remora/module/detail/exported_adapter.hpp"
#include "remora/module/detail/module_of.hpp"

namespace remora::detail {

// Throws SchemaMismatch unless a call of `schema` (the script's forward) accepts `params` and
// gives something `result` can hold (null: anything). `interface` and `path` are for the message.
REMORA_DECL void check_forward_fits(const c10::FunctionSchema& schema, const std::vector<c10::TypePtr>& params,
                                    const c10::TypePtr& result, std::string_view interface, const std::string& path);

template <class I, class F = decltype(&I::forward)>
class ScriptAdapter {
  static_assert(sizeof(F) == 0,
                "remora: RemoteModule<I>::load needs I::forward to be a plain virtual method (not const, not noexcept)");
};

template <class I, class C, class R, class... Ps>
class ScriptAdapter<I, R (C::*)(Ps...)> : public I, public ScriptAccess {
 public:
  // `forward` is the script's forward, checked by check().
  ScriptAdapter(std::shared_ptr<ScriptModule> script, torch::jit::Method forward)
      : script_(std::move(script)), forward_(std::move(forward)),
        schema_(without_self(forward_.function().getSchema())) {}

  // The interface's forward: checked against the script's at load; arguments the interface does
  // not pass take the script's defaults.
  R forward(Ps... ps) override {
    std::vector<c10::IValue> stack;
    stack.reserve(schema_.arguments().size());
    (stack.emplace_back(std::forward<Ps>(ps)), ...);
    if (auto why = fit_schema(schema_, stack, nullptr))
      throw SchemaMismatch(script_->path(), "forward of '" + script_->path() + "': " + *why);
    auto out = script_->run_fitted(forward_, std::move(stack)).get();
    if constexpr (!std::is_void_v<R>) return from_ivalue<std::remove_cvref_t<R>>(std::move(out));
  }

  // The script's forward, once checked against I::forward (a SchemaMismatch if it does not fit).
  static torch::jit::Method check(ScriptModule& script) {
    auto forward = script.module().find_method("forward");
    if (!forward)
      throw SchemaMismatch(script.path(), "the module loaded from '" + script.path() + "' has no forward method");
    c10::TypePtr result;
    if constexpr (!std::is_void_v<R>) result = wanted_type<std::remove_cvref_t<R>>();
    check_forward_fits(without_self(forward->function().getSchema()), {wanted_type<std::remove_cvref_t<Ps>>()...},
                       result, type_identity_of<I>.name, script.path());
    return *forward;
  }

  ScriptModule& script() { return *script_; }
  torch::jit::Module& jit_module() override { return script_->module(); }

 private:
  std::shared_ptr<ScriptModule> script_;
  torch::jit::Method forward_;
  c10::FunctionSchema schema_;  // forward's, without self
};

// What the owner runs to load a script module as an I.
template <class I>
struct ScriptFactory {
  static std::shared_ptr<I> make(std::string device, std::string asked) {
    const std::string path = checked_model_path(asked, "a model load");
    c10::Device dev(device);
    check_device_exists(dev, serving_worker_name());
    if constexpr (!std::is_same_v<I, ScriptModule>) {
      if (is_exported_package(path)) {
        if (!std::ifstream(path).good())
          throw Error("remora: cannot read '" + path + "' on worker '" + serving_worker_name() + "'");
        return make_exported<I>(path, dev, serving_worker_name());
      }
    }
    auto script = std::make_shared<ScriptModule>(load_script_file(path, dev), path);
    if constexpr (std::is_same_v<I, ScriptModule>) {
      return script;
    } else {
      auto forward = ScriptAdapter<I>::check(*script);
      return std::make_shared<ScriptAdapter<I>>(std::move(script), std::move(forward));
    }
  }
};

}  // namespace remora::detail

#if REMORA_HEADER_ONLY
#include "remora/module/impl/script_adapter.ipp"
#endif
