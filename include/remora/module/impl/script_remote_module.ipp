#pragma once
// ScriptRemoteModule's parts that are not templates: compiled in every translation unit
// (header-only) or once, in <remora/impl/src.hpp> (REMORA_SEPARATE_COMPILATION).
#include <sstream>

#include <torch/csrc/jit/frontend/function_schema_parser.h>

#include "remora/module/script_remote_module.hpp"

namespace remora {

namespace detail {

REMORA_DECL std::shared_ptr<const ScriptMethods> parse_script_methods(std::string path,
                                                                      std::vector<std::string> text) {
  auto out = std::make_shared<ScriptMethods>();
  out->path = std::move(path);
  for (const auto& t : text) {
    try {
      out->schemas.emplace_back(torch::jit::parseSchema(t));
    } catch (const std::exception&) {
      out->schemas.emplace_back(std::nullopt);  // checked by the owner only
    }
  }
  out->text = std::move(text);
  return out;
}

REMORA_DECL void fit_script_call(const ScriptMethods& methods, std::string_view method,
                                 std::vector<c10::IValue>& stack, const Kwargs* kwargs) {
  std::string names;
  for (std::size_t i = 0; i < methods.text.size(); ++i) {
    const auto& t = methods.text[i];
    const auto name = t.substr(0, t.find('('));
    names += (names.empty() ? "" : ", ") + name;
    if (name != method) continue;
    if (!methods.schemas[i]) {
      if (kwargs) throw SchemaMismatch(methods.path, "keyword arguments need a schema this worker can read: " + t);
      return;
    }
    const std::size_t given = stack.size();  // a failed fit only appended to these (or widened an int)
    if (auto why = fit_schema(*methods.schemas[i], stack, kwargs))
      throw SchemaMismatch(methods.path, "arguments (" + describe_types(std::span(stack).first(given), kwargs) +
                                             ") do not fit " + t +
                                             " of the module loaded from '" + methods.path + "': " + *why);
    return;
  }
  throw SchemaMismatch(methods.path, "the module loaded from '" + methods.path + "' has no method '" +
                                         std::string(method) + "' (it has: " + names + ")");
}

}  // namespace detail

REMORA_DECL ScriptRemoteModule ScriptRemoteModule::load(Agent& agent, std::string_view remote_device,
                                                        std::string path) {
  ScriptRemoteModule out;
  const std::string file = path;
  out.module_ = RemoteModule<ScriptModule>::load(agent, remote_device, std::move(path));
  out.methods_ = detail::parse_script_methods(file, out.module_.call<&ScriptModule::method_schemas>());
  return out;
}

REMORA_DECL std::vector<RRef<torch::Tensor>> ScriptRemoteModule::remote_parameters(bool recurse) const {
  return module_.remote_parameters(recurse);
}

REMORA_DECL void ScriptRemoteModule::train(bool on) const { module_.train(on); }

}  // namespace remora

namespace remora::detail {

// What a worker needs to serve ScriptRemoteModule::load and its calls to callers from other
// binaries (a stock remora-worker among them): registered by every program that includes this.
[[maybe_unused]] inline const bool script_modules_served =
    AutoRegisterAs<&CreateShim<&ScriptFactory<ScriptModule>::make>::call,
                   CreateShim<&ScriptFactory<ScriptModule>::make>::identity>::registered &&
    AutoRegisterAs<&ReadyShim<ScriptModule>::call, ReadyShim<ScriptModule>::identity>::registered &&
    AutoRegisterAs<&ModuleMethodShim<ScriptModule, &ScriptModule::run_method>::call,
                   ModuleMethodShim<ScriptModule, &ScriptModule::run_method>::identity>::registered &&
    AutoRegisterAs<&ModuleMethodShim<ScriptModule, &ScriptModule::method_schemas>::call,
                   ModuleMethodShim<ScriptModule, &ScriptModule::method_schemas>::identity>::registered &&
    AutoRegisterAs<&ForwardShim<ScriptModule, std::tuple<std::vector<c10::IValue>>>::call,
                   ForwardShim<ScriptModule, std::tuple<std::vector<c10::IValue>>>::identity>::registered;

}  // namespace remora::detail
