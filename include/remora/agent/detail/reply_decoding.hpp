#pragma once
// What a caller makes of an `error` frame: the typed exception it stands for, naming the worker
// and the function (agent/detail/protocol.hpp gives the frame's fields).
#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include "remora/agent/detail/protocol.hpp"
#include "remora/core/errors.hpp"
#include "remora/wire/value_codec.hpp"

namespace remora::detail {

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
    case ErrorCode::unknown_function:
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
