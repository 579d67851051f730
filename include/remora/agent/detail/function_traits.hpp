#pragma once
// What remora needs to know of a remotely callable function F: its parameters as they travel
// (decayed: references and const are taken by value on the wire) and its result as the caller
// sees it (Future<T> and Task<T> are flattened to T).
#include <tuple>
#include <type_traits>

#include "remora/core/concepts.hpp"
#include "remora/core/future.hpp"
#include "remora/core/task.hpp"

namespace remora::detail {

template <class T>
struct fn_traits {
  static constexpr bool is_function = false;
};
template <class R, class... Ps>
struct fn_traits<R (*)(Ps...)> {
  static constexpr bool is_function = true;
  using raw_result = R;
  using result = unwrap_future_t<R>;
  using args = std::tuple<std::decay_t<Ps>...>;
  static constexpr std::size_t arity = sizeof...(Ps);
  template <class... As>
  static constexpr bool callable_with = sizeof...(As) == sizeof...(Ps) &&
                                        (std::is_constructible_v<std::decay_t<Ps>, As&&> && ...);
  static constexpr bool all_serializable = (Serializable<Ps> && ...);
};
template <class R, class... Ps>
struct fn_traits<R (*)(Ps...) noexcept> : fn_traits<R (*)(Ps...)> {};

template <class T>
inline constexpr bool result_serializable = std::is_void_v<T> || Serializable<T>;

// The checks every typed call makes, as readable compile errors. remote() leaves the result on
// the callee, so it need not be Serializable there (ResultTravels = false).
template <auto F, bool ResultTravels, class... As>
constexpr void check_call() {
  using Tr = fn_traits<decltype(F)>;
  static_assert(Tr::is_function,
                "remora: a remote function must be a free function or a static member function, given as "
                "rpc_sync<&fn>(...); use a RemoteModule or an RRef proxy for member functions");
  if constexpr (Tr::is_function) {
    static_assert(Tr::all_serializable,
                  "remora: a parameter type of this function is not Serializable (see remora::Serializable: give "
                  "user types a cereal serialize(Archive&) member)");
    static_assert(!ResultTravels || result_serializable<typename Tr::result>,
                  "remora: the result type of this function is not Serializable (remote() can keep it on the "
                  "callee and return an RRef to it)");
    static_assert(Tr::arity == sizeof...(As), "remora: wrong number of arguments for this remote function");
    static_assert(Tr::template callable_with<As...>,
                  "remora: an argument cannot be converted to the function's parameter type");
  }
}

template <auto F, class... As>
constexpr void check_callable() {
  check_call<F, true, As...>();
}

}  // namespace remora::detail
