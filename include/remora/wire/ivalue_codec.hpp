#pragma once
// c10::IValue in a frame, for the dynamic path (builtin ops and TorchScript by name).
// Supported: None, bool, int, double, complex, string, Device, Tensor, int/double/bool/Tensor
// lists, generic lists, tuples and dicts, nested to Limits::max_depth, and torchbind objects
// whose class defines def_pickle (by value: the class's name and its __getstate__, rebuilt by
// its __setstate__ where they arrive, as torch.save does). Other objects, futures, RRefs and
// runtime-only kinds are refused with a SerializationError.
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include <ATen/core/ivalue.h>
#include <ATen/core/function.h>
#include <ATen/core/jit_type.h>
#include <cereal/types/string.hpp>
#include <cereal/types/vector.hpp>

#include "remora/wire/tensor_codec.hpp"

namespace remora::wire {

namespace detail {
enum class IValueTag : std::uint8_t {
  none = 0, tensor, real, integer, boolean, string, tuple, list, dict, complex, device,
  int_list, double_list, bool_list, tensor_list, torchbind,
};
inline constexpr std::uint8_t kMaxIValueTag = static_cast<std::uint8_t>(IValueTag::torchbind);

// torchbind classes are named "__torch__.torch.classes.ns.Name"; the wire carries "ns.Name".
inline constexpr std::string_view kTorchbindPrefix = "__torch__.torch.classes.";

// The registered torchbind class "ns.Name" (defined in torch/custom_class.h, which this header
// does not need otherwise), or null.
REMORA_DECL c10::ClassTypePtr torchbind_class(const std::string& name);

// The state `object` (a torchbind object) travels as: its class's __getstate__.
REMORA_DECL std::pair<std::string, c10::IValue> torchbind_state(const c10::ivalue::Object& object);
// The object of class `name` rebuilt from `state` by its __setstate__. Throws ProtocolError.
REMORA_DECL c10::IValue torchbind_from_state(const std::string& name, c10::IValue state);

// The most specific type covering all of `types` (Any if there is none or they differ).
inline c10::TypePtr unified(const std::vector<c10::TypePtr>& types) {
  if (types.empty()) return c10::AnyType::get();
  std::ostringstream why_not;
  auto t = c10::unifyTypeList(types, why_not);
  return t ? *t : c10::AnyType::get();
}
}  // namespace detail

// Templates constrained to IValue exactly: IValue converts implicitly from tuples, vectors and
// more, and a plain overload would claim all of those types from cereal's own functions.
template <class T>
  requires std::is_same_v<T, c10::IValue>
void CEREAL_SAVE_FUNCTION_NAME(BodyWriter& ar, const T& v) {
  using detail::IValueTag;
  auto tag = [&](IValueTag t) { ar(static_cast<std::uint8_t>(t)); };
  if (v.isNone()) {
    tag(IValueTag::none);
  } else if (v.isTensor()) {
    tag(IValueTag::tensor);
    ar(v.toTensor());
  } else if (v.isDouble()) {
    tag(IValueTag::real);
    ar(v.toDouble());
  } else if (v.isInt()) {
    tag(IValueTag::integer);
    ar(v.toInt());
  } else if (v.isBool()) {
    tag(IValueTag::boolean);
    ar(v.toBool());
  } else if (v.isString()) {
    tag(IValueTag::string);
    ar(v.toStringRef());
  } else if (v.isComplexDouble()) {
    tag(IValueTag::complex);
    auto c = v.toComplexDouble();
    ar(c.real(), c.imag());
  } else if (v.isDevice()) {
    tag(IValueTag::device);
    auto d = v.toDevice();
    ar(static_cast<std::int8_t>(d.type()), static_cast<std::int8_t>(d.index()));
  } else if (v.isIntList()) {
    tag(IValueTag::int_list);
    ar(v.toIntVector());
  } else if (v.isDoubleList()) {
    tag(IValueTag::double_list);
    ar(v.toDoubleVector());
  } else if (v.isBoolList()) {
    tag(IValueTag::bool_list);
    auto l = v.toBoolList();
    ar(cereal::make_size_tag(static_cast<cereal::size_type>(l.size())));
    for (bool b : l) ar(b);
  } else if (v.isTensorList()) {
    tag(IValueTag::tensor_list);
    ar(v.toTensorVector());
  } else if (v.isList()) {
    tag(IValueTag::list);
    auto l = v.toListRef();
    ar(cereal::make_size_tag(static_cast<cereal::size_type>(l.size())));
    for (const auto& e : l) ar(e);
  } else if (v.isTuple()) {
    tag(IValueTag::tuple);
    const auto& elems = v.toTupleRef().elements();
    ar(cereal::make_size_tag(static_cast<cereal::size_type>(elems.size())));
    for (const auto& e : elems) ar(e);
  } else if (v.isGenericDict()) {
    tag(IValueTag::dict);
    auto d = v.toGenericDict();
    ar(cereal::make_size_tag(static_cast<cereal::size_type>(d.size())));
    for (const auto& kv : d) ar(kv.key(), kv.value());
  } else if (v.isObject()) {
    auto [name, state] = detail::torchbind_state(*v.toObject());
    tag(IValueTag::torchbind);
    ar(name, state);
  } else {
    throw SerializationError("IValue of kind " + v.tagKind() + " cannot travel");
  }
}

template <class T>
  requires std::is_same_v<T, c10::IValue>
void CEREAL_LOAD_FUNCTION_NAME(BodyReader& ar, T& v) {
  using detail::IValueTag;
  std::uint8_t raw;
  ar(raw);
  if (raw > detail::kMaxIValueTag) BodyReader::fail("unknown IValue tag " + std::to_string(raw));
  ar.enter();
  auto count = [&] {
    cereal::size_type n;
    ar(cereal::make_size_tag(n));
    return n;
  };
  switch (static_cast<IValueTag>(raw)) {
    case IValueTag::none: v = c10::IValue(); break;
    case IValueTag::tensor: { torch::Tensor t; ar(t); v = t; break; }
    case IValueTag::real: { double d; ar(d); v = d; break; }
    case IValueTag::integer: { int64_t i; ar(i); v = i; break; }
    case IValueTag::boolean: { bool b; ar(b); v = b; break; }
    case IValueTag::string: { std::string s; ar(s); v = std::move(s); break; }
    case IValueTag::complex: {
      double re, im;
      ar(re, im);
      v = c10::complex<double>(re, im);
      break;
    }
    case IValueTag::device: {
      std::int8_t type, index;
      ar(type, index);
      auto device = device_from_wire(type, index);
      if (!device) BodyReader::fail("unsupported device " + std::to_string(type) + ":" + std::to_string(index));
      v = *device;
      break;
    }
    case IValueTag::int_list: { std::vector<int64_t> l; ar(l); v = std::move(l); break; }
    case IValueTag::double_list: { std::vector<double> l; ar(l); v = std::move(l); break; }
    case IValueTag::bool_list: {
      auto n = count();
      c10::List<bool> l;
      l.reserve(n);
      for (cereal::size_type i = 0; i < n; ++i) { bool b; ar(b); l.push_back(b); }
      v = std::move(l);
      break;
    }
    case IValueTag::tensor_list: { std::vector<torch::Tensor> l; ar(l); v = std::move(l); break; }
    case IValueTag::list: {
      auto n = count();
      std::vector<c10::IValue> elems(n);
      std::vector<c10::TypePtr> types;
      for (auto& e : elems) { ar(e); types.push_back(e.type()); }
      c10::impl::GenericList l(detail::unified(types));
      l.reserve(n);
      for (auto& e : elems) l.push_back(std::move(e));
      v = std::move(l);
      break;
    }
    case IValueTag::tuple: {
      auto n = count();
      std::vector<c10::IValue> elems(n);
      for (auto& e : elems) ar(e);
      v = c10::ivalue::Tuple::create(std::move(elems));
      break;
    }
    case IValueTag::dict: {
      auto n = count();
      std::vector<std::pair<c10::IValue, c10::IValue>> items(n);
      std::vector<c10::TypePtr> key_types, value_types;
      for (auto& [k, val] : items) {
        ar(k, val);
        if (!(k.isString() || k.isInt() || k.isDouble() || k.isBool() || k.isTensor() || k.isComplexDouble()))
          BodyReader::fail("dict key of kind " + k.tagKind() + " is not hashable");
        key_types.push_back(k.type());
        value_types.push_back(val.type());
      }
      auto key_type = detail::unified(key_types);
      if (key_type->kind() == c10::TypeKind::AnyType) key_type = n ? key_types.front() : c10::StringType::get();
      c10::impl::GenericDict d(key_type, detail::unified(value_types));
      for (auto& [k, val] : items) d.insert_or_assign(std::move(k), std::move(val));
      v = std::move(d);
      break;
    }
    case IValueTag::torchbind: {
      std::string name;
      c10::IValue state;
      ar(name, state);
      v = detail::torchbind_from_state(name, std::move(state));
      break;
    }
  }
  ar.leave();
}

}  // namespace remora::wire

#if REMORA_HEADER_ONLY
#include "remora/wire/impl/torchbind_codec.ipp"
#endif
