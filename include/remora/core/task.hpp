#pragma once
// Task<T>: the coroutine type of remora. A function declared `remora::Task<T> f(...)` may
// `co_await` futures and other tasks and `co_return` a T. Tasks start at once (eagerly) and are
// Futures of their result, so a caller can wait(), get(), then() or co_await them, and an RPC
// callee that returns one replies when it completes, without holding a pool thread meanwhile.
#include <coroutine>
#include <exception>
#include <utility>

#include "remora/core/future.hpp"

namespace remora {

namespace detail {
template <class T, class Derived>
struct TaskPromiseBase {
  Promise<T> promise;
  Derived get_return_object() { return Derived(promise.get_future()); }
  std::suspend_never initial_suspend() noexcept { return {}; }
  std::suspend_never final_suspend() noexcept { return {}; }
  void unhandled_exception() { promise.set_exception(std::current_exception()); }
};
}  // namespace detail

template <class T>
class Task : public Future<T> {
 public:
  struct promise_type : detail::TaskPromiseBase<T, Task> {
    template <class V = T>
    void return_value(V&& v) {
      this->promise.set_value(std::forward<V>(v));
    }
  };
  explicit Task(Future<T> f) : Future<T>(std::move(f)) {}
};

template <>
class Task<void> : public Future<void> {
 public:
  struct promise_type : detail::TaskPromiseBase<void, Task> {
    void return_void() { this->promise.set_value(); }
  };
  explicit Task(Future<void> f) : Future<void>(std::move(f)) {}
};

}  // namespace remora
