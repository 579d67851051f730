// The agent, in-process: typed calls, self calls, async callees, errors, timeouts, garbage on the
// wire, concurrency and shutdown. Process-level behaviour is in process_test.cpp.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <future>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include <asio.hpp>
#include <catch2/catch.hpp>

#include "agent_support.hpp"
#include "remora/agent/detail/io_loop.hpp"
#include "remora/agent/rendezvous.hpp"
#include "remora/agent/detail/worker_pool.hpp"

using namespace std::chrono_literals;
using remora::test::shutdown_group;
using remora::test::start_group;

namespace fns {
int add(int a, int b) { return a + b; }
torch::Tensor scale(const torch::Tensor& t, double f) { return t * f; }
std::string whoami() { return remora::current_agent().self().name; }
void nothing() {}
int fails(int x) { throw std::out_of_range("index " + std::to_string(x) + " out of range"); }
std::atomic<int> gates_open{0}, gated_running{0};
int gated(int i) {  // answers once the test opens gate i
  ++gated_running;
  while (!(gates_open.load() & (1 << i))) std::this_thread::sleep_for(std::chrono::microseconds(200));
  return i;
}
int sleepy(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}
std::vector<torch::Tensor> split(const std::map<std::string, torch::Tensor>& m) {
  std::vector<torch::Tensor> out;
  for (auto& [k, v] : m) out.push_back(v + 1);
  return out;
}
torch::Tensor data_ptr_probe(torch::Tensor t) {
  t.add_(1);  // mutates the callee's copy only
  return t;
}

std::promise<void>* release_c = nullptr;
int slow_on_c(int x) {
  release_c->get_future().wait_for(20s);
  return x * 10;
}
// B awaits C without holding B's only pool thread.
remora::Task<int> chain_via_c(int x) {
  int from_c = co_await remora::current_agent().rpc_async<&slow_on_c>("c", x);
  co_return from_c + 1;
}
remora::Task<int> doubled_later(int x) { co_return x * 2; }

// Notifications: what each one noted, on the callee.
std::mutex noted_mu;
std::vector<int> noted_values;
void note(int v) {
  std::lock_guard lock(noted_mu);
  noted_values.push_back(v);
}
void note_then_fail(int v) {
  note(v);
  throw std::runtime_error("a notification's failure is not reported");
}
bool was_noted(int v) {
  std::lock_guard lock(noted_mu);
  return std::find(noted_values.begin(), noted_values.end(), v) != noted_values.end();
}
}  // namespace fns

TEST_CASE("Rpc_sync and rpc_async call typed functions on another worker", "[agent]") {
  auto g = start_group({"trainer", "ps"});
  auto& trainer = *g[0];
  CHECK(trainer.rpc_sync<&fns::add>("ps", 1, 2) == 3);
  auto t = torch::arange(4, torch::kFloat32);
  remora::Future<torch::Tensor> f = trainer.rpc_async<&fns::scale>("ps", t, 2.0);
  CHECK(torch::equal(f.get(), t * 2));
  CHECK(trainer.rpc_sync<&fns::whoami>("ps") == "ps");
  trainer.rpc_sync<&fns::nothing>("ps");
  std::map<std::string, torch::Tensor> m{{"a", torch::zeros({2})}, {"b", torch::ones({3})}};
  auto parts = trainer.rpc_sync<&fns::split>("ps", m);
  REQUIRE(parts.size() == 2);
  CHECK(torch::equal(parts[1], torch::full({3}, 2.0f)));
  CHECK(trainer.get_worker_info("ps").id == 1);
  CHECK(trainer.get_worker_info(1u).name == "ps");
  CHECK(trainer.get_worker_infos().size() == 2);
  CHECK_THROWS_WITH(trainer.rpc_sync<&fns::add>("nobody", 1, 2), Catch::Contains("'nobody' is not part"));
  shutdown_group(g);
}

TEST_CASE("Notifications run on the callee and answer nothing, and held ones leave with the next call or a sweep",
          "[agent]") {
  using remora::detail::notify_as;
  auto g = start_group({"a", "b"});
  auto& a = *g[0];
  constexpr auto& note_id = remora::function_identity<&fns::note>;
  CHECK(notify_as<&fns::note>(a, 1, note_id, false, 1));
  CHECK(remora::test::eventually([] { return fns::was_noted(1); }));
  // Held, then a call to the same worker takes it along.
  CHECK(notify_as<&fns::note>(a, 1, note_id, true, 2));
  CHECK(a.rpc_sync<&fns::add>("b", 1, 2) == 3);
  CHECK(remora::test::eventually([] { return fns::was_noted(2); }));
  // Held with no call after it: the sweep sends it.
  CHECK(notify_as<&fns::note>(a, 1, note_id, true, 3));
  CHECK(remora::test::eventually([] { return fns::was_noted(3); }));
  // A failure on the callee comes back to nobody, and nothing waits for an answer.
  CHECK(notify_as<&fns::note_then_fail>(a, 1, remora::function_identity<&fns::note_then_fail>, false, 4));
  CHECK(remora::test::eventually([] { return fns::was_noted(4); }));
  CHECK(a.debug_info().calls_in_flight == 0);
  CHECK(a.rpc_sync<&fns::add>("b", 2, 2) == 4);
  shutdown_group(g);
  // A stopped agent sends none.
  CHECK_FALSE(notify_as<&fns::note>(a, 1, note_id, false, 5));
}

TEST_CASE("A call to self keeps the serialization boundary", "[agent]") {
  auto g = start_group({"solo"});
  CHECK(g[0]->rpc_sync<&fns::add>("solo", 20, 22) == 42);
  CHECK(g[0]->rpc_sync<&fns::whoami>("solo") == "solo");
  auto t = torch::zeros({3});
  auto back = g[0]->rpc_sync<&fns::data_ptr_probe>("solo", t);
  CHECK(torch::equal(t, torch::zeros({3})));  // the caller's tensor is untouched
  CHECK(torch::equal(back, torch::ones({3})));
  g[0]->shutdown();
}

TEST_CASE("A remote exception arrives as RemoteError and the callee keeps serving", "[agent][errors]") {
  auto g = start_group({"a", "b"});
  try {
    g[0]->rpc_sync<&fns::fails>("b", 7);
    FAIL("no exception");
  } catch (const remora::RemoteError& e) {
    CHECK(e.worker() == "b");
    CHECK(e.function() == "fns::fails");
    CHECK(e.remote_type() == "std::out_of_range");
    CHECK(e.remote_message() == "index 7 out of range");
    CHECK_THAT(e.what(), Catch::Contains("fns::fails on worker 'b' threw std::out_of_range: index 7 out of range"));
  }
  CHECK(g[0]->rpc_sync<&fns::add>("b", 2, 3) == 5);
  shutdown_group(g);
}

TEST_CASE("A call that outlives its timeout fails with Timeout and the late reply is dropped", "[agent][errors]") {
  auto g = start_group({"a", "b"});
  // Calls with the default (60 s) deadline first: their table entries are reused for the next
  // calls, which must get deadlines of their own.
  for (int i = 0; i < 10; ++i) CHECK(g[0]->rpc_sync<&fns::add>("b", i, 1) == i + 1);
  auto f = g[0]->rpc_async<&fns::sleepy>("b", remora::CallOptions{50ms}, 400);
  CHECK(f.wait_for(300ms));  // timed out before the reply (400 ms) came
  CHECK_THROWS_AS(f.get(), remora::Timeout);
  CHECK_THROWS_WITH(f.get(), Catch::Contains("fns::sleepy on worker 'b' timed out: no reply within 50 ms"));
  // The late reply (400) arrives while another call is in flight: it is dropped, not taken for
  // that call's answer, it does not change the timed-out future, and the connection stays open.
  auto later = g[0]->rpc_async<&fns::sleepy>("b", 450);
  CHECK(later.get() == 450);
  CHECK_THROWS_AS(f.get(), remora::Timeout);
  CHECK(g[0]->transport_to("b") != "");
  CHECK(g[0]->rpc_sync<&fns::add>("b", 1, 1) == 2);
  CHECK(g[0]->pending_calls() == 0);
  shutdown_group(g);
}

TEST_CASE("A function id the callee does not know is UnknownFunction", "[agent][errors]") {
  auto g = start_group({"a", "b"});
  auto rid = remora::detail::AgentAccess::next_request_id(*g[0]);
  auto frame = remora::wire::encode_frame(remora::wire::FrameKind::call, rid, std::uint64_t{0xdeadbeef}, 1, 2);
  auto f = remora::detail::start_call<int>(*g[0], 1, "ns::missing", rid, std::move(frame), 5s);
  CHECK_THROWS_AS(f.get(), remora::UnknownFunction);
  CHECK_THROWS_WITH(f.get(), Catch::Contains("worker 'b' does not expose ns::missing"));
  shutdown_group(g);
}

TEST_CASE("A callee returning Task awaits another worker without holding a pool thread", "[agent][async]") {
  remora::Options one_thread;
  one_thread.num_worker_threads = 1;
  auto g = start_group({"a", "b", "c"}, one_thread);
  std::promise<void> release;
  fns::release_c = &release;
  auto chained = g[0]->rpc_async<&fns::chain_via_c>("b", 4);
  // B's only pool thread is free while chain_via_c waits for C: another call to B completes.
  CHECK(g[0]->rpc_sync<&fns::add>("b", 1, 2) == 3);
  CHECK_FALSE(chained.is_ready());
  release.set_value();
  CHECK(chained.get() == 41);
  shutdown_group(g);
}

TEST_CASE("Many concurrent callers and replies arrive out of order", "[agent][concurrency]") {
  remora::Options o;
  o.num_worker_threads = 8;  // four gated calls hold four threads
  auto g = start_group({"a", "b"}, o);
  auto& a = *g[0];
  std::vector<std::thread> callers;
  std::atomic<int> wrong{0};
  for (int t = 0; t < 4; ++t)
    callers.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i)
        if (a.rpc_sync<&fns::add>("b", t, i) != t + i) ++wrong;
    });
  // Four calls held on the callee until the test opens their gates, last issued first: each reply
  // arrives while every call issued before it is still unanswered.
  fns::gates_open = 0;
  fns::gated_running = 0;
  struct OpenAll {  // a failed REQUIRE must not leave pool threads spinning
    ~OpenAll() { fns::gates_open = 0xF; }
  } open_all;
  std::vector<remora::Future<int>> held;
  for (int i = 0; i < 4; ++i) held.push_back(a.rpc_async<&fns::gated>("b", i));
  REQUIRE(remora::test::eventually([] { return fns::gated_running == 4; }));
  for (int i = 3; i >= 0; --i) {
    fns::gates_open |= 1 << i;
    CHECK(held[i].get() == i);
    for (int earlier = 0; earlier < i; ++earlier) CHECK_FALSE(held[earlier].is_ready());
  }
  for (auto& c : callers) c.join();
  CHECK(wrong == 0);
  shutdown_group(g);
}

TEST_CASE("Calls that arrive together are run together, and each gets its own reply", "[agent][concurrency]") {
  auto g = start_group({"a", "b"});
  auto& a = *g[0];
  // The first calls show b that these functions are cheap; bursts of them then run in batches
  // (one pool job, one write of all replies). Failures and replies through a Task mix in.
  CHECK(a.rpc_sync<&fns::add>("b", 1, 1) == 2);
  CHECK(a.rpc_sync<&fns::doubled_later>("b", 1) == 2);
  CHECK_THROWS_AS(a.rpc_sync<&fns::fails>("b", 1), remora::RemoteError);
  for (int round = 0; round < 5; ++round) {
    std::vector<remora::Future<int>> sums, doubles, failures;
    for (int i = 0; i < 300; ++i) {
      sums.push_back(a.rpc_async<&fns::add>("b", i, round));
      doubles.push_back(a.rpc_async<&fns::doubled_later>("b", i));
      if (i % 50 == 0) failures.push_back(a.rpc_async<&fns::fails>("b", i));
    }
    int wrong = 0;
    for (int i = 0; i < 300; ++i) wrong += (sums[i].get() != i + round) + (doubles[i].get() != 2 * i);
    CHECK(wrong == 0);
    for (std::size_t k = 0; k < failures.size(); ++k)
      CHECK_THROWS_WITH(failures[k].get(), Catch::Contains("index " + std::to_string(k * 50) + " out of range"));
  }
  // Batching happened (a count of the callee's, not a timing).
  CHECK(remora::detail::AgentAccess::calls_batched(*g[1]) > 0);
  shutdown_group(g);
}

TEST_CASE("Garbage on the listening port closes that connection only", "[agent][errors]") {
  auto g = start_group({"a", "b"});
  const auto port = g[1]->listen_port();
  auto send_raw = [&](std::vector<std::uint8_t> bytes) {
    asio::io_context io;
    asio::ip::tcp::socket s(io);
    s.connect({asio::ip::make_address("127.0.0.1"), port});
    asio::write(s, asio::buffer(bytes));
    std::array<char, 16> buf;
    std::error_code ec;
    s.read_some(asio::buffer(buf), ec);  // the agent answers garbage by closing
    return ec;
  };
  CHECK(send_raw(std::vector<std::uint8_t>(64, 0xAB)) == asio::error::eof);  // bad magic
  remora::wire::FrameHeader h;
  h.kind = 1;
  h.body_bytes = 0xFFFFFFFF;  // larger than allowed
  std::vector<std::uint8_t> oversized(sizeof h);
  std::memcpy(oversized.data(), &h, sizeof h);
  CHECK(send_raw(oversized) != std::error_code{});
  h.body_bytes = 8;
  std::vector<std::uint8_t> call_before_hello(sizeof h + 8, 0);
  std::memcpy(call_before_hello.data(), &h, sizeof h);
  CHECK(send_raw(call_before_hello) == asio::error::eof);
  CHECK(g[0]->rpc_sync<&fns::add>("b", 3, 4) == 7);  // everyone else is still served
  shutdown_group(g);
}

TEST_CASE("Graceful shutdown waits for outstanding work and calls afterwards fail clearly", "[agent][shutdown]") {
  auto g = start_group({"a", "b", "c"});
  std::vector<remora::Future<int>> inflight;
  for (int i = 0; i < 3; ++i) {
    inflight.push_back(g[0]->rpc_async<&fns::sleepy>("b", 100));
    inflight.push_back(g[1]->rpc_async<&fns::sleepy>("c", 150));
    inflight.push_back(g[2]->rpc_async<&fns::sleepy>("a", 50));
  }
  shutdown_group(g);
  for (auto& f : inflight) CHECK_NOTHROW(f.get());
  CHECK_THROWS_WITH(g[0]->rpc_sync<&fns::add>("b", 1, 2), Catch::Contains("has shut down"));
}

TEST_CASE("Non-graceful shutdown fails pending calls at once", "[agent][shutdown]") {
  auto g = start_group({"a", "b"});
  auto f = g[0]->rpc_async<&fns::sleepy>("b", 300);
  auto start = std::chrono::steady_clock::now();
  g[0]->shutdown(false);
  CHECK_THROWS_AS(f.get(), remora::WorkerLost);
  CHECK(std::chrono::steady_clock::now() - start < 5s);
  g[1]->shutdown(false);
}

TEST_CASE("A shutdown barrier that a worker never reaches says which barrier, how many came, and no backtrace",
          "[agent][shutdown]") {
  c10d::HashStore store;
  try {
    remora::detail::sum_over_workers(store, "stop", 3, {0}, 50ms);
    FAIL("the barrier did not time out");
  } catch (const remora::Error& e) {
    const std::string what = e.what();
    CHECK_THAT(what, Catch::Contains("barrier 'stop'") && Catch::Contains("within 50 ms") &&
                         Catch::Contains("1 of 3 had arrived"));
    CHECK_THAT(what, !Catch::Contains("frame #"));
  }
}

TEST_CASE("Rendezvous rejects a duplicate name and a bad rank", "[agent][rendezvous]") {
  remora::Options o;
  o.store = c10::make_intrusive<c10d::HashStore>();
  o.init_timeout = 2s;
  std::string e0, e1;
  std::thread t0([&] {
    try { remora::Agent a("same", 0, 2, o); } catch (const remora::Error& e) { e0 = e.what(); }
  });
  std::thread t1([&] {
    try { remora::Agent a("same", 1, 2, o); } catch (const remora::Error& e) { e1 = e.what(); }
  });
  t0.join();
  t1.join();
  CHECK_THAT(e0, Catch::Contains("ranks 0 and 1 both joined as 'same'"));
  CHECK_THAT(e1, Catch::Contains("ranks 0 and 1 both joined as 'same'"));
  CHECK_FALSE(e0.empty());
  CHECK_FALSE(e1.empty());
  CHECK_THROWS_WITH(remora::Agent("x", 5, 2, o), Catch::Contains("outside world size"));
}

namespace {
// One worker's view of a shared store, counting the reads it makes.
class CountingStore : public c10d::Store {
 public:
  explicit CountingStore(c10::intrusive_ptr<c10d::Store> base) : base_(std::move(base)) {}
  void set(const std::string& k, const std::vector<uint8_t>& v) override {
    ++ops;
    base_->set(k, v);
  }
  std::vector<uint8_t> compareSet(const std::string& k, const std::vector<uint8_t>& a,
                                  const std::vector<uint8_t>& b) override {
    return base_->compareSet(k, a, b);
  }
  std::vector<uint8_t> get(const std::string& k) override {
    ++gets, ++ops;
    return base_->get(k);
  }
  int64_t add(const std::string& k, int64_t v) override { return ++ops, base_->add(k, v); }
  bool deleteKey(const std::string& k) override { return base_->deleteKey(k); }
  bool check(const std::vector<std::string>& k) override { return ++ops, base_->check(k); }
  int64_t getNumKeys() override { return base_->getNumKeys(); }
  void wait(const std::vector<std::string>& k) override { ++ops, base_->wait(k); }
  void wait(const std::vector<std::string>& k, const std::chrono::milliseconds& t) override { ++ops, base_->wait(k, t); }
  // A pure virtual of libtorch 2.x's Store (no `override`: 1.13's Store has none); the copy
  // counts apart.
  c10::intrusive_ptr<c10d::Store> clone() { return c10::make_intrusive<CountingStore>(base_); }
  std::atomic<int> gets{0};
  std::atomic<int> ops{0};  // of every kind

 private:
  c10::intrusive_ptr<c10d::Store> base_;
};
}  // namespace

TEST_CASE("Rendezvous reads one roster: three store operations per worker, one more read per rank at rank 0",
          "[agent][rendezvous]") {
  constexpr int n = 12;
  auto shared = c10::make_intrusive<c10d::HashStore>();
  std::vector<c10::intrusive_ptr<CountingStore>> views;
  std::vector<std::unique_ptr<remora::Agent>> agents(n);
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) views.push_back(c10::make_intrusive<CountingStore>(shared));
  for (int i = 0; i < n; ++i)
    threads.emplace_back([&, i] {
      remora::Options o;
      o.store = views[i];
      o.init_timeout = 20s;
      agents[i] = std::make_unique<remora::Agent>("r" + std::to_string(i), i, n, o);
    });
  for (auto& t : threads) t.join();
  CHECK(views[0]->gets.load() <= n + 1);  // each rank's key
  CHECK(views[0]->ops.load() <= n + 3);  // its key, the wait, the reads, the roster
  for (int i = 1; i < n; ++i) {
    CHECK(views[i]->gets.load() == 1);  // the roster
    CHECK(views[i]->ops.load() == 3);   // its key, the wait for the roster, the roster
  }
  CHECK(agents[n - 1]->rpc_sync<&fns::add>("r0", 2, 3) == 5);
  remora::test::shutdown_group(agents);
}

TEST_CASE("Calls answer alike whether callers, workers and I/O threads watch or sleep at once", "[agent]") {
  using us = std::chrono::microseconds;
  struct Watches {
    us sync, worker, io;
  };
  for (auto w : {Watches{us(0), us(0), us(0)}, Watches{us(200), us(200), us(200)}, Watches{us(200), us(0), us(0)},
                 Watches{us(0), us(200), us(0)}, Watches{us(0), us(0), us(200)}}) {
    INFO("sync " << w.sync.count() << " worker " << w.worker.count() << " io " << w.io.count());
    remora::Options o;
    o.sync_watch = w.sync;
    o.worker_watch = w.worker;
    o.io_watch = w.io;
    auto g = start_group({"trainer", "ps"}, o);
    auto& trainer = *g[0];
    for (int i = 0; i < 200; ++i) REQUIRE(trainer.rpc_sync<&fns::add>("ps", i, 1) == i + 1);
    // Answers slower than the watch (the caller sleeps after it) and failures still arrive.
    CHECK(trainer.rpc_sync<&fns::sleepy>("ps", 5) == 5);
    CHECK_THROWS_AS(trainer.rpc_sync<&fns::fails>("ps", 3), remora::RemoteError);
    // A pause longer than every watch: the next call finds sleeping threads and wakes them.
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    CHECK(trainer.rpc_sync<&fns::add>("ps", 2, 3) == 5);
    std::vector<remora::Future<int>> fs;
    for (int i = 0; i < 300; ++i) fs.push_back(trainer.rpc_async<&fns::add>("ps", i, i));
    for (int i = 0; i < 300; ++i) REQUIRE(fs[i].get() == 2 * i);
    shutdown_group(g);
  }
  remora::Options bad;
  bad.store = c10::make_intrusive<c10d::HashStore>();
  bad.sync_watch = us(-1);
  CHECK_THROWS_WITH(remora::Agent("a", 0, 1, bad), Catch::Contains("sync_watch must not be negative"));
  bad.sync_watch = us(0);
  bad.worker_watch = us(-1);
  CHECK_THROWS_WITH(remora::Agent("a", 0, 1, bad), Catch::Contains("worker_watch must not be negative"));
  bad.worker_watch = us(0);
  bad.io_watch = us(-1);
  CHECK_THROWS_WITH(remora::Agent("a", 0, 1, bad), Catch::Contains("io_watch must not be negative"));
}

TEST_CASE("The call table's spare nodes are reused with their new key and value", "[agent]") {
  using Deadlines = std::multimap<int, int>;
  Deadlines m;
  remora::detail::NodeCache<Deadlines, 1> spare;
  auto first = spare.emplace(m, 5, 50);
  spare.emplace(m, 1, 10);
  const auto* node = &*first;
  spare.keep(m.extract(first));
  auto again = spare.emplace(m, 3, 30);
  CHECK(&*again == node);  // the same node, now holding (3, 30), in its new place
  CHECK(std::vector<std::pair<const int, int>>(m.begin(), m.end()) ==
        std::vector<std::pair<const int, int>>{{1, 10}, {3, 30}});
  spare.keep(m.extract(m.begin()));
  spare.keep(m.extract(m.begin()));  // over Max: freed, not kept
  CHECK(m.empty());

  std::unordered_map<int, int> table;
  remora::detail::NodeCache<std::unordered_map<int, int>> spare_entries;
  spare_entries.emplace(table, 1, 2);
  spare_entries.keep(table.extract(1));
  auto it = spare_entries.emplace(table, 7, 14);
  CHECK(it->first == 7);
  CHECK(table.size() == 1);
  CHECK(table.at(7) == 14);
}

TEST_CASE("The worker pool runs every job, watching or not, and join runs what jobs post", "[agent][pool]") {
  for (auto watch : {std::chrono::microseconds(0), std::chrono::microseconds(200)}) {
    INFO("watch " << watch.count());
    std::atomic<int> ran{0};
    {
      remora::detail::WorkerPool pool(3, watch);
      // From several threads at once.
      std::vector<std::thread> posters;
      for (int t = 0; t < 4; ++t)
        posters.emplace_back([&] {
          for (int i = 0; i < 500; ++i) pool.post([&] { ++ran; });
        });
      for (auto& t : posters) t.join();
      // One at a time, with pauses longer than the watch: each finds the workers asleep.
      for (int i = 0; i < 3; ++i) {
        std::promise<void> done;
        pool.post([&] {
          ++ran;
          done.set_value();
        });
        CHECK(done.get_future().wait_for(5s) == std::future_status::ready);
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
      // Jobs that post jobs, still running when join starts.
      pool.post([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        for (int i = 0; i < 10; ++i)
          pool.post([&] {
            ++ran;
            pool.post([&] { ++ran; });
          });
      });
      pool.join();
    }
    CHECK(ran == 2000 + 3 + 20);
  }
}

TEST_CASE("An I/O loop that watches runs handlers and timers, and ends when its work does", "[agent][io]") {
  for (auto watch : {std::chrono::microseconds(0), std::chrono::microseconds(200)}) {
    INFO("watch " << watch.count());
    asio::io_context io;
    auto work = asio::make_work_guard(io);
    remora::detail::IoLoop loop(io, watch);
    std::vector<std::thread> threads;
    for (int t = 0; t < 2; ++t) threads.emplace_back([&] { loop.run(); });
    std::atomic<int> ran{0};
    for (int i = 0; i < 1000; ++i) asio::post(io, [&] { ++ran; });
    // A timer longer than the watch: the loop has gone to sleep in epoll when it fires.
    std::promise<void> fired;
    asio::steady_timer timer(io, std::chrono::milliseconds(5));
    timer.async_wait([&](std::error_code) { fired.set_value(); });
    CHECK(fired.get_future().wait_for(5s) == std::future_status::ready);
    work.reset();
    for (auto& t : threads) t.join();
    CHECK(ran == 1000);
    CHECK(io.stopped());
  }
}

namespace fns {
// A user's type: its cereal load is user code, and records whether it ran on an I/O thread.
std::atomic<int> loads_on_io{0}, loads{0};
struct Report {
  int value = 0;
  template <class Archive>
  void save(Archive& ar) const {
    ar(value);
  }
  template <class Archive>
  void load(Archive& ar) {
    ar(value);
    ++loads;
    if (remora::detail::on_io_thread) ++loads_on_io;
  }
};
Report report(int v) { return Report{v}; }
int nested_report(int v) {  // a served function that waits for a user type from another worker
  return remora::current_agent().rpc_sync<&report>("c", v).value;
}
torch::Tensor twice(torch::Tensor t) { return t * 2; }
}  // namespace fns

TEST_CASE("A reply's user type decodes off the I/O threads", "[agent][threads]") {
  auto g = start_group({"a", "b"});
  fns::loads = fns::loads_on_io = 0;
  for (int i = 0; i < 50; ++i) CHECK(g[0]->rpc_sync<&fns::report>("b", i).value == i);
  std::vector<remora::Future<fns::Report>> many;
  for (int i = 0; i < 50; ++i) many.push_back(g[0]->rpc_async<&fns::report>("b", i));
  for (int i = 0; i < 50; ++i) CHECK(many[i].get().value == i);
  CHECK(fns::loads == 100);  // one per reply
  CHECK(fns::loads_on_io == 0);
  // Tensors and numbers keep the short way (decoded where they are read), and still arrive.
  CHECK(torch::equal(g[0]->rpc_sync<&fns::twice>("b", torch::ones({3})), torch::full({3}, 2.0)));
  static_assert(remora::detail::decodes_without_user_code<std::vector<std::tuple<int, torch::Tensor>>>);
  static_assert(!remora::detail::decodes_without_user_code<fns::Report>);
  static_assert(!remora::detail::decodes_without_user_code<std::optional<c10::IValue>>);
  shutdown_group(g);
}

TEST_CASE("Served functions that all wait for user-type replies do not starve their own decoding",
          "[agent][threads]") {
  // Every pool thread of b sits in a sync call whose reply decodes with user code: that decoding
  // must not need one of those threads.
  remora::Options o;
  o.num_worker_threads = 2;
  o.rpc_timeout = std::chrono::seconds(20);
  auto g = start_group({"a", "b", "c"}, o);
  std::vector<remora::Future<int>> calls;
  for (int i = 0; i < 8; ++i) calls.push_back(g[0]->rpc_async<&fns::nested_report>("b", i));
  for (int i = 0; i < 8; ++i) CHECK(calls[i].get() == i);  // starved: Timeout after 20 s
  shutdown_group(g);
}

