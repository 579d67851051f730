// A kill -9 matrix over real processes: the owner, a user and a forwarding worker each die
// (SIGKILL, from Options::test_hooks.faults' Action::kill, at the moment they send the frame of one protocol
// step) during a call, a remote creation, a module create, a fork, a child_accept and a delete;
// and a worker killed while the group shuts down. Every survivor raises WorkerLost well within
// the call timeout, and holds nothing afterwards; graceful shutdown ends within its timeout.
#include <signal.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "agent_support.hpp"
#include "process_support.hpp"
#include "remora/module.hpp"
#include "remora/transport/fault_plan.hpp"
#include "remora/rref.hpp"
#include "roles.hpp"

using namespace std::chrono_literals;
using remora::detail::FaultPlan;
using remora::test::spawn_self;
using remora::test::wait_exit;

namespace kt {
int add(int a, int b) { return a + b; }
torch::Tensor make(std::int64_t n) { return torch::ones({n}); }
std::int64_t take(remora::RRef<torch::Tensor> r) { return static_cast<std::int64_t>(r.owner_name().size()); }

struct Scale {
  virtual ~Scale() = default;
  virtual torch::Tensor forward(torch::Tensor x) = 0;
};
struct Doubler : torch::nn::Module, Scale {
  torch::Tensor forward(torch::Tensor x) override { return 2 * x; }
};
}  // namespace kt

namespace {
constexpr auto kTimeout = 60s;  // the calls' deadline: WorkerLost must come far sooner
constexpr auto kPrompt = 20s;

// The plan a doomed worker runs with: it dies as it sends the frame `step` names.
std::shared_ptr<FaultPlan> plan_for(const std::string& step) {
  using remora::detail::rref_msg::child_accept;
  using remora::detail::rref_msg::fork_request;
  using remora::detail::rref_msg::user_delete;
  auto plan = std::make_shared<FaultPlan>();
  const auto kill = FaultPlan::Action::kill;
  if (step == "reply") plan->add({.kind = remora::wire::FrameKind::reply, .function = {}, .action = kill});
  if (step == "fork") plan->add(FaultPlan::call<&kt::take>(kill));
  if (step == "fork_request") plan->add(FaultPlan::call<&fork_request>(kill));
  if (step == "child_accept") plan->add(FaultPlan::call<&child_accept>(kill));
  if (step == "delete") plan->add(FaultPlan::call<&user_delete>(kill));
  return plan;
}

// A worker of a three-worker group that dies at `step`: args are the store's port, its rank,
// the step, and whether it acts as the user (w0: it creates a value on w1 and hands it to w2).
int doomed(const std::vector<std::string>& args) {
  auto o = remora::test::tcp_options(static_cast<std::uint16_t>(std::stoi(args.at(0))));
  const int rank = std::stoi(args.at(1));
  o.test_hooks.faults = plan_for(args.at(2));
  o.rpc_timeout = kTimeout;
  if (rank == 0) {  // the test process hosts the store: rank 0 here is only its client
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(std::stoi(args.at(0)));
    so.isServer = false;
    so.timeout = o.init_timeout;
    o.store = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", so);
  }
  remora::Agent agent("w" + std::to_string(rank), rank, 3, o);
  if (rank == 0) {
    auto r = remora::remote<&kt::make>(agent, "w1", std::int64_t{3});
    (void)r.to_here();
    try {
      (void)agent.rpc_sync<&kt::take>("w2", r);
    } catch (const std::exception&) {
    }
  }  // r goes: its delete
  std::this_thread::sleep_for(120s);  // the plan kills this process before
  return 1;
}
remora::test::RegisterRole role("doomed", &doomed);

// This process's two workers of the group whose third (`victim`) runs doomed at `step`.
struct Survivors {
  remora::test::HostedStore hosted = remora::test::host_store();
  pid_t child = -1;
  std::vector<std::unique_ptr<remora::Agent>> agents{3};  // indexed by rank; the victim's empty
  Survivors(int victim, const std::string& step, std::chrono::milliseconds shutdown_timeout = 30s) {
    child = spawn_self({"--role", "doomed", std::to_string(hosted.port), std::to_string(victim), step});
    std::vector<std::thread> threads;
    for (int r = 0; r < 3; ++r) {
      if (r == victim) continue;
      threads.emplace_back([this, r, shutdown_timeout] {
        // One TCPStore client per agent: a client is not shared between threads.
        auto o = r == 0 ? remora::test::hosted_options(hosted) : remora::test::tcp_options(hosted.port);
        o.rpc_timeout = kTimeout;
        o.shutdown_timeout = shutdown_timeout;
        agents[r] = std::make_unique<remora::Agent>("w" + std::to_string(r), r, 3, o);
      });
    }
    for (auto& t : threads) t.join();
  }
  remora::Agent& at(int r) { return *agents[r]; }
  // The victim died of SIGKILL; every survivor let go of everything.
  void finish() {
    CHECK(wait_exit(child) == 128 + SIGKILL);
    for (auto& a : agents) {
      if (!a) continue;
      CHECK(remora::test::eventually([&] { return remora::rref_stats(*a).owned_values == 0; }, kPrompt));
      CHECK(remora::test::eventually([&] { return remora::rref_stats(*a).user_rrefs == 0; }, kPrompt));
      CHECK(remora::test::eventually([&] { return a->pending_calls() == 0; }, kPrompt));
    }
    for (auto& a : agents)
      if (a) a->shutdown(false);
  }
};

// `call` fails with WorkerLost, promptly.
template <class F>
void lost_promptly(F&& call) {
  const auto start = std::chrono::steady_clock::now();
  CHECK_THROWS_AS(call(), remora::WorkerLost);
  CHECK(std::chrono::steady_clock::now() - start < kPrompt);
}
}  // namespace

TEST_CASE("Kill -9 matrix: the owner dies as it answers a call, a creation, a module create", "[process][kill]") {
  SECTION("a call") {
    Survivors s(1, "reply");
    lost_promptly([&] { return s.at(0).rpc_sync<&kt::add>("w1", 1, 2); });
    s.finish();
  }
  SECTION("a remote creation") {
    Survivors s(1, "reply");
    {
      auto r = remora::remote<&kt::make>(s.at(0), "w1", std::int64_t{2});
      lost_promptly([&] { return r.to_here(); });
    }
    s.finish();
  }
  SECTION("a module create") {
    Survivors s(1, "reply");
    lost_promptly([&] {
      auto m = remora::RemoteModule<kt::Scale>::create<kt::Doubler>(s.at(0), "w1/cpu");
      return m.forward(torch::ones({1}));
    });
    s.finish();
  }
}

TEST_CASE("Kill -9 matrix: the user dies as it hands an RRef on, and as it deletes its own", "[process][kill]") {
  // w0 (the user) creates a value on w1, hands it to w2 (a fork), then lets go (a delete).
  for (const char* step : {"fork", "delete"}) {
    INFO("killed at " << step);
    Survivors s(0, step);
    // The owner drops what the lost user held; w2 holds nothing of it either.
    s.finish();
  }
}

TEST_CASE("Kill -9 matrix: the forwarding worker dies at each step of receiving an RRef", "[process][kill]") {
  // w0 hands its RRef to w1's value to w2 (the victim), which dies as it asks the owner to count
  // it, tells w0 it was counted, or deletes it.
  for (const char* step : {"fork_request", "child_accept", "delete"}) {
    INFO("killed at " << step);
    Survivors s(2, step);
    {
      auto r = remora::remote<&kt::make>(s.at(0), "w1", std::int64_t{3});
      CHECK(r.to_here().numel() == 3);
      const auto start = std::chrono::steady_clock::now();
      try {
        (void)s.at(0).rpc_sync<&kt::take>("w2", r);  // answered before the delete, or lost
      } catch (const remora::WorkerLost&) {
      }
      CHECK(std::chrono::steady_clock::now() - start < kPrompt);
      CHECK(remora::test::eventually([&] { return remora::rref_stats(s.at(0)).pending_children == 0; }, kPrompt));
      CHECK(r.to_here().numel() == 3);  // the survivor's own reference is intact
    }
    s.finish();
  }
}

TEST_CASE("Kill -9 matrix: a worker killed while the group shuts down", "[process][kill]") {
  Survivors s(2, "none", 5s);
  CHECK(s.at(0).rpc_sync<&kt::add>("w1", 1, 2) == 3);
  CHECK(s.at(0).rpc_sync<&kt::add>("w2", 1, 2) == 3);  // its connections are up
  std::vector<std::thread> threads;
  const auto start = std::chrono::steady_clock::now();
  for (int r : {0, 1}) threads.emplace_back([&s, r] { s.at(r).shutdown(); });
  std::this_thread::sleep_for(100ms);
  ::kill(s.child, SIGKILL);
  for (auto& t : threads) t.join();
  // Graceful shutdown waits for every worker up to its shutdown_timeout (5 s here), no longer.
  CHECK(std::chrono::steady_clock::now() - start < 15s);
  CHECK(wait_exit(s.child) == 128 + SIGKILL);
  for (int r : {0, 1}) CHECK(remora::rref_stats(s.at(r)).owned_values == 0);
}
