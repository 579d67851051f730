#pragma once
// Stream<T>: the results of a group call in the order they finish (Monarch's stream), each with
// the index of the member that gave it (row-major in the group's mesh).
//
//   remora::Stream<Traj> s = envs.stream<&Env::rollout>(128);
//   while (auto r = s.next()) use(r->index, r->value);   // blocking
//   while (auto r = co_await s.next_async()) ...          // in a Task
//
// A member's failure comes out in its turn: that next() throws it (WorkerLost for a lost
// member) and the stream goes on with the others. Copies of a Stream share its results: each
// result is handed out once. Cost: one lock per result; nothing waits on an I/O thread.
#include <cstddef>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "remora/core/errors.hpp"
#include "remora/core/future.hpp"

namespace remora {

template <class T>
class Stream {
  static_assert(!std::is_void_v<T>, "remora: stream() of a method that returns void: use call_async()");

 public:
  struct Item {
    std::size_t index;  // the member's position in the group (row-major)
    T value;
  };

  Stream() = default;  // holds nothing: next() gives std::nullopt
  // The results of `futures`, member i's at index i, as they complete.
  explicit Stream(std::vector<Future<T>> futures) : state_(std::make_shared<State>(futures.size())) {
    for (const auto& f : futures)  // (a call that failed before it was sent has no dispatch)
      if (auto d = detail::FutureAccess::dispatch_of(f); d.first) {
        state_->dispatch = d;
        break;
      }
    for (std::size_t i = 0; i < futures.size(); ++i) {
      auto f = futures[i];
      detail::FutureAccess::on_ready_inline(f, [state = state_, i, f]() mutable { state->arrived(i, std::move(f)); });
    }
  }

  // The next result to finish, waiting for it; std::nullopt once every result was handed out.
  // Rethrows a member's failure in its turn.
  std::optional<Item> next() {
    auto f = next_async();
    return std::move(f).get();
  }
  // The same as a future. One that has to wait completes on the agent's pool, never on an I/O
  // thread; one whose result is already there completes here, at once.
  Future<std::optional<Item>> next_async() {
    if (!state_) return make_ready_future<std::optional<Item>>(std::nullopt);
    return state_->take();
  }
  // Results not yet handed out (by next or to a waiting next_async).
  std::size_t remaining() const {
    if (!state_) return 0;
    std::lock_guard lock(state_->mu);
    return state_->untaken - state_->waiting.size();
  }

 private:
  struct State {
    explicit State(std::size_t n) : untaken(n) {}
    std::mutex mu;
    std::deque<std::pair<std::size_t, Future<T>>> done;  // finished, not handed out
    std::deque<Promise<std::optional<Item>>> waiting;     // next_async() calls before their result
    std::size_t untaken;                                  // results not handed out
    // Where the inputs' continuations go (the agent's pool): a result that arrives for a waiting
    // next_async() is handed out there, so neither the copy of the value nor what the waiter
    // resumes runs on the I/O thread that completed the call.
    std::pair<void (*)(void*, detail::UniqueFunction<void()>), void*> dispatch{nullptr, nullptr};

    static void hand_out(Promise<std::optional<Item>>& p, std::size_t i, Future<T>& f) {
      if (auto e = f.exception()) return p.set_exception(e);
      try {
        p.set_value(Item{i, std::move(f).get()});
      } catch (...) {
        p.set_exception(std::current_exception());
      }
    }
    void arrived(std::size_t i, Future<T> f) {
      std::unique_lock lock(mu);
      if (waiting.empty()) {
        done.emplace_back(i, std::move(f));
        return;
      }
      auto p = std::move(waiting.front());
      waiting.pop_front();
      --untaken;
      lock.unlock();
      if (!dispatch.first) return hand_out(p, i, f);
      dispatch.first(dispatch.second, [p = std::move(p), i, f = std::move(f)]() mutable { hand_out(p, i, f); });
    }
    // (On the caller's thread: a result already there is handed out here.)
    Future<std::optional<Item>> take() {
      std::unique_lock lock(mu);
      Promise<std::optional<Item>> p;
      auto out = p.get_future();
      if (!done.empty()) {
        auto [i, f] = std::move(done.front());
        done.pop_front();
        --untaken;
        lock.unlock();
        hand_out(p, i, f);
      } else if (untaken == waiting.size()) {  // every result left is promised to an earlier call
        lock.unlock();
        p.set_value(std::nullopt);
      } else {
        waiting.push_back(std::move(p));
      }
      return out;
    }
  };
  std::shared_ptr<State> state_;
};

}  // namespace remora
