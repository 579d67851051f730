// Future<T>, Promise<T>, then(), Task<T>, when_all and the Asio bridge.
#include <array>
#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

#include <asio.hpp>
#include <catch2/catch.hpp>

#include "remora/asio_await.hpp"
#include "remora/core/detail/unique_function.hpp"
#include "remora/core/future.hpp"
#include "remora/core/task.hpp"
#include "remora/core/when_all.hpp"

using namespace std::chrono_literals;
using remora::Future;
using remora::Promise;
using remora::Task;

TEST_CASE("Future holds a value set by its Promise", "[future]") {
  Promise<int> p;
  Future<int> f = p.get_future();
  CHECK_FALSE(f.is_ready());
  CHECK_FALSE(f.wait_for(1ms));
  p.set_value(42);
  CHECK(f.is_ready());
  CHECK(f.wait_for(0ms));
  CHECK(f.get() == 42);
  CHECK(f.get() == 42);  // get() on a shared handle does not consume
  CHECK_FALSE(f.has_error());
}

TEST_CASE("Future rethrows the stored exception with its type", "[future]") {
  Promise<std::string> p;
  auto f = p.get_future();
  p.set_error(std::out_of_range("row 7"));
  CHECK(f.has_error());
  CHECK_THROWS_AS(f.get(), std::out_of_range);
  CHECK_THROWS_WITH(f.get(), "row 7");
}

TEST_CASE("Future<void> and an empty Future", "[future]") {
  Promise<void> p;
  auto f = p.get_future();
  p.set_value();
  CHECK_NOTHROW(f.get());
  Future<int> empty;
  CHECK_FALSE(empty.valid());
  CHECK_THROWS_AS(empty.wait(), remora::Error);
}

TEST_CASE("Get() on the only handle moves the value out", "[future]") {
  Future<std::vector<int>> f;
  {
    Promise<std::vector<int>> p;
    f = p.get_future();
    p.set_value(std::vector<int>(1000, 1));
  }
  auto copy = f;  // two handles: must copy
  std::vector<int> a = std::move(copy).get();
  CHECK(a.size() == 1000);
  CHECK(f.get().size() == 1000);
  const int* data = f.get().data();
  std::vector<int> b = std::move(f).get();  // last handle: moved, not copied
  CHECK(b.size() == 1000);
  CHECK(b.data() == data);
}

TEST_CASE("A Promise completes once and an abandoned one fails its future", "[future]") {
  Promise<int> p;
  auto f = p.get_future();
  CHECK(p.try_set_value(1));
  CHECK_FALSE(p.try_set_value(2));
  CHECK_FALSE(p.try_set_exception(std::make_exception_ptr(std::runtime_error("late"))));
  CHECK_THROWS_AS(p.set_value(3), remora::Error);
  CHECK(f.get() == 1);
  CHECK(p.get_future().get() == 1);  // a completed promise still hands out its future

  Future<int> orphan;
  { Promise<int> q; orphan = q.get_future(); }
  REQUIRE(orphan.is_ready());
  CHECK_THROWS_WITH(orphan.get(), Catch::Contains("abandoned"));
}

TEST_CASE("Then() chains values and skips on error and flattens futures", "[future]") {
  Promise<int> p;
  auto f = p.get_future();
  auto doubled = f.then([](int v) { return v * 2; });
  auto text = doubled.then([](int v) { return std::to_string(v); });
  Promise<int> inner;
  auto inner_f = inner.get_future();
  auto flattened = f.then([inner_f](int) { return inner_f; });  // Future<int>, not Future<Future<int>>
  static_assert(std::is_same_v<decltype(flattened), Future<int>>);
  auto voided = f.then([](int) {});
  static_assert(std::is_same_v<decltype(voided), Future<void>>);
  p.set_value(21);
  CHECK(doubled.get() == 42);
  CHECK(text.get() == "42");
  CHECK(voided.is_ready());
  CHECK_FALSE(flattened.is_ready());
  inner.set_value(7);
  CHECK(flattened.get() == 7);

  Promise<int> bad;
  bool ran = false;
  auto skipped = bad.get_future().then([&](int v) { ran = true; return v; });
  auto handled = bad.get_future().then([](Future<int> g) { return g.has_error() ? -1 : g.get(); });
  auto thrown = bad.get_future().then([](Future<int>) -> int { throw std::logic_error("in continuation"); });
  bad.set_error(std::runtime_error("boom"));
  CHECK_THROWS_WITH(skipped.get(), "boom");
  CHECK_FALSE(ran);
  CHECK(handled.get() == -1);
  CHECK_THROWS_AS(thrown.get(), std::logic_error);
}

TEST_CASE("Then() on a complete future runs at once, on this thread, with the same outcomes", "[future]") {
  auto ready = remora::make_ready_future<int>(21);
  const auto caller = std::this_thread::get_id();
  std::thread::id ran_on;
  auto doubled = ready.then([&](int v) {
    ran_on = std::this_thread::get_id();
    return v * 2;
  });
  CHECK(doubled.is_ready());
  CHECK(ran_on == caller);
  CHECK(doubled.get() == 42);
  CHECK(ready.then([](int) {}).is_ready());
  // A continuation that returns a future: the result is that future, pending or complete.
  Promise<int> inner;
  auto flattened = ready.then([f = inner.get_future()](int) { return f; });
  static_assert(std::is_same_v<decltype(flattened), Future<int>>);
  CHECK_FALSE(flattened.is_ready());
  inner.set_value(7);
  CHECK(flattened.get() == 7);
  // Errors: skipped continuations keep the error; a throwing continuation becomes the error.
  auto failed = remora::make_exceptional_future<int>(std::make_exception_ptr(std::runtime_error("boom")));
  bool ran = false;
  CHECK_THROWS_WITH(failed.then([&](int v) { ran = true; return v; }).get(), "boom");
  CHECK_FALSE(ran);
  CHECK(failed.then([](Future<int> g) { return g.has_error() ? -1 : 0; }).get() == -1);
  CHECK_THROWS_AS(ready.then([](int) -> int { throw std::logic_error("in continuation"); }).get(), std::logic_error);
}

TEST_CASE("A future completed on one thread is seen by waiters and continuations on others", "[future]") {
  for (int round = 0; round < 50; ++round) {
    Promise<int> p;
    auto f = p.get_future();
    std::atomic<int> sum{0};
    std::vector<std::thread> waiters;
    for (int i = 0; i < 4; ++i) waiters.emplace_back([f, &sum] { sum += f.get(); });
    std::vector<Future<void>> chained;
    for (int i = 0; i < 4; ++i) chained.push_back(f.then([&sum](int v) { sum += v; }));
    std::thread completer([&p] { p.set_value(1); });
    for (auto& t : waiters) t.join();
    completer.join();
    for (auto& c : chained) c.get();
    CHECK(sum == 8);
  }
}

namespace {
Task<int> add_later(Future<int> a, Future<int> b) {
  int x = co_await a;
  int y = co_await b;
  co_return x + y;
}
Task<void> fail_after(Future<int> a) {
  co_await a;
  throw std::runtime_error("task failed");
}
Task<int> nested(Future<int> a) {
  int v = co_await add_later(a, remora::make_ready_future<int>(10));
  co_return v * 2;
}
}  // namespace

TEST_CASE("Task<T> awaits futures and is itself a future", "[future][task]") {
  Promise<int> a, b;
  Task<int> t = add_later(a.get_future(), b.get_future());
  CHECK_FALSE(t.is_ready());
  a.set_value(1);
  CHECK_FALSE(t.is_ready());
  std::thread other([&] { b.set_value(2); });
  CHECK(t.get() == 3);
  other.join();

  Promise<int> c;
  auto failing = fail_after(c.get_future());
  c.set_value(0);
  CHECK_THROWS_WITH(failing.get(), "task failed");

  Promise<int> d;
  Future<int> n = nested(d.get_future());
  d.set_value(5);
  CHECK(n.get() == 30);
}

TEST_CASE("When_all waits for every input and keeps the first error", "[future][when_all]") {
  Promise<int> a;
  Promise<std::string> b;
  Promise<void> c;
  auto all = remora::when_all(a.get_future(), b.get_future(), c.get_future());
  a.set_value(1);
  c.set_value();
  CHECK_FALSE(all.is_ready());
  b.set_value("two");
  auto [x, y, z] = all.get();
  CHECK(x == 1);
  CHECK(y == "two");
  (void)z;

  std::vector<Promise<int>> ps(5);
  std::vector<Future<int>> fs;
  for (auto& p : ps) fs.push_back(p.get_future());
  auto vec = remora::when_all(fs);
  for (int i = 4; i >= 0; --i) ps[i].set_value(i * i);
  CHECK((vec.get() == std::vector<int>{0, 1, 4, 9, 16}));

  std::vector<Promise<int>> qs(3);
  std::vector<Future<int>> gs;
  for (auto& q : qs) gs.push_back(q.get_future());
  auto failing = remora::when_all(gs);
  qs[1].set_error(std::runtime_error("second"));
  qs[2].set_error(std::runtime_error("third"));
  CHECK_FALSE(failing.is_ready());  // waits for all
  qs[0].set_value(0);
  CHECK_THROWS_WITH(failing.get(), "second");
  CHECK(remora::when_all(std::vector<Future<int>>{}).get().empty());
}

TEST_CASE("When_all completes where its last input completes, and its continuations go where the inputs' go", "[future][when_all]") {
  // A dispatch that queues continuations (as an agent hands them to its pool) until run.
  struct Queue {
    std::vector<remora::detail::UniqueFunction<void()>> jobs;
    static void post(void* self, remora::detail::UniqueFunction<void()> job) {
      static_cast<Queue*>(self)->jobs.push_back(std::move(job));
    }
    void run() {
      auto now = std::move(jobs);
      jobs.clear();
      for (auto& j : now) j();
    }
  } pool;
  std::vector<Promise<int>> ps(3);
  std::vector<Future<int>> fs;
  for (auto& p : ps) {
    p.set_dispatch(&Queue::post, &pool);
    fs.push_back(p.get_future());
  }
  auto all = remora::when_all(fs);
  bool continued = false;
  auto after = all.then([&](std::vector<int> v) {
    continued = true;
    return v.size();
  });
  for (int i = 0; i < 3; ++i) ps[i].set_value(i);
  // Complete without a hop through the pool: a thread waiting on `all` wakes at once...
  CHECK(all.is_ready());
  CHECK((all.get() == std::vector<int>{0, 1, 2}));
  // ...but what the user chained after it still runs on the pool, never on the completing thread.
  CHECK_FALSE(continued);
  CHECK(pool.jobs.size() == 1);
  pool.run();
  CHECK(continued);
  CHECK(after.get() == 3);

  // The same for the tuple form, where only some inputs dispatch (a ready one does not).
  Promise<void> q;
  q.set_dispatch(&Queue::post, &pool);
  auto pair = remora::when_all(remora::make_ready_future<int>(7), q.get_future());
  bool paired = false;
  auto chained = pair.then([&](std::tuple<int, remora::detail::Unit>) { paired = true; });
  q.set_value();
  CHECK(pair.is_ready());
  CHECK_FALSE(paired);
  pool.run();
  CHECK(paired);
  chained.get();
}

TEST_CASE("An Asio coroutine awaits a future without blocking its I/O thread", "[future][asio]") {
  asio::io_context io;
  Promise<int> p;
  auto f = p.get_future();
  std::vector<std::string> order;
  int got = 0;
  std::thread setter;
  asio::co_spawn(io, [&]() -> asio::awaitable<void> {
    order.push_back("waiting");
    got = co_await remora::async_wait(f, asio::use_awaitable);
    order.push_back("resumed");
  }, asio::detached);
  // Runs on the same single I/O thread while the coroutine waits: proves it is not blocked.
  asio::post(io, [&] {
    order.push_back("other work");
    setter = std::thread([&p] { p.set_value(99); });
  });
  io.run();
  setter.join();
  CHECK(got == 99);
  CHECK((order == std::vector<std::string>{"waiting", "other work", "resumed"}));

  asio::io_context io2;
  Promise<void> q;
  std::string error;
  asio::co_spawn(io2, [&]() -> asio::awaitable<void> {
    try {
      co_await remora::async_wait(q.get_future(), asio::use_awaitable);
    } catch (const std::exception& e) {
      error = e.what();
    }
  }, asio::detached);
  q.set_error(remora::Timeout("ps", "add", "no reply within 5 ms"));
  io2.run();
  CHECK(error == "remora: add on worker 'ps' timed out: no reply within 5 ms");
}

TEST_CASE("Watching a future sees another thread complete it, and gives up after its budget", "[future]") {
  using namespace std::chrono_literals;
  remora::Promise<int> p;
  auto f = p.get_future();
  CHECK_FALSE(remora::detail::spin_until_ready(f, 1ms));  // nobody completes it
  std::thread completer([&] {
    std::this_thread::sleep_for(2ms);
    p.set_value(7);
  });
  CHECK(remora::detail::spin_until_ready(f, 10s));
  CHECK(f.get() == 7);
  completer.join();
}

TEST_CASE("UniqueFunction holds small and large move-only targets and destroys each once", "[future]") {
  using remora::detail::UniqueFunction;
  struct Counted {
    int* live;
    explicit Counted(int* l) : live(l) { ++*live; }
    Counted(Counted&& o) noexcept : live(o.live) { ++*live; }
    ~Counted() { --*live; }
  };
  int live = 0;
  {
    auto small_owner = std::make_unique<int>(5);
    std::array<char, 200> big{};
    big[199] = 7;
    UniqueFunction<int(int)> small([c = Counted(&live), p = std::move(small_owner)](int x) { return x + *p; });
    UniqueFunction<int(int)> large([c = Counted(&live), big](int x) { return x + big[199]; });
    CHECK(live == 2);
    CHECK(small(1) == 6);
    CHECK(large(1) == 8);
    // Moves keep one live target each; the moved-from functions are empty.
    UniqueFunction<int(int)> a(std::move(small)), b;
    b = std::move(large);
    CHECK_FALSE(small);
    CHECK_FALSE(large);
    CHECK(live == 2);
    std::vector<UniqueFunction<int(int)>> many;
    for (int i = 0; i < 100; ++i) many.emplace_back([c = Counted(&live), i](int x) { return x + i; });
    CHECK(many[99](1) == 100);  // after the vector moved them while growing
    CHECK(live == 102);
    a = UniqueFunction<int(int)>();
    CHECK(live == 101);
    CHECK(b(2) == 9);
  }
  CHECK(live == 0);
}
