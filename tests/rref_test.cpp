// RRefs, in-process groups: creation, to_here, forks to third workers and back to the owner,
// nested RRefs, self-owned RRefs, errors in creation, timeouts, proxies, many hops, dead owners
// and dead users. Every scenario ends by checking that no owner still holds a value.
// (Behaviours ported from PyTorch's rpc_test.py RRef tests.)
#include <atomic>
#include <chrono>
#include <optional>
#include <sstream>
#include <thread>

#include <catch2/catch.hpp>

#include "agent_support.hpp"
#include "remora/rref/remote.hpp"

using namespace std::chrono_literals;
using remora::RRef;
using remora::test::shutdown_group;
using remora::test::eventually;
using remora::test::start_group;

namespace rr {

torch::Tensor make_table(std::int64_t rows, std::int64_t cols) { return torch::ones({rows, cols}); }
torch::Tensor add(torch::Tensor a, torch::Tensor b) { return a + b; }
int add_ints(int a, int b) { return a + b; }
torch::Tensor fails_to_make(int x) { throw std::invalid_argument("cannot make " + std::to_string(x)); }
torch::Tensor slow_table(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return torch::zeros({1});
}

std::int64_t row_count(RRef<torch::Tensor> r) { return r.to_here().size(0); }
// On the owner: the RRef it receives is the owner's own.
double local_sum(RRef<torch::Tensor> r) {
  if (!r.is_owner()) throw std::logic_error("expected to be the owner");
  return r.local_value().sum().item<double>();
}
std::string owner_seen_by_callee(RRef<torch::Tensor> r) { return r.owner_name(); }
RRef<torch::Tensor> echo_rref(RRef<torch::Tensor> r) { return r; }

// Returns RRefs this worker made on another worker: RRefs inside results.
RRef<torch::Tensor> make_on(std::string where, std::int64_t n) {
  return remora::remote<&make_table>(where, n, std::int64_t{2});
}
std::vector<RRef<torch::Tensor>> nested_rrefs(std::string where) {
  return {remora::remote<&add>(where, torch::ones({2}), torch::ones({2})),
          remora::remote<&add>(where, torch::ones({2}), 2 * torch::ones({2}))};
}

// Passes the RRef along `path` (one hop per worker), then sums it at the end.
double hop(RRef<torch::Tensor> r, std::vector<std::string> path) {
  if (path.empty()) return r.to_here().sum().item<double>();
  auto next = path.back();
  path.pop_back();
  return remora::current_agent().rpc_sync<&hop>(next, r, path);
}

struct Counter {
  std::mutex mu;
  int total = 0;
  int add(int k) {
    std::lock_guard lock(mu);
    return total += k;
  }
  int get() const { return total; }
  void reset() { total = 0; }
  remora::Future<int> add_later(int k) { return remora::make_ready_future<int>(add(k)); }
};
std::shared_ptr<Counter> make_counter() { return std::make_shared<Counter>(); }

// Records whether the owner dropped it because of a message (on a pool thread serving a call)
// rather than by clearing its tables when it stopped.
std::atomic<int> freed_by_message{0};
struct Tracked {
  ~Tracked() {
    if (remora::detail::serving_agent) ++freed_by_message;
  }
};
std::unique_ptr<Tracked> make_tracked() { return std::make_unique<Tracked>(); }

std::optional<RRef<torch::Tensor>> kept_by_c;
void keep(RRef<torch::Tensor> r) { kept_by_c = r; }

}  // namespace rr

namespace {

// No owner holds a value, no fork, no reference: what every scenario must end with.
void check_no_leaks(std::vector<std::unique_ptr<remora::Agent>>& g) {
  for (auto& a : g) {
    INFO("worker " << a->self().name);
    auto s = remora::rref_stats(*a);
    CHECK(s.owned_values == 0);
    CHECK(s.forks == 0);
    CHECK(s.pending_children == 0);
  }
}

std::int64_t owned(remora::Agent& a) { return remora::rref_stats(a).owned_values; }

// Every agent's RRef tables, for the message of a failed leak check.
std::string tables(std::vector<std::unique_ptr<remora::Agent>>& g) {
  std::ostringstream out;
  for (auto& a : g) {
    auto s = remora::rref_stats(*a);
    out << a->self().name << ": owned " << s.owned_values << ", forks " << s.forks << ", users " << s.user_rrefs
        << ", pending children " << s.pending_children << "; ";
  }
  return out.str();
}

}  // namespace

TEST_CASE("Remote returns at once and to_here copies the value", "[rref]") {
  auto g = start_group({"a", "b"});
  {
    RRef<torch::Tensor> r = remora::remote<&rr::make_table>(*g[0], "b", std::int64_t{3}, std::int64_t{4});
    CHECK(r.valid());
    CHECK_FALSE(r.is_owner());
    CHECK(r.owner_name() == "b");
    CHECK(r.owner().id == 1);
    torch::Tensor t = r.to_here();
    CHECK(torch::equal(t, torch::ones({3, 4})));
    CHECK(torch::equal(r.to_here_async().get(), torch::ones({3, 4})));
    CHECK(eventually([&] { return r.confirmed_by_owner(); }));
    CHECK(owned(*g[1]) == 1);
    CHECK_THROWS_WITH(r.local_value(), Catch::Contains("owned by 'b'") && Catch::Contains("to_here"));
  }
  // The last reference is gone: the owner lets go of the value.
  CHECK(eventually([&] { return owned(*g[1]) == 0; }));
  shutdown_group(g);
  check_no_leaks(g);
}

TEST_CASE("An RRef passed to a third worker and back to its owner", "[rref]") {
  auto g = start_group({"a", "b", "c"});
  auto& a = *g[0];
  {
    auto r = remora::remote<&rr::make_table>(a, "b", std::int64_t{5}, std::int64_t{2});
    CHECK(a.rpc_sync<&rr::row_count>("c", r) == 5);       // fork to a third worker
    CHECK(a.rpc_sync<&rr::owner_seen_by_callee>("c", r) == "b");
    CHECK(a.rpc_sync<&rr::local_sum>("b", r) == 10.0);    // back to the owner: its own value
    auto back = a.rpc_sync<&rr::echo_rref>("c", r);       // out and back in a result
    CHECK(back == r);
    CHECK(torch::equal(back.to_here(), torch::ones({5, 2})));
  }
  CHECK(eventually([&] { return owned(*g[1]) == 0; }));
  CHECK(eventually([&] { return remora::rref_stats(*g[2]).user_rrefs == 0; }));
  shutdown_group(g);
  check_no_leaks(g);
}

TEST_CASE("Self-owned RRefs: remote to self, forked out, returned", "[rref]") {
  auto g = start_group({"a", "b"});
  auto& a = *g[0];
  {
    auto r = remora::remote<&rr::make_table>(a, "a", std::int64_t{2}, std::int64_t{2});
    CHECK(r.is_owner());
    CHECK(r.confirmed_by_owner());
    CHECK(r.local_value().sum().item<double>() == 4.0);
    CHECK(torch::equal(r.to_here(), torch::ones({2, 2})));
    CHECK(a.rpc_sync<&rr::row_count>("b", r) == 2);  // the owner forks to a user
    auto back = a.rpc_sync<&rr::echo_rref>("b", r);
    CHECK(back.is_owner());
    CHECK(&back.local_value() == &r.local_value());  // the same value, not a copy
    CHECK(a.rpc_sync<&rr::local_sum>("a", r) == 4.0);  // to itself through a call
    CHECK(owned(a) == 1);
  }
  CHECK(eventually([&] { return owned(a) == 0; }));
  shutdown_group(g);
  check_no_leaks(g);
}

TEST_CASE("RRefs made by a callee come back in results, nested in containers", "[rref]") {
  auto g = start_group({"a", "b", "c"});
  auto& a = *g[0];
  {
    // b makes an RRef on c and returns it to a.
    RRef<torch::Tensor> r = a.rpc_sync<&rr::make_on>("b", std::string("c"), std::int64_t{7});
    CHECK(r.owner_name() == "c");
    CHECK(r.to_here().size(0) == 7);
    // An RRef (on b) to a vector of RRefs (on c), as rpc_test.py's test_nested_rref.
    auto outer = remora::remote<&rr::nested_rrefs>(a, "b", std::string("c"));
    std::vector<RRef<torch::Tensor>> inner = outer.to_here();
    REQUIRE(inner.size() == 2);
    CHECK(torch::equal(inner[0].to_here(), 2 * torch::ones({2})));
    CHECK(torch::equal(inner[1].to_here(), 3 * torch::ones({2})));
    CHECK(inner[0].owner_name() == "c");
    CHECK(owned(*g[1]) == 1);
    CHECK(owned(*g[2]) == 3);
  }
  CHECK(eventually([&] { return owned(*g[1]) == 0 && owned(*g[2]) == 0; }));
  shutdown_group(g);
  check_no_leaks(g);
}

TEST_CASE("An RRef passed across many hops", "[rref]") {
  auto g = start_group({"a", "b", "c", "d"});
  auto& a = *g[0];
  {
    auto r = remora::remote<&rr::make_table>(a, "d", std::int64_t{1}, std::int64_t{3});
    std::vector<std::string> path{"b", "c", "d", "a", "c", "b"};  // taken from the back
    CHECK(a.rpc_sync<&rr::hop>("c", r, path) == 3.0);
  }
  CHECK(eventually([&] { return owned(*g[3]) == 0; }));
  shutdown_group(g);
  check_no_leaks(g);
}

TEST_CASE("An error in creation is raised by every use of the RRef", "[rref]") {
  auto g = start_group({"a", "b", "c"});
  auto& a = *g[0];
  {
    auto r = remora::remote<&rr::fails_to_make>(a, "b", 9);
    try {
      r.to_here();
      FAIL("to_here did not throw");
    } catch (const remora::RemoteError& e) {
      CHECK(e.worker() == "b");
      CHECK(e.function() == "rr::fails_to_make");
      CHECK(e.remote_type() == "std::invalid_argument");
      CHECK(e.remote_message() == "cannot make 9");
    }
    CHECK_THROWS_AS(a.rpc_sync<&rr::row_count>("c", r), remora::RemoteError);
    CHECK_THROWS_WITH(a.rpc_sync<&rr::row_count>("c", r), Catch::Contains("cannot make 9"));
  }
  CHECK(eventually([&] { return owned(*g[1]) == 0; }));
  shutdown_group(g);
  check_no_leaks(g);
}

TEST_CASE("To_here honours its timeout while the value is still being made", "[rref]") {
  auto g = start_group({"a", "b"});
  {
    auto r = remora::remote<&rr::slow_table>(*g[0], "b", 1500);
    CHECK_THROWS_AS(r.to_here(50ms), remora::Timeout);
    CHECK(torch::equal(r.to_here(), torch::zeros({1})));  // later, it is there
  }
  CHECK(eventually([&] { return owned(*g[1]) == 0; }));
  shutdown_group(g);
  check_no_leaks(g);
}

TEST_CASE("Proxies run methods of an object on its owner", "[rref]") {
  auto g = start_group({"a", "b"});
  auto& a = *g[0];
  {
    RRef<rr::Counter> c = remora::remote<&rr::make_counter>(a, "b");
    CHECK(c.rpc_sync().call<&rr::Counter::add>(5) == 5);
    remora::Future<int> f = c.rpc_async().call<&rr::Counter::add>(2);
    CHECK(f.get() == 7);
    CHECK(c.rpc_sync().call<&rr::Counter::add_later>(1) == 8);  // a Future-returning method
    RRef<int> total = c.remote().call<&rr::Counter::get>();     // the result stays on b
    CHECK(total.owner_name() == "b");
    CHECK(total.to_here() == 8);
    c.rpc_sync().call<&rr::Counter::reset>();
    CHECK(c.rpc_sync().call<&rr::Counter::get>() == 0);
    // Self-owned objects take the same path.
    auto mine = remora::remote<&rr::make_counter>(a, "a");
    CHECK(mine.rpc_sync().call<&rr::Counter::add>(3) == 3);
    CHECK(mine.local_value().get() == 3);
  }
  CHECK(eventually([&] { return owned(*g[1]) == 0 && owned(a) == 0; }));
  shutdown_group(g);
  check_no_leaks(g);
}

TEST_CASE("Many concurrent remote and to_here calls leave nothing behind", "[rref]") {
  auto g = start_group({"a", "b", "c"});
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        auto r = remora::remote<&rr::add_ints>(*g[0], t % 2 ? "b" : "c", i, t);
        if (r.to_here() == i + t) ++ok;
        if (i % 5 == 0 && g[0]->rpc_sync<&rr::owner_seen_by_callee>(
                              "b", remora::remote<&rr::make_table>(*g[0], "c", std::int64_t{1}, std::int64_t{1})) ==
                              "c")
          ++ok;
      }
    });
  for (auto& t : threads) t.join();
  CHECK(ok == 4 * 60);
  const bool released = eventually([&] { return owned(*g[1]) == 0 && owned(*g[2]) == 0; });
  INFO(tables(g));
  CHECK(released);
  shutdown_group(g);
  check_no_leaks(g);
}

TEST_CASE("Graceful shutdown releases RRefs that are still held", "[rref]") {
  auto g = start_group({"a", "b"});
  auto r = remora::remote<&rr::make_table>(*g[0], "b", std::int64_t{2}, std::int64_t{2});
  r.to_here();
  CHECK(owned(*g[1]) == 1);
  shutdown_group(g);
  check_no_leaks(g);  // although `r` still exists
  CHECK_THROWS_AS(r.to_here(), remora::Error);
}

TEST_CASE("Graceful shutdown deletes held RRefs through the protocol, before the owner stops", "[rref]") {
  auto g = start_group({"a", "b"});
  rr::freed_by_message = 0;
  RRef<rr::Tracked> kept = remora::remote<&rr::make_tracked>(*g[0], "b");
  {
    RRef<rr::Tracked> dropped = remora::remote<&rr::make_tracked>(*g[0], "b");
  }
  CHECK(eventually([] { return rr::freed_by_message == 1; }));  // the dropped one, by its delete
  // `remote` returns before the owner has made the value, and b's pool may make the kept one
  // after the dropped one is already gone: wait for it rather than assume the order.
  CHECK(eventually([&] { return owned(*g[1]) == 1; }));
  shutdown_group(g);
  CHECK(rr::freed_by_message == 2);  // the kept one, by the delete sent at shutdown
  check_no_leaks(g);
}

TEST_CASE("A dead owner fails to_here and proxies with WorkerLost", "[rref]") {
  auto g = start_group({"a", "b"});
  auto r = remora::remote<&rr::make_table>(*g[0], "b", std::int64_t{2}, std::int64_t{2});
  auto c = remora::remote<&rr::make_counter>(*g[0], "b");
  r.to_here();
  g[1]->shutdown(false);  // b stops at once, as if killed
  CHECK_THROWS_AS(r.to_here(), remora::WorkerLost);
  CHECK_THROWS_AS(c.rpc_sync().call<&rr::Counter::get>(), remora::WorkerLost);
  g[0]->shutdown(false);
  check_no_leaks(g);
}

TEST_CASE("A user that dies holding a fork does not keep the value alive", "[rref]") {
  auto g = start_group({"a", "b", "c"});
  {
    auto r = remora::remote<&rr::make_table>(*g[0], "b", std::int64_t{2}, std::int64_t{2});
    g[0]->rpc_sync<&rr::keep>("c", r);  // c holds a fork of b's value
  }
  // Once c's fork is confirmed and a's reference is gone, only c's fork keeps b's value.
  CHECK(eventually([&] {
    auto sa = remora::rref_stats(*g[0]);
    return owned(*g[1]) == 1 && remora::rref_stats(*g[1]).forks == 1 && sa.user_rrefs == 0 &&
           sa.pending_children == 0 && remora::rref_stats(*g[2]).user_rrefs == 1;
  }));
  g[2]->shutdown(false);     // c dies without telling b
  // b drops the forks of a worker it lost.
  CHECK(eventually([&] { return owned(*g[1]) == 0; }));

  rr::kept_by_c.reset();
  g[0]->shutdown(false);
  g[1]->shutdown(false);
  check_no_leaks(g);
}

TEST_CASE("An RRef outside a remora message cannot be encoded", "[rref]") {
  auto g = start_group({"a", "b"});
  {
    auto r = remora::remote<&rr::make_table>(*g[0], "b", std::int64_t{1}, std::int64_t{1});
    CHECK_THROWS_AS(remora::wire::encode_frame(remora::wire::FrameKind::reply, 1, r), remora::SerializationError);
    RRef<torch::Tensor> empty;
    CHECK_FALSE(empty.valid());
    CHECK_THROWS_WITH(empty.to_here(), Catch::Contains("empty RRef"));
  }
  shutdown_group(g);
  check_no_leaks(g);
}
