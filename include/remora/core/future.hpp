#pragma once
// Future<T> and Promise<T>: the result of every asynchronous remora call.
//
// A Future is a shared handle (copyable, like PyTorch's torch.futures.Future). Continuations
// added with then() or co_await run on the thread that completes the future, or at once on the
// caller's thread if it is already complete; keep them short or hand work to a pool.
#include <chrono>
#include <coroutine>
#include <exception>
#include <functional>
#include <memory>
#include <type_traits>
#include <utility>

#include "remora/core/detail/future_state.hpp"
#include "remora/core/errors.hpp"

namespace remora {

template <class T>
class Future;
template <class T>
class Promise;
template <class T>
class Task;

namespace detail {
// Watches `f` for up to `budget` instead of sleeping (for the agent's sync calls).
template <class T>
bool spin_until_ready(const Future<T>& f, std::chrono::microseconds budget);
struct FutureAccess;
template <class T>
struct is_future : std::false_type {};
template <class T>
struct is_future<Future<T>> : std::true_type {};
template <class T>
struct is_future<Task<T>> : std::true_type {};

template <class T>
struct future_value {};
template <class T>
struct future_value<Future<T>> {
  using type = T;
};
template <class T>
struct future_value<Task<T>> {
  using type = T;
};
}  // namespace detail

template <class T>
inline constexpr bool is_future_v = detail::is_future<std::remove_cvref_t<T>>::value;

// The value type of a Future<T> or Task<T>; `T` itself otherwise. This is what a call to a
// function returning Future<T> yields on the caller: the future is flattened.
template <class T>
using unwrap_future_t = typename std::conditional_t<is_future_v<T>, detail::future_value<std::remove_cvref_t<T>>,
                                                    std::type_identity<T>>::type;

template <class T>
class Future {
 public:
  using value_type = T;

  Future() = default;  // not valid(): no state until made by a Promise

  bool valid() const noexcept { return state_ != nullptr; }
  bool is_ready() const { return checked().is_ready(); }
  void wait() const { checked().wait(); }

  // True if the future completed within `d`.
  template <class Rep, class Period>
  bool wait_for(std::chrono::duration<Rep, Period> d) const {
    return checked().wait_for(d);
  }

  // Waits, then returns the value or rethrows the stored exception.
  decltype(auto) get() const& {
    wait();
    rethrow_if_error();
    if constexpr (std::is_void_v<T>) {
      return;
    } else {
      return static_cast<const T&>(state_->value());
    }
  }
  // On a temporary or moved-from handle: moves the value out when nothing else (no other handle,
  // no live Promise) shares it; copies otherwise. A move-only value is always moved out: the
  // first rvalue get() takes it.
  // The handle is left empty.
  T get() && {
    wait();
    auto state = std::move(state_);
    if (state->error()) std::rethrow_exception(state->error());
    if constexpr (!std::is_void_v<T>) {
      if constexpr (std::is_copy_constructible_v<T>) {
        if (state.use_count() != 1) return state->value();
      }
      return std::move(state->value());
    }
  }

  bool has_error() const { return is_ready() && state_->error() != nullptr; }
  // The stored exception; null while pending or when the future holds a value.
  std::exception_ptr exception() const { return is_ready() ? state_->error() : nullptr; }

  // Runs `cb()` once this future is complete, whatever its outcome.
  template <class F>
  void on_ready(F&& cb) const {
    checked().on_ready(detail::UniqueFunction<void()>(std::forward<F>(cb)));
  }

  // Chains `f` after this future and returns a Future of its result.
  //  - f(value) (or f() for Future<void>) runs only on success; an exception skips it and
  //    propagates to the returned future.
  //  - f(Future<T>) runs in every case and receives this (complete) future: handle errors there.
  //  - If f returns a Future<U> or Task<U>, the result is flattened to Future<U>.
  // An exception thrown by f completes the returned future with that exception.
  template <class F>
  auto then(F&& f) const;

  // co_await inside a remora::Task or any C++20 coroutine: resumes on the completing thread.
  auto operator co_await() const {
    struct Awaiter {
      Future self;
      bool await_ready() const { return self.is_ready(); }
      bool await_suspend(std::coroutine_handle<> h) {
        detail::UniqueFunction<void()> resume([h] { h.resume(); });
        return self.state_->add_if_pending(resume);
      }
      T await_resume() { return std::move(self).get(); }
    };
    return Awaiter{*this};
  }

 protected:
  explicit Future(std::shared_ptr<detail::FutureState<T>> s) : state_(std::move(s)) {}

 private:
  friend class Promise<T>;
  template <class U>
  friend class Future;
  template <class U>
  friend bool detail::spin_until_ready(const Future<U>& f, std::chrono::microseconds budget);
  friend struct detail::FutureAccess;

  detail::FutureState<T>& checked() const {
    if (!state_) throw Error("remora: use of an empty Future (default-constructed or moved from)");
    return *state_;
  }
  void rethrow_if_error() const {
    if (state_->error()) std::rethrow_exception(state_->error());
  }

  std::shared_ptr<detail::FutureState<T>> state_;
};

// The writing end of a Future. Move-only: exactly one party completes a future. A Promise
// destroyed before it completed its future completes it with an error, so no waiter hangs.
template <class T>
class Promise {
 public:
  Promise() : state_(std::make_shared<detail::FutureState<T>>()) {}
  Promise(Promise&&) noexcept = default;
  Promise& operator=(Promise&& o) noexcept {
    if (this != &o) {
      abandon();
      state_ = std::move(o.state_);
    }
    return *this;
  }
  Promise(const Promise&) = delete;
  Promise& operator=(const Promise&) = delete;
  ~Promise() { abandon(); }

  Future<T> get_future() const { return Future<T>(state_); }

  // Where the future's continuations run (see FutureState::set_dispatch); default: inline.
  void set_dispatch(typename detail::FutureState<T>::Dispatch dispatch, void* context) {
    state_->set_dispatch(dispatch, context);
  }

  template <class... Args>
  void set_value(Args&&... args) {
    if (!try_set_value(std::forward<Args>(args)...)) already_set();
  }
  void set_exception(std::exception_ptr e) {
    if (!try_set_exception(std::move(e))) already_set();
  }
  template <class E>
  void set_error(E&& e) {
    set_exception(std::make_exception_ptr(std::forward<E>(e)));
  }

  // As above, but return false instead of throwing when the future is already complete: for
  // races such as a reply arriving while its timeout fires.
  template <class... Args>
  bool try_set_value(Args&&... args) {
    return state_ && state_->try_set_value(std::forward<Args>(args)...);
  }
  bool try_set_exception(std::exception_ptr e) {
    return state_ && state_->try_set_exception(std::move(e));
  }

 private:
  [[noreturn]] static void already_set() { throw Error("remora: Promise completed twice"); }
  // The error is only built for a state still pending: most promises are complete by now, and
  // an exception object costs allocations.
  void abandon() {
    if (state_ && !state_->is_ready())
      state_->try_set_exception(
          std::make_exception_ptr(Error("remora: promise abandoned before it was completed")));
  }

  std::shared_ptr<detail::FutureState<T>> state_;
};

// A future that is already complete.
template <class T, class... Args>
Future<T> make_ready_future(Args&&... args) {
  Promise<T> p;
  auto f = p.get_future();
  p.set_value(std::forward<Args>(args)...);
  return f;
}
inline Future<void> make_ready_future() { return make_ready_future<void>(); }

namespace detail {
template <class T>
bool spin_until_ready(const Future<T>& f, std::chrono::microseconds budget) {
  return f.checked().spin_until_ready(budget);
}

// The library's own hooks into a future, which users never need.
struct FutureAccess {
  // Runs `cb()` on the thread that completes `f` (or now, if it is complete), even where `f`'s
  // continuations go to a pool: for bookkeeping that is short and never blocks, such as
  // when_all's countdown, which would otherwise cost a hand-off per input.
  template <class T, class F>
  static void on_ready_inline(const Future<T>& f, F&& cb) {
    UniqueFunction<void()> fn(std::forward<F>(cb));
    if (!f.checked().add_if_pending(fn, true)) fn();
  }
  // Where `f`'s continuations go: {nullptr, nullptr} when they run inline.
  template <class T>
  static std::pair<void (*)(void*, UniqueFunction<void()>), void*> dispatch_of(const Future<T>& f) {
    return f.checked().dispatch();
  }
  // Sends `to`'s continuations where `from`'s go, if `from`'s do not run inline; true if so.
  template <class T, class U>
  static bool share_dispatch(Promise<T>& to, const Future<U>& from) {
    auto [dispatch, context] = from.checked().dispatch();
    if (dispatch) to.set_dispatch(dispatch, context);
    return dispatch != nullptr;
  }
};
}  // namespace detail

template <class T>
Future<T> make_exceptional_future(std::exception_ptr e) {
  Promise<T> p;
  auto f = p.get_future();
  p.set_exception(std::move(e));
  return f;
}

namespace detail {

// Calls f with what a continuation of Future<T> receives: the future, the value, or nothing.
template <class T, class F>
decltype(auto) invoke_continuation(F& f, const Future<T>& src) {
  if constexpr (std::is_invocable_v<F&, Future<T>>) {
    return std::invoke(f, src);
  } else if constexpr (std::is_void_v<T>) {
    static_assert(std::is_invocable_v<F&>,
                  "remora: a continuation of Future<void> must take no argument or a Future<void>");
    src.get();
    return std::invoke(f);
  } else {
    static_assert(std::is_invocable_v<F&, const T&>,
                  "remora: a continuation of Future<T> must take T (or const T&) or a Future<T>");
    return std::invoke(f, src.get());
  }
}

template <class T, class F>
struct continuation_result {
  using raw = decltype(invoke_continuation<T>(std::declval<F&>(), std::declval<const Future<T>&>()));
  using type = unwrap_future_t<std::remove_cvref_t<raw>>;
};

// The outcome of `f()` as a future: its value (a future it returns is the result itself) or
// the exception it threw.
template <class F>
auto invoke_into_future(F&& f) -> Future<unwrap_future_t<std::remove_cvref_t<std::invoke_result_t<F&>>>> {
  using Raw = std::remove_cvref_t<std::invoke_result_t<F&>>;
  using U = unwrap_future_t<Raw>;
  try {
    if constexpr (is_future_v<Raw>) {
      return Future<U>(f());
    } else if constexpr (std::is_void_v<U>) {
      f();
      return make_ready_future();
    } else {
      return make_ready_future<U>(f());
    }
  } catch (...) {
    return make_exceptional_future<U>(std::current_exception());
  }
}

// Completes `p` with the outcome of the (complete) future `src`.
template <class U>
void forward_outcome(Promise<U>& p, Future<U>& src) {
  if (auto e = src.exception()) {
    p.set_exception(e);
  } else if constexpr (std::is_void_v<U>) {
    p.set_value();
  } else {
    p.set_value(std::move(src).get());
  }
}

}  // namespace detail

template <class T>
template <class F>
auto Future<T>::then(F&& f) const {
  using U = typename detail::continuation_result<T, std::decay_t<F>>::type;
  if (is_ready()) {
    // Runs now, as on_ready would, without a promise and a stored continuation in between
    // (a served call's chain of ready futures costs no allocations for them).
    return detail::invoke_into_future([&]() -> decltype(auto) { return detail::invoke_continuation<T>(f, *this); });
  }
  Promise<U> p;
  Future<U> out = p.get_future();
  on_ready([src = *this, f = std::forward<F>(f), p = std::move(p)]() mutable {
    try {
      using Raw = std::remove_cvref_t<decltype(detail::invoke_continuation<T>(f, src))>;
      if constexpr (is_future_v<Raw>) {
        Future<U> inner = detail::invoke_continuation<T>(f, src);
        inner.on_ready([inner, p = std::move(p)]() mutable { detail::forward_outcome(p, inner); });
      } else if constexpr (std::is_void_v<U>) {
        detail::invoke_continuation<T>(f, src);
        p.set_value();
      } else {
        p.set_value(detail::invoke_continuation<T>(f, src));
      }
    } catch (...) {
      p.try_set_exception(std::current_exception());
    }
  });
  return out;
}

}  // namespace remora
