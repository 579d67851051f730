#pragma once
// when_all: one future for many. It completes when every input has completed (never earlier,
// so no input is left running unobserved); if any failed, it holds the first failure in
// argument order. It completes on the thread that completes the last input (an agent's I/O
// thread, for calls): its waiters wake at once, with no hop through the worker pool, and its
// continuations run where the inputs' would.
#include <atomic>
#include <cstddef>
#include <memory>
#include <tuple>
#include <vector>

#include "remora/core/future.hpp"

namespace remora {

namespace detail {
// Counts inputs down; the last one to complete runs `done`.
struct Countdown {
  explicit Countdown(std::size_t n) : left(n) {}
  bool arrive() { return left.fetch_sub(1, std::memory_order_acq_rel) == 1; }
  std::atomic<std::size_t> left;
};

// Takes the value out of `f`, which is left empty (moved where nothing else shares it).
template <class T>
stored_t<T> value_of(Future<T>& f) {
  if constexpr (std::is_void_v<T>) {
    std::move(f).get();
    return {};
  } else {
    return std::move(f).get();
  }
}
}  // namespace detail

// Future<std::tuple<...>> of the inputs' values; a Future<void> contributes an empty marker.
template <class... Ts>
Future<std::tuple<detail::stored_t<Ts>...>> when_all(Future<Ts>... fs) {
  using Result = std::tuple<detail::stored_t<Ts>...>;
  struct Shared {
    explicit Shared(Future<Ts>... fs) : inputs(std::move(fs)...) {}
    std::tuple<Future<Ts>...> inputs;
    Promise<Result> promise;
    detail::Countdown countdown{sizeof...(Ts)};
  };
  auto shared = std::make_shared<Shared>(fs...);
  auto out = shared->promise.get_future();
  if constexpr (sizeof...(Ts) == 0) {
    shared->promise.set_value();
  } else {
    auto finish = [shared] {
      try {
        shared->promise.set_value(
            std::apply([](auto&... f) { return Result(detail::value_of(f)...); }, shared->inputs));
      } catch (...) {
        shared->promise.set_exception(std::current_exception());
      }
    };
    std::apply([&](const auto&... f) { (detail::FutureAccess::share_dispatch(shared->promise, f) || ...); },
               shared->inputs);
    (detail::FutureAccess::on_ready_inline(fs, [shared, finish] {
      if (shared->countdown.arrive()) finish();
    }),
     ...);
  }
  return out;
}

// Future<std::vector<T>> (Future<void> for void inputs), values in input order.
template <class T>
auto when_all(std::vector<Future<T>> fs) {
  using Result = std::conditional_t<std::is_void_v<T>, void, std::vector<T>>;
  struct Shared {
    explicit Shared(std::vector<Future<T>> fs) : inputs(std::move(fs)), countdown(inputs.size()) {}
    std::vector<Future<T>> inputs;
    Promise<Result> promise;
    detail::Countdown countdown;
  };
  const std::size_t n = fs.size();
  auto shared = std::make_shared<Shared>(std::move(fs));
  auto out = shared->promise.get_future();
  auto finish = [shared] {
    try {
      if constexpr (std::is_void_v<T>) {
        for (auto& f : shared->inputs) detail::value_of(f);
        shared->promise.set_value();
      } else {
        std::vector<T> values;
        values.reserve(shared->inputs.size());
        for (auto& f : shared->inputs) values.push_back(detail::value_of(f));
        shared->promise.set_value(std::move(values));
      }
    } catch (...) {
      shared->promise.set_exception(std::current_exception());
    }
  };
  if (n == 0) finish();
  for (const auto& f : shared->inputs)
    if (detail::FutureAccess::share_dispatch(shared->promise, f)) break;
  for (auto& f : shared->inputs)
    detail::FutureAccess::on_ready_inline(f, [shared, finish] {
      if (shared->countdown.arrive()) finish();
    });
  return out;
}

}  // namespace remora
