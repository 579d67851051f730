#pragma once
// What runs on an RRef's owner: creating the value (remote), copying it out (to_here), and
// calling its methods (proxies). Each is a plain function registered under an id derived from
// what it serves (the function, the value type, the method), spelled alike by every compiler.
#include <functional>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <typeinfo>

#include "remora/rref/detail/messages.hpp"

namespace remora::detail {

// The value an RRef holds for a function result R: smart pointers are held as the pointee.
template <class R>
struct rref_value {
  using type = R;
};
template <class X>
struct rref_value<std::shared_ptr<X>> {
  using type = X;
};
template <class X, class D>
struct rref_value<std::unique_ptr<X, D>> {
  using type = X;
};
template <class R>
using rref_value_t = typename rref_value<std::remove_cvref_t<R>>::type;

template <class R>
std::shared_ptr<void> hold_value(R&& r) {
  using D = std::remove_cvref_t<R>;
  if constexpr (std::is_same_v<D, std::shared_ptr<rref_value_t<D>>>) {
    return std::static_pointer_cast<void>(std::shared_ptr<rref_value_t<D>>(std::forward<R>(r)));
  } else if constexpr (!std::is_same_v<D, rref_value_t<D>>) {  // unique_ptr
    return std::shared_ptr<rref_value_t<D>>(std::move(r));
  } else {
    return std::make_shared<D>(std::forward<R>(r));
  }
}

constexpr std::uint64_t mix_id(std::string_view tag, std::uint64_t a, std::uint64_t b = 0) {
  std::uint64_t h = fnv1a(tag);
  for (std::uint64_t v : {a, b})
    for (int i = 0; i < 8; ++i) {
      h ^= (v >> (8 * i)) & 0xff;
      h *= 0x100000001b3ull;
    }
  return h;
}

// The exception in flight as the RemoteError every use of a failed RRef raises (an
// UnknownFunction, a refusal of the owner's serving policy, stays one).
inline std::exception_ptr creation_error(const std::string& worker, std::string_view function) {
  try {
    throw;
  } catch (const RemoteError&) {
    return std::current_exception();
  } catch (const UnknownFunction&) {
    return std::current_exception();
  } catch (const std::exception& e) {
    return std::make_exception_ptr(RemoteError(worker, std::string(function), demangle(typeid(e).name()), e.what()));
  } catch (...) {
    return std::make_exception_ptr(RemoteError(worker, std::string(function), "unknown exception", ""));
  }
}

// Completes `state` with the outcome of `make()` (a value, or a Future of one).
template <class Make>
Future<void> create_value(std::shared_ptr<RRefContext> ctx, std::shared_ptr<OwnerState> state,
                          std::string_view function, Make&& make) {
  using R = std::invoke_result_t<Make&>;
  using V = rref_value_t<unwrap_future_t<R>>;
  const std::string worker = ctx->agent().self().name;
  auto finish = [ctx, state, worker, function](auto outcome) {
    try {
      state->set_value(type_identity_of<V>.id, type_identity_of<V>.name, hold_value(std::move(outcome).get()));
    } catch (...) {
      state->set_error(creation_error(worker, function));
    }
    ctx->mark_created(state->id);
  };
  try {
    if constexpr (is_future_v<R>) {
      auto f = make();
      return f.then([finish](Future<unwrap_future_t<R>> done) mutable { finish(std::move(done)); });
    } else {
      finish(make_ready_future<R>(make()));
    }
  } catch (...) {
    state->set_error(creation_error(worker, function));
    ctx->mark_created(state->id);
  }
  return make_ready_future();
}

// remote<F>: records the caller's fork, creates the value, answers when it exists (or failed).
template <auto F, class Sig = decltype(F)>
struct CreateShim;
template <auto F, class R, class... Ps>
struct CreateShim<F, R (*)(Ps...)> {
  static Future<void> call(RRefId id, ForkId fork, bool has_fork, std::decay_t<Ps>... args) {
    auto ctx = serving_rref_context();
    auto state = ctx->owner_state(id, serving_peer);
    if (has_fork) ctx->add_fork(id, fork, serving_peer);
    return create_value(ctx, state, function_identity<F>.name,
                        [&]() -> decltype(auto) { return F(std::move(args)...); });
  }
  static constexpr Identity identity{mix_id("remora/rref/create", function_identity<F>.id),
                                     function_identity<F>.name};
};
template <auto F, class R, class... Ps>
struct CreateShim<F, R (*)(Ps...) noexcept> : CreateShim<F, R (*)(Ps...)> {};

// The value of a created RRef (state->value is ready) as a T: throws its creation's error, or
// if it holds something else.
template <class T>
std::shared_ptr<T> created_value(const std::shared_ptr<OwnerState>& state, const std::shared_ptr<void>& v) {
  if (state->type.load() != type_identity_of<T>.id)
    throw Error("remora: the RRef " + state->id.str() + " holds a " + std::string(state->name) + ", not a " +
                std::string(type_identity_of<T>.name));
  return std::static_pointer_cast<T>(v);
}

// Waits for the value of `id` on this owner and checks it holds a T.
template <class T>
Future<std::shared_ptr<T>> typed_value(const std::shared_ptr<OwnerState>& state) {
  return state->value.then([state](const std::shared_ptr<void>& v) { return created_value<T>(state, v); });
}

// `f(value)` once the value of `id` on this owner exists as a T; at once, without a future in
// between, when it does already (a served call on a created RRef: the usual case).
template <class T, class F>
auto with_typed_value(const std::shared_ptr<OwnerState>& state, F&& f) {
  if (state->value.is_ready())
    return invoke_into_future([&]() -> decltype(auto) { return f(created_value<T>(state, state->value.get())); });
  return typed_value<T>(state).then(std::forward<F>(f));
}

// to_here: a copy of the value.
template <class T>
struct FetchShim {
  static Future<T> call(RRefId id) {
    return typed_value<T>(rref_msg::requested_state(id)).then([](const std::shared_ptr<T>& v) {
      return T(*v);
    });
  }
  static constexpr Identity identity{mix_id("remora/rref/fetch", type_identity_of<T>.id), "RRef::to_here"};
};

// The parts of a member function pointer.
template <class M>
struct method_traits {
  static constexpr bool is_method = false;
};
template <class C, class R, class... Ps>
struct method_traits<R (C::*)(Ps...)> {
  static constexpr bool is_method = true;
  using object = C;
  using raw_result = R;
  using result = unwrap_future_t<R>;
  using args = std::tuple<std::decay_t<Ps>...>;
  static constexpr std::size_t arity = sizeof...(Ps);
  template <class... As>
  static constexpr bool callable_with = sizeof...(As) == sizeof...(Ps) &&
                                        (std::is_constructible_v<std::decay_t<Ps>, As&&> && ...);
  static constexpr bool all_serializable = (Serializable<Ps> && ...);
};
template <class C, class R, class... Ps>
struct method_traits<R (C::*)(Ps...) const> : method_traits<R (C::*)(Ps...)> {};
template <class C, class R, class... Ps>
struct method_traits<R (C::*)(Ps...) noexcept> : method_traits<R (C::*)(Ps...)> {};
template <class C, class R, class... Ps>
struct method_traits<R (C::*)(Ps...) const noexcept> : method_traits<R (C::*)(Ps...)> {};

template <class T, auto M, class... As>
constexpr void check_method() {
  using Tr = method_traits<decltype(M)>;
  static_assert(Tr::is_method, "remora: an RRef proxy calls member functions: call<&Class::method>(args...)");
  if constexpr (Tr::is_method) {
    static_assert(std::is_base_of_v<typename Tr::object, T>,
                  "remora: this method belongs to a class that the RRef's value type does not derive from");
    static_assert(Tr::all_serializable, "remora: a parameter type of this method is not Serializable");
    static_assert(Tr::arity == sizeof...(As), "remora: wrong number of arguments for this method");
    static_assert(Tr::template callable_with<As...>,
                  "remora: an argument cannot be converted to the method's parameter type");
  }
}

// Invokes M on the owner's value with the decoded arguments, once the value exists.
template <class T, auto M, class Args>
auto invoke_on_value(const std::shared_ptr<OwnerState>& state, Args args) {
  return with_typed_value<T>(state, [args = std::move(args)](const std::shared_ptr<T>& obj) mutable {
    return std::apply([&](auto&... a) -> decltype(auto) { return std::invoke(M, *obj, std::move(a)...); }, args);
  });
}

// rpc_sync() / rpc_async() proxies: the method's result.
template <class T, auto M, class Args = typename method_traits<decltype(M)>::args>
struct MethodShim;
template <class T, auto M, class... Ps>
struct MethodShim<T, M, std::tuple<Ps...>> {
  static auto call(RRefId id, Ps... args) {
    return invoke_on_value<T, M>(rref_msg::requested_state(id), std::make_tuple(std::move(args)...));
  }
  static constexpr Identity identity{mix_id("remora/rref/method", type_identity_of<T>.id, function_identity<M>.id),
                                     function_identity<M>.name};
};

// remote() proxy: the method's result becomes a new RRef on the same owner.
template <class T, auto M, class Args = typename method_traits<decltype(M)>::args>
struct RemoteMethodShim;
template <class T, auto M, class... Ps>
struct RemoteMethodShim<T, M, std::tuple<Ps...>> {
  static Future<void> call(RRefId source, RRefId id, ForkId fork, bool has_fork, Ps... args) {
    auto ctx = serving_rref_context();
    auto state = ctx->owner_state(id, serving_peer);
    if (has_fork) ctx->add_fork(id, fork, serving_peer);
    auto result = invoke_on_value<T, M>(rref_msg::requested_state(source), std::make_tuple(std::move(args)...));
    return create_value(ctx, state, function_identity<M>.name, [result] { return result; });
  }
  static constexpr Identity identity{
      mix_id("remora/rref/remote_method", type_identity_of<T>.id, function_identity<M>.id),
      function_identity<M>.name};
};

}  // namespace remora::detail
