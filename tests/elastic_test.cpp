// Elastic groups (Options::elastic): workers join and leave a running group, a worker that died
// joins again under its name as a new incarnation, and nothing meant for one incarnation runs on
// another.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include "agent_support.hpp"
#include "process_support.hpp"
#include "raw_peer.hpp"
#include "remora/agent/detail/elastic_store.hpp"
#include "remora/agent/detail/id_table.hpp"
#include "remora/autograd.hpp"
#include "remora/dynamic.hpp"
#include "remora/rref.hpp"
#include "roles.hpp"

using namespace std::chrono_literals;
using remora::MembershipEvent;
using remora::test::eventually;

namespace elastic_fns {
std::atomic<int> runs{0};  // calls of bump() this process ran
int bump(int x) {
  ++runs;
  return x + 1;
}
int runs_here() { return runs.load(); }
std::uint64_t incarnation_here() { return remora::current_agent().self().incarnation; }
torch::Tensor make_value(std::int64_t n) { return torch::full({n}, 7.0); }
torch::Tensor twice(torch::Tensor x) { return x * 2; }
int sleepy(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}
}  // namespace elastic_fns

namespace {
using remora::test::elastic_options;

// Membership events one agent saw, in order.
struct Seen {
  std::mutex mu;
  std::vector<MembershipEvent> events;
  remora::Subscription sub;
  explicit Seen(remora::Agent& agent)
      : sub(agent.on_membership([this](const MembershipEvent& e) {
          std::lock_guard lock(mu);
          events.push_back(e);
        })) {}
  bool has(MembershipEvent::Kind kind, const std::string& name, std::uint64_t incarnation) {
    std::lock_guard lock(mu);
    for (const auto& e : events)
      if (e.kind == kind && e.worker.name == name && e.worker.incarnation == incarnation) return true;
    return false;
  }
  std::string reason_of(MembershipEvent::Kind kind, const std::string& name) {
    std::lock_guard lock(mu);
    for (const auto& e : events)
      if (e.kind == kind && e.worker.name == name) return e.reason;
    return "";
  }
};

bool names_are(const std::vector<remora::WorkerInfo>& infos, std::vector<std::string> names) {
  std::vector<std::string> got;
  for (const auto& w : infos) got.push_back(w.name);
  std::sort(got.begin(), got.end());
  std::sort(names.begin(), names.end());
  return got == names;
}

// A worker of an elastic group whose store the test process hosts, serving until it is killed.
int elastic_serve(const std::vector<std::string>& args) {
  auto o = remora::test::tcp_options(static_cast<std::uint16_t>(std::stoi(args.at(0))));
  o.elastic = true;
  remora::Agent agent(args.at(1), o);
  std::this_thread::sleep_for(120s);
  return 1;
}
remora::test::RegisterRole role("elastic_serve", &elastic_serve);

}  // namespace

TEST_CASE("A worker joins a running elastic group, is met by every member and called", "[elastic]") {
  auto store = c10::make_intrusive<c10d::HashStore>();
  remora::Agent a("a", elastic_options(store));
  remora::Agent b("b", elastic_options(store));
  Seen seen_by_a(a);
  CHECK(names_are(a.get_worker_infos(), {"a", "b"}));
  CHECK(names_are(b.get_worker_infos(), {"a", "b"}));
  remora::Agent c("c", elastic_options(store));
  CHECK(names_are(c.get_worker_infos(), {"a", "b", "c"}));  // it met both when it joined
  CHECK(eventually([&] { return seen_by_a.has(MembershipEvent::joined, "c", 1); }));
  CHECK(names_are(a.get_worker_infos(), {"a", "b", "c"}));
  CHECK(a.rpc_sync<&elastic_fns::bump>("c", 1) == 2);
  CHECK(c.rpc_sync<&elastic_fns::bump>("b", 2) == 3);
  CHECK(a.get_worker_info("c").id != a.get_worker_info("b").id);
  CHECK(c.self().incarnation == 1);
  c.shutdown();
  b.shutdown();
  a.shutdown();
}

TEST_CASE("A worker that leaves an elastic group releases what it held, and the others go on", "[elastic][rref]") {
  auto store = c10::make_intrusive<c10d::HashStore>();
  remora::Agent a("a", elastic_options(store));
  remora::Agent b("b", elastic_options(store));
  remora::Agent c("c", elastic_options(store));
  Seen seen_by_a(a);
  const auto owned_before = remora::rref_stats(a).owned_values;
  // c holds a value a owns; a holds a value c owns.
  auto held_by_c = remora::remote<&elastic_fns::make_value>(c, "a", std::int64_t{3});
  CHECK(held_by_c.to_here().size(0) == 3);
  CHECK(remora::rref_stats(a).owned_values == owned_before + 1);
  auto owned_by_c = remora::remote<&elastic_fns::make_value>(a, "c", std::int64_t{2});
  CHECK(owned_by_c.to_here().size(0) == 2);
  c.shutdown();  // graceful: leaves alone
  CHECK_FALSE(c.is_running());
  CHECK(eventually([&] { return seen_by_a.has(MembershipEvent::left, "c", 1); }));
  CHECK_THAT(seen_by_a.reason_of(MembershipEvent::left, "c"), Catch::Contains("left the group"));
  CHECK(eventually([&] { return remora::rref_stats(a).owned_values == owned_before; }));  // c's reference released
  CHECK_THROWS_AS(a.rpc_sync<&elastic_fns::bump>("c", 1), remora::WorkerLost);
  CHECK_THROWS_AS(owned_by_c.to_here(), remora::WorkerLost);
  CHECK(names_are(a.get_worker_infos(), {"a", "b"}));
  CHECK(a.rpc_sync<&elastic_fns::bump>("b", 1) == 2);  // the rest goes on
  // A worker that joins now does not meet c.
  remora::Agent d("d", elastic_options(store));
  CHECK(names_are(d.get_worker_infos(), {"a", "b", "d"}));
  d.shutdown();
  b.shutdown();
  a.shutdown();
}

TEST_CASE("A worker that stopped joins again under its name as a new incarnation, and the old one stays lost",
          "[elastic][rref]") {
  auto store = c10::make_intrusive<c10d::HashStore>();
  remora::Agent a("a", elastic_options(store));
  Seen seen_by_a(a);
  auto b1 = std::make_unique<remora::Agent>("b", elastic_options(store));
  const auto old_id = b1->self().id;
  auto old_value = remora::remote<&elastic_fns::make_value>(a, "b", std::int64_t{4});
  CHECK(old_value.to_here().size(0) == 4);
  b1->shutdown(false);  // as if it died: its connections close
  CHECK(eventually([&] { return seen_by_a.has(MembershipEvent::lost, "b", 1); }));
  b1.reset();
  remora::Agent b2("b", elastic_options(store));
  CHECK(b2.self().incarnation == 2);
  CHECK(b2.self().id != old_id);
  CHECK(eventually([&] { return seen_by_a.has(MembershipEvent::joined, "b", 2); }));
  CHECK(a.get_worker_info("b").incarnation == 2);
  CHECK(a.rpc_sync<&elastic_fns::incarnation_here>("b") == 2);
  try {
    old_value.to_here();  // owned by incarnation 1
    FAIL("incarnation 1's value came back");
  } catch (const remora::WorkerLost& e) {
    CHECK_THAT(e.what(), Catch::Contains("'b'"));
  }
  b2.shutdown();
  a.shutdown();
}

TEST_CASE("A killed elastic worker is lost at once, and its restart under the same name runs none of the old calls",
          "[elastic][process]") {
  auto hosted = remora::test::host_store();
  auto o = elastic_options(hosted.store);
  remora::Agent trainer("trainer", o);
  Seen seen(trainer);
  const std::string port = std::to_string(hosted.port);
  pid_t first = remora::test::spawn_self({"--role", "elastic_serve", port, "ps"});
  REQUIRE(eventually([&] { return seen.has(MembershipEvent::joined, "ps", 1); }, 30s));
  for (int i = 0; i < 3; ++i) CHECK(trainer.rpc_sync<&elastic_fns::bump>("ps", i) == i + 1);
  CHECK(trainer.rpc_sync<&elastic_fns::runs_here>("ps") == 3);
  auto held = remora::remote<&elastic_fns::make_value>(trainer, "ps", std::int64_t{5});
  CHECK(held.to_here().size(0) == 5);
  auto pending = trainer.rpc_async<&elastic_fns::sleepy>("ps", 30000);
  const auto killed_at = std::chrono::steady_clock::now();
  ::kill(first, SIGKILL);
  CHECK_THROWS_AS(pending.get(), remora::WorkerLost);
  const auto detected_in = std::chrono::steady_clock::now() - killed_at;
  CHECK(eventually([&] { return seen.has(MembershipEvent::lost, "ps", 1); }));
  CHECK(remora::test::wait_exit(first) == 128 + SIGKILL);
  CHECK_THROWS_AS(trainer.rpc_sync<&elastic_fns::bump>("ps", 0), remora::WorkerLost);
  pid_t second = remora::test::spawn_self({"--role", "elastic_serve", port, "ps"});
  REQUIRE(eventually([&] { return seen.has(MembershipEvent::joined, "ps", 2); }, 30s));
  CHECK(trainer.rpc_sync<&elastic_fns::incarnation_here>("ps") == 2);
  CHECK(trainer.rpc_sync<&elastic_fns::runs_here>("ps") == 0);  // nothing meant for incarnation 1 ran here
  CHECK_THROWS_AS(held.to_here(), remora::WorkerLost);
  CHECK(trainer.rpc_sync<&elastic_fns::bump>("ps", 7) == 8);
  CHECK(trainer.rpc_sync<&elastic_fns::runs_here>("ps") == 1);
  ::kill(second, SIGKILL);
  CHECK(remora::test::wait_exit(second) == 128 + SIGKILL);
  CHECK(eventually([&] { return seen.has(MembershipEvent::lost, "ps", 2); }));
  trainer.shutdown();
  const double ms = std::chrono::duration<double, std::milli>(detected_in).count();
  std::fprintf(stderr, "elastic: SIGKILL to WorkerLost on the caller: %.1f ms\n", ms);
}

TEST_CASE("A connection meant for another worker id is refused before any of its calls runs", "[agent][hostile]") {
  auto g = remora::test::start_group({"a", "b"});
  elastic_fns::runs = 0;
  asio::io_context io;
  asio::ip::tcp::socket s(io);
  s.connect({asio::ip::make_address("127.0.0.1"), g[1]->listen_port()});
  auto bytes = remora::test::hello_bytes(0, "a", 0);  // a's hello, meant for a itself (id 0), sent to b
  auto call = remora::test::flatten(remora::wire::encode_frame(remora::wire::FrameKind::call, 1,
                                                               remora::function_identity<&elastic_fns::bump>.id, 1));
  bytes.insert(bytes.end(), call.begin(), call.end());
  asio::write(s, asio::buffer(bytes));
  CHECK(remora::test::closed_within(s.native_handle(), 5s));
  CHECK(elastic_fns::runs == 0);
  CHECK(g[0]->rpc_sync<&elastic_fns::bump>("b", 1) == 2);  // a's own connection is unaffected
  CHECK(elastic_fns::runs == 1);
  remora::test::shutdown_group(g);
}

TEST_CASE("An elastic group's ids go past 65536: a member that joined after many restarts is met, called, owns "
          "values and makes autograd contexts, and the join after the last id fails clearly",
          "[elastic][autograd]") {
  auto store = c10::make_intrusive<c10d::HashStore>();
  // As if the group had handed out that many ids already (joins and restarts).
  const auto hand_out = [&](std::int64_t n) { return store->add("remora/elastic/elastic/ids", n); };
  hand_out(5000);  // past the 4,096 ids of earlier builds
  remora::Agent a("a", elastic_options(store));
  CHECK(a.self().id == 5000);
  hand_out(std::int64_t{1} << 17);  // c's id does not fit in 16 bits (autograd's context ids)
  remora::Agent c("c", elastic_options(store));
  CHECK(c.self().id > (1u << 17));
  CHECK(names_are(c.get_worker_infos(), {"a", "c"}));
  CHECK(eventually([&] { return names_are(a.get_worker_infos(), {"a", "c"}); }));
  CHECK(a.rpc_sync<&elastic_fns::bump>("c", 1) == 2);
  CHECK(c.rpc_sync<&elastic_fns::bump>("a", 2) == 3);
  auto owned_by_c = remora::remote<&elastic_fns::make_value>(a, "c", std::int64_t{3});
  CHECK(owned_by_c.to_here().size(0) == 3);
  {
    auto x = torch::ones({3}, torch::requires_grad());
    remora::autograd::Context ctx(c);
    auto y = c.rpc_sync<&elastic_fns::twice>("a", x);
    remora::autograd::backward(ctx, {y.sum()});
    const auto grads = remora::autograd::get_gradients(ctx);
    REQUIRE(grads.contains(x));
    CHECK(torch::allclose(grads.at(x), torch::full({3}, 2.0)));
  }
  owned_by_c = {};
  // The group's last id is handed out: the next join says so.
  hand_out(remora::detail::kElasticIds - hand_out(0));
  CHECK_THROWS_WITH(remora::Agent("d", elastic_options(store)), Catch::Contains("handed out all"));
  CHECK(a.rpc_sync<&elastic_fns::bump>("c", 3) == 4);  // the group goes on
  c.shutdown();
  a.shutdown();
}

TEST_CASE("IdTable: entries made anywhere below the limit stay where they are, and the rest read as defaults",
          "[elastic]") {
  for (const std::uint32_t limit : {1u, 3u, 256u, 257u, 1000u}) {
    std::shared_ptr<std::string> shared;
    {
      remora::detail::IdTable<std::string> t;
      t.reserve(limit);
      CHECK(t.size() == 0);
      CHECK(t[0].empty());
      CHECK(t.find(limit) == nullptr);
      std::string& last = t.make(limit - 1);
      last = "last";
      CHECK(t.size() == limit);
      t.make(0) += "+first";
      CHECK(t.size() == limit);  // one more than the highest made
      for (std::uint32_t id = 1; id + 1 < limit; id += 97) t.make(id) = std::to_string(id);
      CHECK(&t.make(limit - 1) == &last);  // never moved
      CHECK(t[limit - 1] == (limit == 1 ? "last+first" : "last"));
      std::size_t made = 0;
      t.for_each([&](std::uint32_t, const std::string& e) { made += !e.empty(); });
      CHECK(made == (limit == 1 ? 1 : 2 + (limit - 2 + 96) / 97));
      shared = t.share(0);
    }
    CHECK(shared->ends_with("+first"));  // a shared entry outlives its table
  }
}

TEST_CASE("A joining worker finds the members through their names: one record per name, the newest, however often "
          "it restarted",
          "[elastic]") {
  namespace d = remora::detail;
  c10d::HashStore store;
  const auto join = [&](const std::string& name) {
    d::PeerAddress address;
    address.name = name;
    address.host = "127.0.0.1";
    address.port = 1;
    std::string previous;
    return d::join_elastic(store, address, false, "", previous);
  };
  join("a");
  d::MemberRecord newest;
  for (int i = 0; i < 300; ++i) newest = join("b");
  // A first incarnation that died between counting its name and listing it: the next lists it.
  store.add("elastic/incarnation/z", 1);
  store.add("elastic/names", 1);
  const auto z = join("z");
  CHECK(z.incarnation == 2);
  const auto members = d::published_members(store);
  REQUIRE(members.size() == 3);
  std::vector<std::string> names;
  for (const auto& m : members) names.push_back(m.address.name);
  std::sort(names.begin(), names.end());
  CHECK(names == std::vector<std::string>{"a", "b", "z"});
  for (const auto& m : members)
    if (m.address.name == "b") {
      CHECK(m.id == newest.id);
      CHECK(m.incarnation == 300);
    }
  CHECK(store.add("elastic/names", 0) == 4);  // a, b, the lost listing, z: not one per join
}

TEST_CASE("Elastic and static settings are not mixed", "[elastic]") {
  auto o = elastic_options(c10::make_intrusive<c10d::HashStore>());
  CHECK_THROWS_WITH(remora::Agent("a", 0, 1, o), Catch::Contains("takes no rank or world size"));
  o.elastic = false;
  CHECK_THROWS_WITH(remora::Agent("a", o), Catch::Contains("set Options::elastic"));
}

TEST_CASE("An elastic worker's device maps are checked against its devices when it joins, and against each member's",
          "[elastic]") {
  // Without CUDA (this host) every map fails on the mapping worker's own side: it has 0 devices.
  auto store = c10::make_intrusive<c10d::HashStore>();
  auto o = elastic_options(store);
  remora::Agent b("b", o);
  if (torch::cuda::device_count() == 0) {
    auto mapped = o;
    mapped.set_device_map("b", {{"cuda:0", "cuda:0"}});  // b is there
    CHECK_THROWS_WITH(remora::Agent("a", mapped),
                      Catch::Contains("the device map of worker 'a' to 'b' maps from cuda:0, but 'a' has 0 CUDA devices"));
    mapped.device_maps.clear();
    mapped.set_device_map("later", {{"cuda:0", "cuda:1"}});  // a worker that has not joined
    CHECK_THROWS_WITH(remora::Agent("a2", mapped), Catch::Contains("but 'a2' has 0 CUDA devices"));
  }
  auto bad = o;
  bad.set_device_map("b", {{"cpu", "cuda:0"}});
  CHECK_THROWS_WITH(remora::Agent("a3", bad), Catch::Contains("device maps map indexed CUDA devices"));
  // The failed joins (refused before they published anything) left nothing behind: the group
  // goes on, and a plain worker joins it.
  remora::Agent c("c", o);
  CHECK(c.rpc_sync<&elastic_fns::bump>("b", 1) == 2);
  c.shutdown();
  b.shutdown();
}

TEST_CASE("remora-worker --store hosts an elastic group's store, so the group outlives each of its workers",
          "[elastic][process][worker]") {
  std::uint16_t port = 0;
  {
    asio::io_context io;  // a port the kernel picks, given back for the store to take
    asio::ip::tcp::acceptor probe(io, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    port = probe.local_endpoint().port();
  }
  pid_t store = remora::test::spawn_self({"--store", std::to_string(port)}, REMORA_WORKER);
  REQUIRE(eventually([&] { return remora::detail::accepts_connections(port); }, 30s));
  remora::Options o = elastic_options({});
  o.init_method = "tcp://127.0.0.1:" + std::to_string(port);
  {
    auto a = std::make_unique<remora::Agent>("a", o);  // the first to join: hosts nothing
    remora::Agent b("b", o);
    CHECK(b.rpc_sync<&elastic_fns::bump>("a", 1) == 2);
    a->shutdown();
    a.reset();
    remora::Agent c("c", o);  // joins after the first member is gone
    CHECK(c.rpc_sync<&elastic_fns::bump>("b", 1) == 2);
    c.shutdown();
    b.shutdown();
  }
  ::kill(store, SIGTERM);
  CHECK(remora::test::wait_exit(store) == 0);
}

TEST_CASE("remora-worker --elastic joins a running group, leaves it on SIGTERM and joins again as the next incarnation",
          "[elastic][process][worker]") {
  auto hosted = remora::test::host_store();
  remora::Agent trainer("trainer", elastic_options(hosted.store));
  Seen seen(trainer);
  const std::vector<std::string> args = {"--elastic", "--name", "ops", "--operators", "aten::add",
                                         "--init-method", "tcp://127.0.0.1:" + std::to_string(hosted.port)};
  for (std::uint64_t incarnation : {1, 2}) {
    pid_t worker = remora::test::spawn_self(args, REMORA_WORKER);
    REQUIRE(eventually([&] { return seen.has(MembershipEvent::joined, "ops", incarnation); }, 30s));
    auto sum = remora::rpc_sync<torch::Tensor>(trainer, "ops", "aten::add", torch::ones({2}), torch::ones({2}));
    CHECK(torch::equal(sum, torch::full({2}, 2.0)));
    ::kill(worker, SIGTERM);
    CHECK(remora::test::wait_exit(worker) == 0);
    CHECK(eventually([&] { return seen.has(MembershipEvent::left, "ops", incarnation); }));
    CHECK_THROWS_AS(remora::rpc_sync<torch::Tensor>(trainer, "ops", "aten::add", torch::ones({2}), torch::ones({2})),
                    remora::WorkerLost);
  }
  trainer.shutdown();
}
