#pragma once
// Script modules on their owner: compiled in every translation unit (header-only) or once, in
// <remora/impl/src.hpp> (REMORA_SEPARATE_COMPILATION).
#include <fstream>
#include <sstream>

#include <torch/csrc/jit/serialization/import.h>
#include <torch/version.h>

#include "remora/agent/detail/registry.hpp"
#include "remora/core/errors.hpp"
#include "remora/dynamic/detail/schema_match.hpp"
#include "remora/dynamic/script_module.hpp"

namespace remora {

namespace detail {

REMORA_DECL torch::jit::Module load_script_file(const std::string& path, const c10::Device& device) {
  const std::string where = "worker '" + serving_worker_name() + "'";
  if (!std::ifstream(path).good()) throw Error("remora: cannot read '" + path + "' on " + where);
  if (is_exported_package(path))
    throw Error("remora: '" + path + "' is a torch.export / AOTInductor package, which has no methods by name: "
                "load it with RemoteModule<I>::load (libtorch 2.8 or later; " + where + " has libtorch " TORCH_VERSION ")");
  try {
    return torch::jit::load(path, device);
  } catch (const std::exception& e) {
    throw Error("remora: '" + path + "' on " + where + " is not a TorchScript module: " + e.what());
  }
}

REMORA_DECL c10::FunctionSchema without_self(const c10::FunctionSchema& method) {
  return method.cloneWithArguments({method.arguments().begin() + 1, method.arguments().end()});
}

}  // namespace detail

REMORA_DECL Future<c10::IValue> ScriptModule::run_method(std::string method, std::vector<c10::IValue> stack) {
  auto m = module_.find_method(method);
  if (!m) {
    std::string names;
    for (const auto& each : module_.get_methods()) names += (names.empty() ? "" : ", ") + each.name();
    throw SchemaMismatch(path_, "the module loaded from '" + path_ + "' has no method '" + method +
                                    "' (it has: " + names + ")");
  }
  // The stack came from the network: it must be the method's full argument list, each of its type.
  const auto schema = detail::without_self(m->function().getSchema());
  if (stack.size() != schema.arguments().size() || detail::fit_schema(schema, stack, nullptr, /*complete=*/true)) {
    std::ostringstream s;
    s << schema;
    throw SchemaMismatch(path_, "arguments (" + detail::describe_types(stack, nullptr) + ") do not fit " + s.str() +
                                    " of the module loaded from '" + path_ + "'");
  }
  return run_fitted(*m, std::move(stack));
}

REMORA_DECL Future<c10::IValue> ScriptModule::run_fitted(torch::jit::Method& method, std::vector<c10::IValue> stack) {
  c10::IValue out = method(std::move(stack));
  if (!out.isFuture()) return make_ready_future<c10::IValue>(std::move(out));
  // An asynchronous method: answer when its future completes.
  Promise<c10::IValue> promise;
  auto result = promise.get_future();
  out.toFuture()->addCallback([p = std::make_shared<Promise<c10::IValue>>(std::move(promise))](c10::ivalue::Future& f) {
    if (f.hasError())
      p->set_exception(f.exception_ptr());
    else
      p->set_value(f.value());
  });
  return result;
}

REMORA_DECL std::vector<std::string> ScriptModule::method_schemas() const {
  std::vector<std::string> out;
  auto& module = const_cast<torch::jit::Module&>(module_);
  for (const auto& m : module.get_methods()) {
    std::ostringstream s;
    s << detail::without_self(m.function().getSchema());
    out.push_back(s.str());
  }
  return out;
}

}  // namespace remora
