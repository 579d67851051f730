#pragma once
// Remote calls in the user's profiler traces (torch::autograd::profiler, Kineto, or any
// RecordFunction callback), named as PyTorch's RPC names its events: on the caller
// "remora::rpc#<function>(<caller> -> <callee>)", an async span from the send to the answer; on
// the callee "remora::serve#<function>(<caller> -> <callee>)", around the function's run on the
// pool thread. Cost when nothing profiles: one check of libtorch's callback flags per call.
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <ATen/ThreadLocalState.h>
#include <ATen/record_function.h>

#include "remora/agent/detail/call_table.hpp"

namespace remora::detail {

inline std::string profiled_name(std::string_view kind, std::string_view function, std::string_view from,
                                 std::string_view to) {
  std::string n;
  n.reserve(kind.size() + function.size() + from.size() + to.size() + 16);
  n.append("remora::").append(kind).append("#").append(function).append("(").append(from).append(" -> ");
  n.append(to).append(")");
  return n;
}

// `complete`, wrapped in a span of the caller's profiler (when one is recording on this thread
// or globally) that ends once the call is answered, on whichever thread answers.
inline Completion profiled_call(Completion complete, std::string_view function, std::string_view from,
                                std::string_view to) {
  if (!at::hasCallbacks()) return complete;
  auto span = std::make_shared<at::RecordFunction>(at::RecordScope::USER_SCOPE);
  if (!span->isActive()) return complete;
  span->_setAsync();
  span->before(profiled_name("rpc", function, from, to));
  // The span ends under the caller's thread-local state (a thread-local profiler such as
  // torch::autograd::profiler::RecordProfile records only what ends on its own thread's state),
  // as PyTorch's RPC ends its spans.
  return [span = std::move(span), state = at::ThreadLocalState(), complete = std::move(complete)](
             wire::InFrame* f, std::exception_ptr e) mutable {
    {  // ended before the answer is handed over: a caller that stops its profiler when the
       // answer arrives still records the span
      at::ThreadLocalStateGuard guard(state);
      span->end();
    }
    complete(f, e);
  };
}

// A span around serving one call on this thread (RAII; inactive when nothing profiles).
class ServeSpan {
 public:
  ServeSpan(std::string_view function, std::string_view from, std::string_view to) {
    if (!at::hasCallbacks()) return;
    span_.emplace(at::RecordScope::USER_SCOPE);
    if (span_->isActive()) span_->before(profiled_name("serve", function, from, to));
  }

 private:
  std::optional<at::RecordFunction> span_;
};

}  // namespace remora::detail
