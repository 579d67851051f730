#pragma once
// Builtin operators by name: any operator registered with the c10 dispatcher runs on another
// worker with no user code there, as torch.distributed.rpc's rpc_sync(to, torch.add, ...).
//
//   torch::Tensor c = remora::rpc_sync<torch::Tensor>("w1", "aten::add", a, b);
//   c10::IValue v = remora::rpc_sync("w1", "aten::topk", x, 3);           // untyped: an IValue
//   remora::RRef<torch::Tensor> r = remora::remote<torch::Tensor>("w1", "aten::ones", std::vector<int64_t>{2, 2});
//
// The caller picks the overload ("aten::add" or exactly "aten::add.Tensor") from its own
// operator registry, first to accept the arguments (a SchemaMismatch listing every overload and
// why it refused, before anything is sent); the callee checks the arguments against that schema
// again and runs the operator through the dispatcher. A typed call also checks that the
// operator's result converts to R. Cost: the arguments travel as IValues, and the caller pays one
// lookup in a cache of the operator's overloads.
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <ATen/core/ivalue.h>
#include <ATen/core/jit_type.h>

#include "remora/agent/rpc.hpp"
#include "remora/dynamic/detail/schema_match.hpp"
#include "remora/dynamic/kwargs.hpp"
#include "remora/rref/remote.hpp"

namespace remora {
namespace detail {

// The call of an operator after its overload was chosen.
struct BuiltinCall {
  std::uint32_t to = 0;
  Identity fn;                      // run_builtin's id; the operator's name for messages
  std::string op;                   // "aten::add.Tensor"
  std::vector<c10::IValue> stack;   // every argument of the schema, in order
};

// Chooses the overload of `op` for `args`, checks its result against `wanted` (null: any).
// Throws UnknownFunction (no such operator here) or SchemaMismatch.
REMORA_DECL BuiltinCall match_builtin(Agent& agent, std::string_view to, std::string_view op,
                                      std::vector<c10::IValue> args, const Kwargs* kwargs,
                                      const c10::TypePtr& wanted, std::string_view wanted_name);
// Sends a matched call; the Future holds the operator's result (a tuple for several).
REMORA_DECL Future<c10::IValue> send_builtin(Agent& agent, BuiltinCall call, CallOptions opts);

// What the callee runs: the operator `op` ("ns::name.overload") on `stack`, checked first.
REMORA_DECL c10::IValue run_builtin(std::string op, std::vector<c10::IValue> stack);

template <class R>
R from_ivalue(c10::IValue v) {
  if constexpr (std::is_same_v<R, c10::IValue>) {
    return v;
  } else if constexpr (std::is_integral_v<R> && !std::is_same_v<R, bool>) {
    return static_cast<R>(v.toInt());
  } else {
    return std::move(v).to<R>();
  }
}

// What the callee of remote<T>(to, op, ...) runs: the value the new RRef holds.
template <class T>
T run_builtin_as(std::string op, std::vector<c10::IValue> stack) {
  return from_ivalue<T>(run_builtin(std::move(op), std::move(stack)));
}

// The TorchScript type a result of C++ type R must have (null for IValue: anything).
template <class R>
c10::TypePtr wanted_type() {
  if constexpr (std::is_same_v<R, c10::IValue>) {
    return nullptr;
  } else if constexpr (std::is_integral_v<R> && !std::is_same_v<R, bool>) {
    return c10::IntType::get();
  } else {
    return c10::getTypePtrCopy<R>();
  }
}

// The arguments as IValues; a Kwargs among them goes to `kwargs`.
template <class... As>
std::vector<c10::IValue> to_ivalues(const Kwargs*& kwargs, As&&... args) {
  std::vector<c10::IValue> out;
  out.reserve(sizeof...(As));
  (
      [&] {
        if constexpr (std::is_same_v<std::remove_cvref_t<As>, Kwargs>)
          kwargs = &args;
        else
          out.emplace_back(std::forward<As>(args));
      }(),
      ...);
  return out;
}

template <class R, class... As>
BuiltinCall prepare_builtin(Agent& agent, std::string_view to, std::string_view op, As&&... args) {
  static_assert(!std::is_void_v<R>, "remora: an operator called by name gives a value: use c10::IValue to ignore it");
  const Kwargs* kw = nullptr;
  auto stack = to_ivalues(kw, std::forward<As>(args)...);
  return match_builtin(agent, to, op, std::move(stack), kw, wanted_type<R>(), type_identity_of<R>.name);
}

}  // namespace detail

// The operator `op` on worker `to`; R is its result as C++ (c10::IValue: untyped). A CallOptions
// may come first among the arguments, a Kwargs last.
template <class R = c10::IValue, class... As>
Future<R> rpc_async(Agent& agent, std::string_view to, std::string_view op, As&&... args) {
  if constexpr (detail::first_is_call_options<As...>::value) {
    return [&]<class O, class... Rest>(O&& opts, Rest&&... rest) {
      auto f = detail::send_builtin(agent, detail::prepare_builtin<R>(agent, to, op, std::forward<Rest>(rest)...), opts);
      if constexpr (std::is_same_v<R, c10::IValue>)
        return f;
      else
        return f.then([](const c10::IValue& v) { return detail::from_ivalue<R>(v); });
    }(std::forward<As>(args)...);
  } else {
    return rpc_async<R>(agent, to, op, CallOptions{}, std::forward<As>(args)...);
  }
}

template <class R = c10::IValue, class... As>
R rpc_sync(Agent& agent, std::string_view to, std::string_view op, As&&... args) {
  auto f = rpc_async<R>(agent, to, op, std::forward<As>(args)...);
  detail::AgentAccess::await_sync(agent, f);
  return std::move(f).get();
}

// An RRef to the operator's result, left on worker `to` (as remote(to, torch.ones, ...)).
template <class T, class... As>
RRef<T> remote(Agent& agent, std::string_view to, std::string_view op, As&&... args) {
  static_assert(!std::is_same_v<T, void>, "remora: remote() of an operator needs the type of its result");
  if constexpr (detail::first_is_call_options<As...>::value) {
    return [&]<class O, class... Rest>(O&& opts, Rest&&... rest) {
      auto call = detail::prepare_builtin<T>(agent, to, op, std::forward<Rest>(rest)...);
      return remote<&detail::run_builtin_as<T>>(agent, to, opts, std::move(call.op), std::move(call.stack));
    }(std::forward<As>(args)...);
  } else {
    return remote<T>(agent, to, op, CallOptions{}, std::forward<As>(args)...);
  }
}

// The same on the process's agent (init_rpc).
template <class R = c10::IValue, class... As>
Future<R> rpc_async(std::string_view to, std::string_view op, As&&... args) {
  return rpc_async<R>(current_agent(), to, op, std::forward<As>(args)...);
}
template <class R = c10::IValue, class... As>
R rpc_sync(std::string_view to, std::string_view op, As&&... args) {
  return rpc_sync<R>(current_agent(), to, op, std::forward<As>(args)...);
}
template <class T, class... As>
RRef<T> remote(std::string_view to, std::string_view op, As&&... args) {
  return remote<T>(current_agent(), to, op, std::forward<As>(args)...);
}

}  // namespace remora

#if REMORA_HEADER_ONLY
#include "remora/dynamic/impl/builtin.ipp"
#endif
