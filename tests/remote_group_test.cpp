// Groups of any remote object (RemoteGroup, spawn) and the adverbs they share with
// RemoteModuleGroup: call into a ValueMesh, call_async, broadcast, choose, stream, slice; a lost
// member in each. Members that must finish in a given order wait on gates the test opens.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include "agent_support.hpp"
#include "remora/agent/detail/io_loop.hpp"  // on_io_thread
#include "remora/mesh.hpp"

using namespace std::chrono_literals;

namespace groupfns {
// Gates that served calls wait on until the test opens them (every agent is in this process).
struct Gates {
  std::mutex mu;
  std::condition_variable cv;
  std::set<std::int64_t> open;
  void wait(std::int64_t key) {
    std::unique_lock lock(mu);
    if (!cv.wait_for(lock, 20s, [&] { return open.count(key) > 0; })) throw std::runtime_error("gate never opened");
  }
  void release(std::int64_t key) {
    {
      std::lock_guard lock(mu);
      open.insert(key);
    }
    cv.notify_all();
  }
};
Gates& gates() {
  static Gates g;
  return g;
}

struct Env {
  explicit Env(std::int64_t seed) : seed(seed) {
    if (seed < 0) throw std::invalid_argument("a negative seed");
  }
  std::int64_t reset() { return seed * 10 + ++resets; }
  std::string where() { return remora::get_worker_info().name; }
  void set_policy(std::int64_t p) {
    ++attempts;
    if (p < 0) throw std::invalid_argument("a negative policy");
    policy = p;
  }
  std::int64_t policy_of() { return policy; }
  std::int64_t attempts_of() { return attempts; }
  // Waits for gate `key + the piece it got` (a Shard gives each member its own), then says who it is.
  std::string rollout(torch::Tensor key) {
    gates().wait(key.item<std::int64_t>());
    return where();
  }
  std::string hold(std::int64_t key) {
    gates().wait(key);
    return where();
  }
  torch::Tensor scale(torch::Tensor x) { return x * seed; }
  std::int64_t seed, resets = 0, policy = 0, attempts = 0;
};

struct Net {
  virtual ~Net() = default;
  virtual torch::Tensor forward(torch::Tensor x) = 0;
  virtual std::string where() = 0;
  virtual void set_bias(double b) = 0;
};
struct Shift : torch::nn::Module, Net {
  double bias = 0;
  torch::Tensor forward(torch::Tensor x) override { return x + bias; }
  std::string where() override { return remora::get_worker_info().name; }
  void set_bias(double b) override { bias = b; }
};
}  // namespace groupfns

namespace {
using groupfns::Env;
using remora::DeviceMesh;

DeviceMesh square() { return DeviceMesh({"w1/cpu", "w2/cpu", "w3/cpu", "w4/cpu"}, {2, 2}, {"dp", "pp"}); }

// An elastic group's options over a store of its own.
remora::Options elastic_options() { return remora::test::elastic_options(c10::make_intrusive<c10d::HashStore>()); }

struct Four {
  std::vector<std::unique_ptr<remora::Agent>> agents = remora::test::start_group({"driver", "w1", "w2", "w3", "w4"});
  remora::Agent& driver = *agents[0];
  ~Four() { remora::test::shutdown_group(agents); }
};
}  // namespace

TEST_CASE("One object on every point from spawn, and call gathers a ValueMesh in mesh order", "[mesh][group]") {
  Four g;
  auto envs = remora::spawn<Env>(g.driver, square(), std::int64_t{7});
  REQUIRE(envs.size() == 4);
  remora::ValueMesh<std::string> where = envs.call<&Env::where>();
  CHECK(where.values() == std::vector<std::string>{"w1", "w2", "w3", "w4"});
  CHECK(where.at({1, 0}) == "w3");
  CHECK(where.mesh() == square());
  remora::ValueMesh<std::int64_t> obs = envs.call<&Env::reset>();
  CHECK(obs == std::vector<std::int64_t>{71, 71, 71, 71});
  remora::Future<remora::ValueMesh<std::int64_t>> f = envs.call_async<&Env::reset>();
  CHECK(std::move(f).get().values() == std::vector<std::int64_t>{72, 72, 72, 72});  // each member ran it once more
  // A Shard gives each member its piece; a plain argument goes to all.
  auto scaled = envs.call<&Env::scale>(remora::Shard(0, torch::arange(8, torch::kFloat)));
  CHECK(torch::equal(torch::cat(scaled.values()), torch::arange(8, torch::kFloat) * 7));
  // A sub-group along "dp" where "pp" is 0: the same objects.
  auto column = envs.slice("dp", 0);
  CHECK(column.call<&Env::where>().values() == std::vector<std::string>{"w1", "w3"});
  CHECK(column.call<&Env::reset>() == std::vector<std::int64_t>{73, 73});
  CHECK(envs.call<&Env::reset>() == std::vector<std::int64_t>{74, 73, 74, 73});
  // A constructor that throws on its worker fails spawn, naming the worker.
  CHECK_THROWS_WITH(remora::spawn<Env>(g.driver, square(), std::int64_t{-1}),
                    Catch::Contains("a negative seed") && Catch::Contains("w1"));
  CHECK_THROWS_AS(remora::RemoteGroup<Env>().call<&Env::reset>(), remora::Error);
}

TEST_CASE("A broadcast reaches every member without a reply, and a failing member is logged", "[mesh][group]") {
  Four g;
  auto envs = remora::spawn<Env>(g.driver, square(), std::int64_t{1});
  envs.broadcast<&Env::set_policy>(std::int64_t{5});
  // Calls from one caller to one member run in order of sending only when each is answered
  // first, so the effect is awaited, not assumed.
  REQUIRE(remora::test::eventually([&] { return envs.call<&Env::policy_of>() == std::vector<std::int64_t>(4, 5); }));
  // Every member throws: each failure is logged here, naming the point and the method.
  remora::test::StderrCapture capture;
  envs.broadcast<&Env::set_policy>(std::int64_t{-1});
  const auto logged = [&](const std::string& point) {
    return capture.text().find("broadcast of groupfns::Env::set_policy to '" + point + "' failed") != std::string::npos;
  };
  CHECK(remora::test::eventually([&] { return logged("w1/cpu") && logged("w2/cpu") && logged("w3/cpu") && logged("w4/cpu"); }));
  CHECK(capture.text().find("a negative policy") != std::string::npos);
  CHECK(envs.call<&Env::attempts_of>() == std::vector<std::int64_t>(4, 2));
  CHECK(envs.call<&Env::policy_of>() == std::vector<std::int64_t>(4, 5));
}

TEST_CASE("A stream hands out results in the order they finish, and choose picks the least busy member",
          "[mesh][group]") {
  Four g;
  auto envs = remora::spawn<Env>(g.driver, square(), std::int64_t{1});
  // Member i waits for gate 100 + i; the gates open in the order 2, 0, 3, 1.
  auto s = envs.stream<&Env::rollout>(remora::Shard(0, torch::arange(100, 104)));
  CHECK(s.remaining() == 4);
  std::vector<std::size_t> order;
  for (std::int64_t i : {2, 0, 3, 1}) {
    groupfns::gates().release(100 + i);
    auto r = s.next();
    REQUIRE(r);
    CHECK(r->value == "w" + std::to_string(r->index + 1));
    order.push_back(r->index);
  }
  CHECK(order == std::vector<std::size_t>{2, 0, 3, 1});
  CHECK_FALSE(s.next());
  // choose: three held calls go to three different members (each to one with none in flight).
  std::vector<remora::Future<std::string>> held;
  for (std::int64_t k = 0; k < 3; ++k) held.push_back(envs.choose<&Env::hold>(std::int64_t{200}));
  std::int64_t busy = 0;
  for (std::size_t i = 0; i < envs.size(); ++i) busy += envs.in_flight(i);
  CHECK(busy == 3);
  groupfns::gates().release(200);
  std::set<std::string> chosen;
  for (auto& f : held) chosen.insert(std::move(f).get());
  CHECK(chosen.size() == 3);
  CHECK(remora::test::eventually([&] { return envs.in_flight(0) + envs.in_flight(1) + envs.in_flight(2) + envs.in_flight(3) == 0; }));
}

TEST_CASE("A lost member: call fails naming it, call_each keeps the others, choose skips it, stream ends its entry",
          "[mesh][group][elastic]") {
  const auto o = elastic_options();
  remora::Agent driver("driver", o), w1("w1", o), w2("w2", o), w3("w3", o);
  DeviceMesh line({"w1/cpu", "w2/cpu", "w3/cpu"});
  auto envs = remora::spawn<Env>(driver, line, std::int64_t{2});
  w1.shutdown(false);  // member 0 dies: its connections close
  REQUIRE(remora::test::eventually([&] { return driver.get_worker_infos().size() == 3; }));
  CHECK_THROWS_AS(envs.call<&Env::reset>(), remora::WorkerLost);
  CHECK_THROWS_WITH(envs.call<&Env::reset>(), Catch::Contains("w1"));
  auto each = envs.call_each<&Env::where>();
  CHECK_THROWS_AS(each[0].get(), remora::WorkerLost);
  CHECK(each[1].get() == "w2");
  CHECK(each[2].get() == "w3");
  for (int k = 0; k < 6; ++k) CHECK(envs.choose<&Env::where>().get() != "w1");
  auto s = envs.stream<&Env::where>();
  std::size_t values = 0, errors = 0;
  for (;;) {
    try {
      if (!s.next()) break;
      ++values;
    } catch (const remora::WorkerLost&) {
      ++errors;
    }
  }
  CHECK(values == 2);
  CHECK(errors == 1);
  // Member 0's call fails before it is sent, so its future has no pool to complete on; a
  // next_async that waits for another member still completes on the pool, not on the I/O thread
  // that read the reply (where a Task awaiting it would resume).
  auto gated = envs.stream<&Env::rollout>(remora::Shard(0, torch::arange(300, 303)));
  CHECK_THROWS_AS(gated.next(), remora::WorkerLost);
  std::atomic<bool> ran_on_io{true};
  auto index = gated.next_async().then([&](std::optional<remora::Stream<std::string>::Item> r) {
    ran_on_io = remora::detail::on_io_thread;
    return r->index;
  });
  groupfns::gates().release(301);
  CHECK(std::move(index).get() == 1);
  CHECK_FALSE(ran_on_io);
  groupfns::gates().release(302);
  CHECK(gated.next()->index == 2);
  CHECK_FALSE(gated.next());
  for (auto* a : {&w2, &w3, &driver}) a->shutdown();
}

TEST_CASE("A RemoteGroup makes a lost member again, elsewhere or on its restarted worker, and calls it once",
          "[mesh][group][elastic]") {
  const auto o = elastic_options();
  std::map<std::string, std::unique_ptr<remora::Agent>> w;
  for (const char* name : {"driver", "w1", "w2", "w3", "w9"}) w[name] = std::make_unique<remora::Agent>(name, o);
  auto& driver = *w["driver"];
  const auto gone = [&](const std::string& name) {
    return remora::test::eventually([&] {
      for (const auto& info : driver.get_worker_infos())
        if (info.name == name) return false;
      return true;
    });
  };
  auto envs = remora::spawn<Env>(driver, DeviceMesh({"w1/cpu", "w2/cpu", "w3/cpu"}), std::int64_t{1});
  CHECK(envs.call<&Env::reset>() == std::vector<std::int64_t>{11, 11, 11});
  // Elsewhere: member 1 is made again on w9 (a new Env) and runs the call once; the others are
  // not called again.
  envs.on_failure([](const remora::MemberLost&) { return remora::Recovery::replace_on("w9/cpu"); });
  w["w2"]->shutdown(false);
  REQUIRE(gone("w2"));
  CHECK(envs.call<&Env::reset>() == std::vector<std::int64_t>{12, 11, 12});
  CHECK(envs.mesh().devices() == std::vector<std::string>{"w1/cpu", "w9/cpu", "w3/cpu"});
  // On its restarted worker: the call waits for w3's next incarnation.
  const auto first = envs.member(2).owner().incarnation;
  envs.on_failure([](const remora::MemberLost&) { return remora::Recovery::await_restart(20s); });
  w["w3"]->shutdown(false);
  REQUIRE(gone("w3"));
  std::thread restart([&] { w["w3 again"] = std::make_unique<remora::Agent>("w3", o); });
  CHECK(envs.call<&Env::reset>() == std::vector<std::int64_t>{13, 12, 11});
  restart.join();
  CHECK(envs.member(2).owner().incarnation > first);
  CHECK(envs.call<&Env::where>().values() == std::vector<std::string>{"w1", "w9", "w3"});
  // fail(): the call fails with the member's WorkerLost; a group not made by spawn cannot replace.
  envs.on_failure([](const remora::MemberLost&) { return remora::Recovery::fail(); });
  w["w1"]->shutdown(false);
  REQUIRE(gone("w1"));
  CHECK_THROWS_AS(envs.call<&Env::reset>(), remora::WorkerLost);
  CHECK_THROWS_WITH(envs.slice("d0", 0).replace(0, "w9/cpu"), Catch::Contains("not made by spawn"));
  for (const char* name : {"w9", "w3 again", "driver"}) w[name]->shutdown();
}

TEST_CASE("RemoteModuleGroup has the same adverbs over its interface's methods", "[mesh][group]") {
  Four g;
  auto nets = remora::RemoteModuleGroup<groupfns::Net>::create<groupfns::Shift>(g.driver, square());
  remora::ValueMesh<std::string> where = nets.call<&groupfns::Net::where>();
  CHECK(where.at({0, 1}) == "w2");
  nets.broadcast<&groupfns::Net::set_bias>(1.5);
  const auto x = torch::zeros({4, 1});
  REQUIRE(remora::test::eventually([&] { return torch::equal(nets.forward(remora::Shard(0, x)), x + 1.5); }));
  auto f = nets.call_async<&groupfns::Net::where>();
  CHECK(std::move(f).get().values() == std::vector<std::string>{"w1", "w2", "w3", "w4"});
  std::set<std::string> chosen;
  for (int k = 0; k < 4; ++k) chosen.insert(nets.choose<&groupfns::Net::where>().get());
  CHECK(chosen.size() == 4);  // nothing in flight: round robin
  auto s = nets.stream<&groupfns::Net::where>();
  std::set<std::string> streamed;
  while (auto r = s.next()) streamed.insert(r->value);
  CHECK(streamed.size() == 4);
  auto row = nets.slice("pp", 1);
  CHECK(row.size() == 2);
  CHECK(row.call<&groupfns::Net::where>() == std::vector<std::string>{"w3", "w4"});
}
