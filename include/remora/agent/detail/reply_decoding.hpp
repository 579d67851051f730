#pragma once
// What a caller makes of an `error` frame: the typed exception it stands for, naming the worker
// and the function (agent/detail/protocol.hpp gives the frame's fields); and which replies decode
// on the I/O thread that read them.
#include <array>
#include <cstdint>
#include <exception>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "remora/agent/detail/protocol.hpp"
#include "remora/core/errors.hpp"
#include "remora/wire/value_codec.hpp"

namespace remora::detail {

// Whether decoding a T runs only remora's and libtorch's own code, quickly and without blocking:
// numbers, strings, tensors, and the standard containers of those. Such a reply is decoded on the
// I/O thread that read it (its caller wakes at once). Any other type (a user's struct, whose
// cereal `load` is user code; an IValue, which may hold a torchbind object rebuilt by its
// `__setstate__`; an RRef) is decoded on the agent's decoder thread: user code never runs on an I/O thread.
template <class T>
struct DecodesWithoutUserCode
    : std::bool_constant<std::is_arithmetic_v<T> || std::is_enum_v<T> || std::is_same_v<T, std::string> ||
                         std::is_same_v<T, at::Tensor>> {};
template <>
struct DecodesWithoutUserCode<void> : std::true_type {};
template <class T, class A>
struct DecodesWithoutUserCode<std::vector<T, A>> : DecodesWithoutUserCode<T> {};
template <class T, std::size_t N>
struct DecodesWithoutUserCode<std::array<T, N>> : DecodesWithoutUserCode<T> {};
template <class T>
struct DecodesWithoutUserCode<std::optional<T>> : DecodesWithoutUserCode<T> {};
template <class A, class B>
struct DecodesWithoutUserCode<std::pair<A, B>>
    : std::bool_constant<DecodesWithoutUserCode<A>::value && DecodesWithoutUserCode<B>::value> {};
template <class... Ts>
struct DecodesWithoutUserCode<std::tuple<Ts...>> : std::bool_constant<(DecodesWithoutUserCode<Ts>::value && ...)> {};
template <class K, class V, class C, class A>
struct DecodesWithoutUserCode<std::map<K, V, C, A>>
    : std::bool_constant<DecodesWithoutUserCode<K>::value && DecodesWithoutUserCode<V>::value> {};
template <class K, class V, class H, class E, class A>
struct DecodesWithoutUserCode<std::unordered_map<K, V, H, E, A>>
    : std::bool_constant<DecodesWithoutUserCode<K>::value && DecodesWithoutUserCode<V>::value> {};
template <class T>
inline constexpr bool decodes_without_user_code = DecodesWithoutUserCode<std::remove_cv_t<T>>::value;

// The exception an error frame from `worker` carries for a call of `function`. Throws
// ProtocolError when the frame does not decode.
inline std::exception_ptr error_of_reply(const wire::InFrame& reply, const wire::Limits& limits,
                                         const std::string& worker, std::string_view function) {
  std::uint8_t code;
  std::string type, message;
  std::vector<std::string> origin;
  wire::decode_into(reply, limits, code, type, message, origin);
  const std::string fn(function);
  switch (static_cast<ErrorCode>(code)) {
    case ErrorCode::forwarded:
      if (origin.size() == 2) return std::make_exception_ptr(RemoteError(origin[0], origin[1], type, message));
      [[fallthrough]];
    case ErrorCode::unknown_function:  // origin: what the callee refused, when it says (a model load)
      if (origin.size() == 2 && code == static_cast<std::uint8_t>(ErrorCode::unknown_function))
        return std::make_exception_ptr(UnknownFunction(worker, origin[1], message));
      return std::make_exception_ptr(UnknownFunction(worker, fn, message));
    case ErrorCode::overloaded:
      return std::make_exception_ptr(Overloaded(worker, fn, message));
    case ErrorCode::bad_request:
      return std::make_exception_ptr(
          RemoteError(worker, fn, type, "the arguments did not decode as its parameters: " + message));
    default:
      return std::make_exception_ptr(RemoteError(worker, fn, type, message));
  }
}

}  // namespace remora::detail
