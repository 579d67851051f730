#pragma once
// torchbind objects: instances of classes registered with torch::class_<T>("ns", "Name") in a
// library their owner has loaded, created remotely from their registered __init__ and called
// by method name, each call checked against the method's schema on the owner.
//
//   remora::RRef<remora::ScriptObject> st = remora::remote_object("w1", "my_ns.Stack", std::vector<std::string>{"a"});
//   st.call("push", std::string("b"));
//   std::string top = st.call<std::string>("pop");
//   remora::ScriptObject copy = st.to_here();           // by value, if the class defines def_pickle
//   copy.call<std::string>("pop");                       // runs here, on the copy
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/core/ivalue.h>

#include "remora/dynamic/builtin.hpp"
#include "remora/rref/remote.hpp"

namespace remora {

class ScriptObject {
 public:
  ScriptObject() = default;  // holds nothing; what a copy that travels is received into
  ScriptObject(c10::intrusive_ptr<c10::ivalue::Object> object, std::string class_name)
      : object_(std::move(object)), class_name_(std::move(class_name)) {}

  // `method` with `args` (self excluded), checked against its schema first: a SchemaMismatch
  // names the class, the method and its schema.
  REMORA_DECL c10::IValue call_method(std::string method, std::vector<c10::IValue> args);

  // The same, on this worker, with C++ arguments; R is the result (c10::IValue: untyped).
  template <class R = c10::IValue, class... As>
  R call(std::string_view method, As&&... args);

  const c10::intrusive_ptr<c10::ivalue::Object>& object() const { return object_; }
  const std::string& class_name() const { return class_name_; }  // "my_ns.Stack"

  // By value (to_here(), arguments and results of calls): the class's def_pickle state, rebuilt
  // by its __setstate__ where it arrives. A class without def_pickle is a SerializationError on
  // the sending side; one not registered where it arrives fails that call. Copying a
  // ScriptObject within a process shares the object, as IValues do.
  template <class Archive>
  void save(Archive& ar) const {
    if (!object_) throw SerializationError("an empty ScriptObject cannot travel");
    ar(c10::IValue(object_));
  }
  template <class Archive>
  void load(Archive& ar) {
    c10::IValue v;
    ar(v);
    if (!v.isObject()) throw ProtocolError("a ScriptObject arrived as " + v.tagKind());
    object_ = v.toObject();
    const auto qualified = object_->type()->name()->qualifiedName();
    class_name_ = qualified.substr(std::min(qualified.size(), wire::detail::kTorchbindPrefix.size()));
  }

 private:
  c10::intrusive_ptr<c10::ivalue::Object> object_;
  std::string class_name_;
};

namespace detail {
template <class R, class... As>
R call_script_object(const RRef<ScriptObject>& object, std::string_view method, As&&... args);

// RRef<ScriptObject>::call(method, args...): a method of the torchbind object, by name. Declared
// before anything names RRef<ScriptObject> (a specialization after its first use is ill-formed).
template <>
struct CallByName<ScriptObject> {
  using provided = void;
  template <class R, class... As>
  static R call(const RRef<ScriptObject>& object, std::string_view method, As&&... args) {
    return call_script_object<R>(object, method, std::forward<As>(args)...);
  }
};

// What the owner runs for remote_object: the registered class `class_name` ("ns.Name") made by
// its __init__ from `args`. Throws Error if no library loaded there registers it.
REMORA_DECL std::shared_ptr<ScriptObject> make_script_object(std::string class_name, std::vector<c10::IValue> args);

template <class R, class... As>
R call_script_object(const RRef<ScriptObject>& object, std::string_view method, As&&... args) {
  const Kwargs* kw = nullptr;
  auto stack = to_ivalues(kw, std::forward<As>(args)...);
  if (kw) throw Error("remora: methods of torchbind objects take their arguments by position");
  auto out = object.rpc_sync().template call<&ScriptObject::call_method>(std::string(method), std::move(stack));
  if constexpr (std::is_void_v<R>)
    return;
  else
    return from_ivalue<R>(std::move(out));
}

}  // namespace detail

template <class R, class... As>
R ScriptObject::call(std::string_view method, As&&... args) {
  const Kwargs* kw = nullptr;
  auto stack = detail::to_ivalues(kw, std::forward<As>(args)...);
  if (kw) throw Error("remora: methods of torchbind objects take their arguments by position");
  auto out = call_method(std::string(method), std::move(stack));
  if constexpr (std::is_void_v<R>)
    return;
  else
    return detail::from_ivalue<R>(std::move(out));
}

// A new object of the torchbind class `class_name` ("ns.Name") on worker `to`, as an RRef: it
// returns at once, and a class that is not registered there fails the RRef's first use.
template <class... As>
RRef<ScriptObject> remote_object(Agent& agent, std::string_view to, std::string_view class_name, As&&... args) {
  const Kwargs* kw = nullptr;
  auto stack = detail::to_ivalues(kw, std::forward<As>(args)...);
  if (kw) throw Error("remora: torchbind constructors take their arguments by position");
  return remote<&detail::make_script_object>(agent, to, std::string(class_name), std::move(stack));
}
template <class... As>
RRef<ScriptObject> remote_object(std::string_view to, std::string_view class_name, As&&... args) {
  return remote_object(current_agent(), to, class_name, std::forward<As>(args)...);
}

}  // namespace remora

#if REMORA_HEADER_ONLY
#include "remora/dynamic/impl/script_object.ipp"
#endif
