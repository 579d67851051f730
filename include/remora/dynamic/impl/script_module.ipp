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

REMORA_DECL std::string serving_worker_name() {
  return serving_agent ? serving_agent->self().name : std::string("?");
}

REMORA_DECL torch::jit::Module load_script_file(const std::string& path, const c10::Device& device) {
  const std::string where = "worker '" + serving_worker_name() + "'";
  if (!std::ifstream(path).good()) throw Error("remora: cannot read '" + path + "' on " + where);
  if (path.size() > 4 && path.compare(path.size() - 4, 4, ".pt2") == 0)
    throw Error("remora: '" + path + "' is a torch.export / AOTInductor package: loading it needs libtorch 2.6 or "
                "later with the AOTInductor package loader; " + where + " has libtorch " TORCH_VERSION);
  try {
    return torch::jit::load(path, device);
  } catch (const std::exception& e) {
    throw Error("remora: '" + path + "' on " + where + " is not a TorchScript module: " + e.what());
  }
}

REMORA_DECL std::optional<c10::FunctionSchema> method_schema(torch::jit::Module& module, const std::string& method) {
  auto m = module.find_method(method);
  if (!m) return std::nullopt;
  const auto& full = m->function().getSchema();
  std::vector<c10::Argument> args(full.arguments().begin() + 1, full.arguments().end());  // without self
  return full.cloneWithArguments(std::move(args));
}

}  // namespace detail

REMORA_DECL Future<c10::IValue> ScriptModule::run_method(std::string method, std::vector<c10::IValue> stack) {
  auto schema = detail::method_schema(module_, method);
  if (!schema) {
    std::string names;
    for (const auto& m : module_.get_methods()) names += (names.empty() ? "" : ", ") + m.name();
    throw SchemaMismatch(path_, "the module loaded from '" + path_ + "' has no method '" + method +
                                    "' (it has: " + names + ")");
  }
  // The stack came from the network: it must be the method's full argument list, each of its type.
  if (stack.size() != schema->arguments().size() ||
      detail::fit_schema(*schema, stack, nullptr, /*complete=*/true)) {
    std::ostringstream s;
    s << *schema;
    throw SchemaMismatch(path_, "arguments (" + detail::describe_types(stack, nullptr) + ") do not fit " + s.str() +
                                    " of the module loaded from '" + path_ + "'");
  }
  c10::IValue out = (*module_.find_method(method))(std::move(stack));
  if (!out.isFuture()) return make_ready_future<c10::IValue>(std::move(out));
  // An asynchronous method: answer when its future completes.
  Promise<c10::IValue> promise;
  auto result = promise.get_future();
  auto future = out.toFuture();
  future->addCallback([p = std::make_shared<Promise<c10::IValue>>(std::move(promise))](c10::ivalue::Future& f) {
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
    s << *detail::method_schema(module, m.name());
    out.push_back(s.str());
  }
  return out;
}

}  // namespace remora
