#pragma once
// The agent's messages on top of frames:
//   call:    body = function id (u64), then the arguments
//   reply:   body = the result (nothing for void)
//   error:   body = ErrorCode (u8), exception type, message, origin (forwarded: worker, function)
//   control: body = ControlType (u8), then its fields (hello: rank, name; profile_events: the
//            callee's profiled events as IValues, for the call the header's request id names)
#include <cstdint>
#include <string>

namespace remora::detail {

enum class ErrorCode : std::uint8_t {
  remote_exception = 1,  // the function threw
  unknown_function = 2,  // the callee has no function with that id
  bad_request = 3,       // the arguments could not be decoded as the function's parameters
  forwarded = 4,         // a RemoteError that began elsewhere (origin names its worker and function)
  overloaded = 5,        // refused unrun: too many of the caller's calls are pending on the callee
};

enum class ControlType : std::uint8_t {
  hello = 1,           // first frame on a connection: who is calling
  profile_events = 2,  // a profiled call's events, sent just before its reply
};

}  // namespace remora::detail
