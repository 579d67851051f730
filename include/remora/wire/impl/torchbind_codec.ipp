#pragma once
// torchbind objects by value: compiled in every translation unit (header-only) or once, in
// <remora/impl/src.hpp> (REMORA_SEPARATE_COMPILATION).
#include <torch/custom_class.h>

#include "remora/wire/ivalue_codec.hpp"

namespace remora::wire::detail {

REMORA_DECL c10::ClassTypePtr torchbind_class(const std::string& name) {
  try {
    return torch::getCustomClass(std::string(kTorchbindPrefix) + name);
  } catch (const std::exception&) {
    return nullptr;
  }
}

REMORA_DECL std::pair<std::string, c10::IValue> torchbind_state(const c10::ivalue::Object& object) {
  const auto& type = object.type();
  const std::string qualified = type->name() ? type->name()->qualifiedName() : std::string("(anonymous)");
  if (qualified.rfind(kTorchbindPrefix, 0) != 0)
    throw SerializationError("an object of the TorchScript class '" + qualified +
                             "' cannot travel (only torchbind objects whose class defines def_pickle)");
  std::string name = qualified.substr(kTorchbindPrefix.size());
  auto* getstate = type->findMethod("__getstate__");
  if (!getstate || !type->findMethod("__setstate__"))
    throw SerializationError("the torchbind class '" + name +
                             "' cannot travel by value: it defines no def_pickle (keep it on its owner, in an RRef)");
  // The object is not modified: __getstate__ takes it as `self` and reads.
  auto self = c10::intrusive_ptr<c10::ivalue::Object>::reclaim_copy(const_cast<c10::ivalue::Object*>(&object));
  auto state = (*getstate)({c10::IValue(std::move(self))});
  return {std::move(name), std::move(state)};
}

REMORA_DECL c10::IValue torchbind_from_state(const std::string& name, c10::IValue state) {
  auto type = torchbind_class(name);
  if (!type) throw ProtocolError("no torchbind class '" + name + "' is registered on this worker");
  auto* setstate = type->findMethod("__setstate__");
  if (!setstate) throw ProtocolError("the torchbind class '" + name + "' defines no def_pickle here");
  auto object = c10::ivalue::Object::create(c10::StrongTypePtr(nullptr, type), 1);  // slot 0: the C++ object
  try {
    (*setstate)({c10::IValue(object), std::move(state)});
  } catch (const std::exception& e) {
    throw ProtocolError("the torchbind class '" + name + "' refused the state that arrived: " + e.what());
  }
  return c10::IValue(std::move(object));
}

}  // namespace remora::wire::detail
