// Injected faults (Options::test_hooks.faults, transport/fault_plan.hpp), as PyTorch's FaultyTensorPipeAgent
// tests do: a dropped or late call or reply fails its call with Timeout in time and the link goes
// on; a connection cut as each RRef protocol message leaves (the sending worker's host dying at
// that step) leaves no value behind on the survivors and no caller waiting; graceful shutdown
// completes with frames lost.
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "agent_support.hpp"
#include "remora/rref.hpp"
#include "remora/transport/fault_plan.hpp"

using namespace std::chrono_literals;
using remora::detail::FaultPlan;

namespace faults {
int add(int a, int b) { return a + b; }
torch::Tensor make(std::int64_t n) { return torch::ones({n}); }
std::int64_t take(remora::RRef<torch::Tensor> r) { return static_cast<std::int64_t>(r.owner_name().size()); }
}  // namespace faults

namespace {
// A group whose workers have their own options (each its own FaultPlan, or none).
std::vector<std::unique_ptr<remora::Agent>> start_with(std::vector<remora::Options> options) {
  auto store = c10::make_intrusive<c10d::HashStore>();
  const int n = static_cast<int>(options.size());
  std::vector<std::unique_ptr<remora::Agent>> agents(n);
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i)
    threads.emplace_back([&, i] {
      auto o = options[i];
      o.store = store;
      o.init_timeout = 20s;
      o.shutdown_timeout = 20s;
      agents[i] = std::make_unique<remora::Agent>("w" + std::to_string(i), i, n, o);
    });
  for (auto& t : threads) t.join();
  return agents;
}
remora::Options faulty(std::shared_ptr<FaultPlan> plan) {
  remora::Options o;
  o.test_hooks.faults = std::move(plan);
  return o;
}
}  // namespace

TEST_CASE("Injected faults: a dropped or late call or reply fails its call with Timeout, and the link goes on",
          "[agent][faults]") {
  auto caller_plan = std::make_shared<FaultPlan>();
  auto callee_plan = std::make_shared<FaultPlan>();
  auto g = start_with({faulty(caller_plan), faulty(callee_plan)});
  auto& a = *g[0];
  CHECK(a.rpc_sync<&faults::add>("w1", 1, 1) == 2);  // the link is up
  const remora::CallOptions quick{.timeout = 300ms};
  auto timed_out_in_time = [&](auto call) {
    const auto start = std::chrono::steady_clock::now();
    CHECK_THROWS_AS(call(), remora::Timeout);
    const auto took = std::chrono::steady_clock::now() - start;
    CHECK(took >= 250ms);
    CHECK(took < 5s);
  };
  SECTION("the call is dropped") {
    caller_plan->add(FaultPlan::call<&faults::add>(FaultPlan::Action::drop));
    timed_out_in_time([&] { return a.rpc_sync<&faults::add>("w1", quick, 2, 3); });
    CHECK(caller_plan->applied() == 1);
  }
  SECTION("the reply is dropped") {
    callee_plan->add({.kind = remora::wire::FrameKind::reply, .function = {}, .action = FaultPlan::Action::drop});
    timed_out_in_time([&] { return a.rpc_sync<&faults::add>("w1", quick, 2, 3); });
    CHECK(callee_plan->applied() == 1);
  }
  SECTION("the reply comes after the deadline, and is then ignored") {
    callee_plan->add({.kind = remora::wire::FrameKind::reply, .function = {}, .action = FaultPlan::Action::delay, .delay = 700ms});
    timed_out_in_time([&] { return a.rpc_sync<&faults::add>("w1", quick, 2, 3); });
    CHECK(callee_plan->applied() == 1);
    // The reply arrives for a call that is gone: dropped, and counted.
    CHECK(remora::test::eventually([&] { return a.debug_info().late_replies == 1; }, 10s));
  }
  SECTION("the call is late but within its deadline") {
    caller_plan->add(FaultPlan::call<&faults::add>(FaultPlan::Action::delay, 100ms));
    CHECK(a.rpc_sync<&faults::add>("w1", remora::CallOptions{.timeout = 5s}, 2, 3) == 5);
  }
  CHECK(a.rpc_sync<&faults::add>("w1", 20, 22) == 42);
  CHECK(a.pending_calls() == 0);
  remora::test::shutdown_group(g);
}

TEST_CASE("Injected faults: a connection cut as each RRef message leaves strands no value and no caller",
          "[agent][faults][rref]") {
  // w0 owns nothing and passes w1's value to w2; w2's messages about it are cut at one step:
  // fork_request (w2 -> owner w1), child_accept (w2 -> parent w0) or user_delete (w2 -> w1).
  using namespace remora::detail;
  auto plan = std::make_shared<FaultPlan>();
  const char* step = nullptr;
  SECTION("fork_request") {
    step = "fork_request";
    plan->add(FaultPlan::call<&rref_msg::fork_request>(FaultPlan::Action::cut));
  }
  SECTION("child_accept") {
    step = "child_accept";
    plan->add(FaultPlan::call<&rref_msg::child_accept>(FaultPlan::Action::cut));
  }
  SECTION("user_delete") {
    step = "user_delete";
    plan->add(FaultPlan::call<&rref_msg::user_delete>(FaultPlan::Action::cut));
  }
  INFO("cut at " << step);
  remora::Options plain;
  plain.rpc_timeout = 3s;
  auto cut = faulty(plan);
  cut.rpc_timeout = 3s;
  auto g = start_with({plain, plain, cut});
  {
    auto r = remora::remote<&faults::make>(*g[0], "w1", std::int64_t{4});
    CHECK(r.to_here().numel() == 4);
    // The call that hands the RRef to w2 ends, one way or another, within the timeouts.
    try {
      (void)g[0]->rpc_sync<&faults::take>("w2", r);
    } catch (const remora::Error& e) {
      UNSCOPED_INFO("the hand-over failed: " << e.what());
    }
    CHECK(remora::test::eventually([&] { return plan->applied() == 1; }, 10s));
    // The value is still w0's to use while w0 holds it.
    CHECK(r.to_here().numel() == 4);
  }
  // w0 let go; w2's reference went with its connection to w1 (w1 counts w2 as lost), or was
  // never recorded: the owner holds nothing.
  CHECK(remora::test::eventually([&] { return remora::rref_stats(*g[1]).owned_values == 0; }, 10s));
  CHECK(remora::test::eventually([&] { return remora::rref_stats(*g[0]).pending_children == 0; }, 10s));
  // (w0's delete message to the owner may still await its acknowledgement for a moment.)
  CHECK(remora::test::eventually([&] { return g[0]->pending_calls() == 0; }, 10s));
  for (auto& a : g) a->shutdown(false);
}

TEST_CASE("Injected faults: graceful shutdown completes with a call's frames lost", "[agent][faults]") {
  auto plan = std::make_shared<FaultPlan>();
  plan->add(FaultPlan::call<&faults::add>(FaultPlan::Action::drop));
  auto o = faulty(plan);
  o.rpc_timeout = 500ms;
  auto g = start_with({o, remora::Options{}});
  auto lost = g[0]->rpc_async<&faults::add>("w1", 1, 2);
  const auto start = std::chrono::steady_clock::now();
  remora::test::shutdown_group(g);
  CHECK(std::chrono::steady_clock::now() - start < 10s);
  CHECK_THROWS_AS(lost.get(), remora::Timeout);
}
