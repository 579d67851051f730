#pragma once
// torchbind objects on their owner: compiled in every translation unit (header-only) or once,
// in <remora/impl/src.hpp> (REMORA_SEPARATE_COMPILATION).
#include <sstream>

#include <torch/custom_class.h>

#include "remora/dynamic/detail/schema_match.hpp"
#include "remora/dynamic/script_module.hpp"
#include "remora/dynamic/script_object.hpp"

namespace remora {

namespace detail {

REMORA_DECL std::shared_ptr<ScriptObject> make_script_object(std::string class_name, std::vector<c10::IValue> args) {
  c10::ClassTypePtr type;
  try {
    type = torch::getCustomClass("__torch__.torch.classes." + class_name);
  } catch (const std::exception&) {
  }
  if (!type)
    throw Error("remora: no torchbind class '" + class_name + "' is registered on worker '" + serving_worker_name() +
                "' (load the library that registers it there, e.g. remora-worker --load)");
  auto* init = type->findMethod("__init__");
  if (!init) throw Error("remora: the torchbind class '" + class_name + "' has no constructor (torch::init)");
  auto object = c10::ivalue::Object::create(c10::StrongTypePtr(nullptr, type), 1);  // slot 0: the C++ object
  auto holder = std::make_shared<ScriptObject>(object, class_name);
  std::vector<c10::IValue> stack{c10::IValue(object)};
  for (auto& a : args) stack.push_back(std::move(a));
  // The constructor's schema, self excluded, checks the arguments as any method's.
  const auto& full = init->getSchema();
  auto schema = full.cloneWithArguments({full.arguments().begin() + 1, full.arguments().end()});
  std::vector<c10::IValue> check(stack.begin() + 1, stack.end());
  if (auto why = fit_schema(schema, check, nullptr)) {
    std::ostringstream s;
    s << schema;
    throw SchemaMismatch(class_name, class_name + ": arguments (" + describe_types(args, nullptr) +
                                         ") do not fit its constructor " + s.str() + ": " + *why);
  }
  check.insert(check.begin(), c10::IValue(object));
  (*init)(std::move(check));
  return holder;
}

}  // namespace detail

REMORA_DECL c10::IValue ScriptObject::call_method(std::string method, std::vector<c10::IValue> args) {
  if (!object_) throw Error("remora: ScriptObject::call('" + method + "') on an empty ScriptObject");
  auto* fn = object_->type()->findMethod(method);
  if (!fn) {
    std::string names;
    for (auto* m : object_->type()->methods())
      if (m->name() != "__init__") names += (names.empty() ? "" : ", ") + m->name();
    throw SchemaMismatch(class_name_, "the torchbind class '" + class_name_ + "' has no method '" + method +
                                          "' (it has: " + names + ")");
  }
  const auto& full = fn->getSchema();
  auto schema = full.cloneWithArguments({full.arguments().begin() + 1, full.arguments().end()});
  const std::size_t given = args.size();  // a failed fit only appended to these (or widened an int)
  if (auto why = detail::fit_schema(schema, args, nullptr)) {
    std::ostringstream s;
    s << schema;
    throw SchemaMismatch(class_name_, class_name_ + "." + method + ": arguments (" +
                                          detail::describe_types(std::span(args).first(given), nullptr) +
                                          ") do not fit " + s.str() + ": " +
                                          *why);
  }
  args.insert(args.begin(), c10::IValue(object_));
  return (*fn)(std::move(args));
}

namespace detail {
// What a worker needs to serve remote_object and its calls to callers from other binaries.
[[maybe_unused]] inline const bool script_objects_served =
    AutoRegisterAs<&CreateShim<&make_script_object>::call, CreateShim<&make_script_object>::identity>::registered &&
    AutoRegisterAs<&MethodShim<ScriptObject, &ScriptObject::call_method>::call,
                   MethodShim<ScriptObject, &ScriptObject::call_method>::identity>::registered &&
    AutoRegisterAs<&FetchShim<ScriptObject>::call, FetchShim<ScriptObject>::identity>::registered;
}  // namespace detail

}  // namespace remora
