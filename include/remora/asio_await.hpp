#pragma once
// Waiting for a remora Future from Asio: `co_await remora::async_wait(f, asio::use_awaitable)`
// inside an asio::awaitable coroutine (or any completion token). The I/O thread is never
// blocked: the handler is posted to its associated executor when the future completes.
#include <exception>
#include <type_traits>
#include <utility>

#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/post.hpp>

#include "remora/core/future.hpp"

namespace remora {

namespace detail {
template <class T>
struct wait_signature {
  static_assert(std::is_default_constructible_v<T>,
                "remora::async_wait needs a default-constructible T (Asio passes a T even on error)");
  using type = void(std::exception_ptr, T);
};
template <>
struct wait_signature<void> {
  using type = void(std::exception_ptr);
};
}  // namespace detail

template <class T, class CompletionToken>
auto async_wait(Future<T> future, CompletionToken&& token) {
  using Signature = typename detail::wait_signature<T>::type;
  // The future rides in the initiation object, not as an initiation argument: use_awaitable
  // moves its arguments through a coroutine of its own, and a moved-from Future is empty.
  return asio::async_initiate<CompletionToken, Signature>(
      [f = std::move(future)](auto handler) mutable {
        auto work = asio::make_work_guard(asio::get_associated_executor(handler));
        auto src = f;
        src.on_ready([f = std::move(f), handler = std::move(handler), work = std::move(work)]() mutable {
          auto ex = work.get_executor();
          asio::post(ex, [f = std::move(f), handler = std::move(handler), work = std::move(work)]() mutable {
            if constexpr (std::is_void_v<T>) {
              handler(f.exception());
            } else if (auto e = f.exception()) {
              handler(e, T{});
            } else {
              handler(std::exception_ptr{}, std::move(f).get());
            }
          });
        });
      },
      token);
}

}  // namespace remora
