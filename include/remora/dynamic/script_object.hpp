#pragma once
// torchbind objects: instances of classes registered with torch::class_<T>("ns", "Name") in a
// library their owner has loaded, created remotely from their registered __init__ and called
// by method name, each call checked against the method's schema on the owner.
//
//   remora::RRef<remora::ScriptObject> st = remora::remote_object("w1", "my_ns.Stack", std::vector<std::string>{"a"});
//   st.call("push", std::string("b"));
//   std::string top = st.call<std::string>("pop");
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
  ScriptObject(c10::intrusive_ptr<c10::ivalue::Object> object, std::string class_name)
      : object_(std::move(object)), class_name_(std::move(class_name)) {}

  // `method` with `args` (self excluded), checked against its schema first: a SchemaMismatch
  // names the class, the method and its schema.
  REMORA_DECL c10::IValue call_method(std::string method, std::vector<c10::IValue> args);

  const c10::intrusive_ptr<c10::ivalue::Object>& object() const { return object_; }
  const std::string& class_name() const { return class_name_; }  // "my_ns.Stack"

 private:
  c10::intrusive_ptr<c10::ivalue::Object> object_;
  std::string class_name_;
};

namespace detail {
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
