// Groups of remote modules that recover a lost member (RemoteModuleGroup::replace, on_failure),
// over elastic groups whose workers come and go in this process.
#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/torch.h>

#include "agent_support.hpp"
#include "remora/mesh.hpp"
#include "remora/module.hpp"

using namespace std::chrono_literals;

namespace recovery {
struct Net {
  virtual ~Net() = default;
  virtual torch::Tensor forward(torch::Tensor x) = 0;
  virtual std::int64_t calls() = 0;
};
struct Lin : torch::nn::Module, Net {
  torch::nn::Linear l{nullptr};
  std::int64_t n = 0;
  Lin(std::int64_t in, std::int64_t out) : l(register_module("l", torch::nn::Linear(in, out))) {
    register_buffer("seen", torch::zeros({1}));
  }
  torch::Tensor forward(torch::Tensor x) override {
    ++n;
    return l->forward(x);
  }
  std::int64_t calls() override { return n; }
};
}  // namespace recovery

namespace {
using remora::test::elastic_options;

// A driver and workers w1..w3 of one elastic group, and a group of Lin(4, 3), one per worker,
// all with member 0's parameters.
struct Replicas {
  c10::intrusive_ptr<c10d::Store> store = c10::make_intrusive<c10d::HashStore>();
  remora::Agent driver{"driver", elastic_options(store)};
  std::vector<std::unique_ptr<remora::Agent>> workers;
  remora::RemoteModuleGroup<recovery::Net> group;
  Replicas() {
    for (const char* name : {"w1", "w2", "w3"})
      workers.push_back(std::make_unique<remora::Agent>(name, elastic_options(store)));
    group = remora::RemoteModuleGroup<recovery::Net>::create<recovery::Lin>(
        driver, remora::DeviceMesh({"w1/cpu", "w2/cpu", "w3/cpu"}), std::int64_t{4}, std::int64_t{3});
    const auto state = group.member(0).state_dict();
    for (std::size_t i = 1; i < group.size(); ++i) group.member(i).load_state_dict(state);
  }
  ~Replicas() {
    for (auto& w : workers)
      if (w) w->shutdown();
    driver.shutdown();
  }
  // Worker i (0-based) dies: its connections close, its members are lost.
  void kill(std::size_t i) {
    const auto name = workers[i]->self().name;
    workers[i]->shutdown(false);
    REQUIRE(remora::test::eventually([&] {
      for (const auto& w : driver.get_worker_infos())
        if (w.name == name) return false;
      return true;
    }));
  }
};

}  // namespace

TEST_CASE("A group member made again on another worker from a healthy replica answers as the others do",
          "[elastic][mesh]") {
  Replicas r;
  const auto x = torch::rand({5, 4});
  const auto before = r.group.forward_as(remora::Replicate(), x);  // every member agrees
  auto state = r.group.member(0).state_dict();
  CHECK(state.count("l.weight") == 1);
  CHECK(state.count("seen") == 1);  // buffers too
  remora::Agent w9("w9", elastic_options(r.store));
  r.kill(2);
  CHECK_THROWS_AS(r.group.forward_as(remora::Replicate(), x), remora::WorkerLost);  // no policy: fails
  r.group.replace(2, "w9/cpu");
  CHECK(r.group.member(2).owner_name() == "w9");
  CHECK(r.group.mesh().devices()[2] == "w9/cpu");
  CHECK(torch::equal(r.group.forward_as(remora::Replicate(), x), before));
  // From a given state instead: every parameter and buffer, checked by name and shape.
  state["l.bias"] = torch::zeros({3});
  r.group.replace(1, "w2/cpu", state);
  CHECK(torch::equal(r.group.member(1).state_dict().at("l.bias"), torch::zeros({3})));
  state.erase("seen");
  CHECK_THROWS_WITH(r.group.replace(1, "w2/cpu", state), Catch::Contains("no 'seen'"));
  // Worker to worker: member 1 takes member 0's state again; a module of other shapes refuses it.
  r.group.member(1).copy_state_from(r.group.member(0));
  CHECK(torch::equal(r.group.member(1).state_dict().at("l.bias"), r.group.member(0).state_dict().at("l.bias")));
  auto other = remora::RemoteModule<recovery::Net>::create<recovery::Lin>(r.driver, "w1/cpu", std::int64_t{4},
                                                                          std::int64_t{5});
  CHECK_THROWS_WITH(other.copy_state_from(r.group.member(0)), Catch::Contains("wrong shape"));
  w9.shutdown();
}

TEST_CASE("A group call that meets a lost member waits for its restart and runs once on the new incarnation",
          "[elastic][mesh]") {
  Replicas r;
  const auto x = torch::rand({6, 4});
  const auto before = r.group.forward(remora::Shard(0, x));
  int policy_calls = 0;
  r.group.on_failure([&](const remora::MemberLost& lost) {
    ++policy_calls;
    CHECK(lost.index == 2);
    CHECK(lost.device == "w3/cpu");
    CHECK(lost.worker.name == "w3");
    CHECK(lost.worker.incarnation == 1);
    return remora::Recovery::await_restart(20s);
  });
  r.kill(2);
  std::thread restart([&] {
    std::this_thread::sleep_for(300ms);
    r.workers[2] = std::make_unique<remora::Agent>("w3", elastic_options(r.store));
  });
  const auto after = r.group.forward(remora::Shard(0, x));
  restart.join();
  CHECK(policy_calls == 1);
  CHECK(torch::equal(after, before));
  CHECK(r.group.member(2).owner().incarnation == 2);
  // Members 0 and 1 ran each call once; member 2's new module ran the second call once.
  CHECK(r.group.call<&recovery::Net::calls>() == std::vector<std::int64_t>{2, 2, 1});
}

TEST_CASE("A group call that meets a lost member can move it to another worker, or fail", "[elastic][mesh]") {
  Replicas r;
  const auto x = torch::rand({3, 4});
  remora::Agent w9("w9", elastic_options(r.store));
  r.kill(0);
  r.group.on_failure([](const remora::MemberLost&) { return remora::Recovery::fail(); });
  CHECK_THROWS_AS(r.group.forward(remora::Shard(0, x)), remora::WorkerLost);
  r.group.on_failure([](const remora::MemberLost&) { return remora::Recovery::replace_on("w9/cpu"); });
  const auto y = r.group.forward(remora::Shard(0, x));
  CHECK(y.sizes() == torch::IntArrayRef({3, 3}));
  CHECK(r.group.member(0).owner_name() == "w9");
  // Waiting for a restart that does not come fails, naming the worker.
  r.kill(1);
  r.group.on_failure([](const remora::MemberLost&) { return remora::Recovery::await_restart(200ms); });
  CHECK_THROWS_WITH(r.group.forward(remora::Shard(0, x)), Catch::Contains("'w2' did not join again"));
  w9.shutdown();
}

TEST_CASE("A process group over a mesh is made anew after a member joined again", "[elastic][mesh]") {
  auto store = c10::make_intrusive<c10d::HashStore>();
  auto a = std::make_unique<remora::Agent>("a", elastic_options(store));
  auto b = std::make_unique<remora::Agent>("b", elastic_options(store));
  const remora::DeviceMesh mesh({"a/cpu", "b/cpu"});
  c10::intrusive_ptr<c10d::ProcessGroup> first;  // a's group of the first round, kept
  // Both members make the group and sum over it; returns what each got.
  auto all_reduce = [&](float a_value, float b_value) {
    std::vector<float> got(2, -1);
    std::vector<std::string> errors(2);
    std::vector<std::thread> threads;
    for (int r = 0; r < 2; ++r)
      threads.emplace_back([&, r] {
        try {
          auto pg = remora::process_group(r == 0 ? *a : *b, mesh);
          std::vector<torch::Tensor> t = {torch::full({1}, r == 0 ? a_value : b_value)};
          pg->allreduce(t)->wait();
          if (r == 0 && !first) first = pg;
          got[r] = t[0].item<float>();
        } catch (const std::exception& e) {
          errors[r] = e.what();
        }
      });
    for (auto& t : threads) t.join();
    for (const auto& e : errors) CHECK(e.empty());
    return got;
  };
  CHECK(all_reduce(1, 2) == std::vector<float>{3, 3});
  b->shutdown(false);
  b.reset();
  // Without b the group cannot be made: a remora error that names it, not the backend's timeout.
  REQUIRE(remora::test::eventually([&] { return a->get_worker_infos().size() == 1; }));
  CHECK_THROWS_WITH(remora::process_group(*a, mesh), Catch::Contains("'b'"));
  // The group made with b's first incarnation fails at once, saying why, instead of a backend's
  // error or a wait for its timeout (its fence is set by the event of b's leaving).
  const auto* fence = remora::detail::GroupFence::of(*first);
  REQUIRE(fence != nullptr);
  REQUIRE(remora::test::eventually([&] { return fence->stale(); }));
  std::vector<torch::Tensor> t = {torch::ones({1})};
  CHECK_THROWS_AS(first->allreduce(t), remora::WorkerLost);
  CHECK_THROWS_WITH(first->barrier(), Catch::Contains("membership changed") && Catch::Contains("member 'b' was lost") &&
                                          Catch::Contains("process_group(the whole mesh).barrier"));
  b = std::make_unique<remora::Agent>("b", elastic_options(store));  // incarnation 2: its first group
  REQUIRE(remora::test::eventually([&] { return a->get_worker_info("b").incarnation == 2; }));
  CHECK(all_reduce(10, 20) == std::vector<float>{30, 30});
  CHECK_THROWS_AS(first->allreduce(t), remora::WorkerLost);  // still the old one
  // Dropping a group waits for no membership callback: a thread drops it while it holds a lock
  // that a user's callback, running, waits for (were the drop to wait for that delivery, both
  // would wait until the callback gave up after 20 s).
  std::timed_mutex held;
  std::atomic<bool> locked{false}, in_callback{false};
  auto sub = a->on_membership([&](const remora::MembershipEvent& e) {
    if (e.kind != remora::MembershipEvent::left) return;  // (not a late event of the rejoin)
    in_callback = true;
    if (held.try_lock_for(20s)) held.unlock();
  });
  auto dropper = std::async(std::launch::async, [&] {
    std::lock_guard lock(held);
    locked = true;
    const auto deadline = std::chrono::steady_clock::now() + 10s;  // (no Catch assertion off the test's thread)
    while (!in_callback && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
    first.reset();
  });
  REQUIRE(remora::test::eventually([&] { return locked.load(); }));
  b->shutdown();  // a hears that b left: the callback runs and waits for the lock
  CHECK(dropper.wait_for(10s) == std::future_status::ready);
  dropper.get();
  a->shutdown();
}
