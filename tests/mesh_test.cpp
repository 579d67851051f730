// Meshes: DeviceMesh construction and slicing, c10d process groups over a mesh's dimensions
// (Gloo) used between remora calls, groups of remote modules with every placement checked
// against the same computation done locally, and a member lost mid-call.
#include <atomic>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "agent_support.hpp"
#include "remora/mesh.hpp"

using namespace std::chrono_literals;

namespace meshfns {
struct Scorer {
  virtual ~Scorer() = default;
  virtual torch::Tensor forward(torch::Tensor x, double scale = 1.0) = 0;
  virtual std::int64_t calls() = 0;
};
// Weights that depend only on the constructor's arguments: the same module can be built here to
// check what the members answer.
struct Affine : torch::nn::Module, Scorer {
  Affine(std::int64_t in, std::int64_t out, double offset = 0.0)
      : w(register_parameter("w", torch::arange(in * out, torch::kFloat).reshape({out, in}) / 10 + offset)),
        b(register_parameter("b", torch::full({out}, 0.5))) {}
  torch::Tensor forward(torch::Tensor x, double scale) override {
    ++n;
    return (torch::matmul(x, w.t()) + b) * scale;
  }
  std::int64_t calls() override { return n; }
  torch::Tensor w, b;
  std::int64_t n = 0;
};
int add(int a, int b) { return a + b; }
}  // namespace meshfns

namespace {
using meshfns::Affine;
using meshfns::Scorer;
using remora::DeviceMesh;
using remora::test::shutdown_group;
using remora::test::start_group;

DeviceMesh square() { return DeviceMesh({"w1/cpu", "w2/cpu", "w3/cpu", "w4/cpu"}, {2, 2}, {"dp", "pp"}); }
}  // namespace

TEST_CASE("DeviceMesh: shape, names, points, slices, and the errors of each", "[mesh]") {
  auto mesh = square();
  CHECK(mesh.size() == 4);
  CHECK(mesh.size("pp") == 2);
  CHECK(mesh.ndim() == 2);
  CHECK(mesh.at({1, 0}) == "w3/cpu");
  CHECK(mesh.slice("dp", 0).devices() == std::vector<std::string>{"w1/cpu", "w3/cpu"});
  CHECK(mesh.slice("dp", 1).devices() == std::vector<std::string>{"w2/cpu", "w4/cpu"});
  CHECK(mesh.slice("pp", 1).devices() == std::vector<std::string>{"w3/cpu", "w4/cpu"});
  CHECK(mesh.slice("dp", 0).dims() == std::vector<std::string>{"dp"});
  auto [through, position] = mesh.slice_through("dp", "w4");
  CHECK(through.devices() == std::vector<std::string>{"w2/cpu", "w4/cpu"});
  CHECK(position == 1);
  DeviceMesh cube({"a/cpu", "b/cpu", "c/cpu", "d/cpu", "e/cpu", "f/cpu", "g/cpu", "h/cpu"}, {2, 2, 2}, {"x", "y", "z"});
  CHECK(cube.slice("y", 3).devices() == std::vector<std::string>{"f/cpu", "h/cpu"});  // x=1, z=1

  CHECK_THROWS_WITH(DeviceMesh({"w1/cpu", "w2/cpu", "w3/cpu"}, {2, 2}, {"dp", "pp"}),
                    Catch::Contains("a shape of 4 points for 3 devices"));
  CHECK_THROWS_WITH(DeviceMesh({"w1/cpu", "w2/cpu"}, {2}, {"dp", "pp"}), Catch::Contains("2 dimension names"));
  CHECK_THROWS_WITH(DeviceMesh({"w1/cpu", "w2/cpu", "w3/cpu", "w4/cpu"}, {2, 2}, {"dp", "dp"}),
                    Catch::Contains("two dimensions are named 'dp'"));
  CHECK_THROWS_WITH(DeviceMesh({"w1/cpu", "w1/cpu"}, {2}, {"dp"}), Catch::Contains("'w1/cpu' appears twice"));
  CHECK_THROWS_AS(DeviceMesh({"w1/tpu:0"}), remora::Error);
  CHECK_THROWS_WITH(mesh.at({2, 0}), Catch::Contains("outside dimension 'dp' of size 2"));
  CHECK_THROWS_WITH(mesh.slice("tp", 0), Catch::Contains("no dimension 'tp' (it has dp, pp)"));
  CHECK_THROWS_WITH(mesh.slice("dp", 2), Catch::Contains("there are 2 slices"));
  CHECK_THROWS_WITH(mesh.slice_through("dp", "w9"), Catch::Contains("worker 'w9' has no point in the mesh"));
}

TEST_CASE("Process groups over a mesh's dimensions: all_reduce, broadcast and barrier between remora calls",
          "[mesh][agent]") {
  auto g = start_group({"w1", "w2", "w3", "w4"});
  const auto mesh = square();
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  std::vector<std::string> errors(4);
  for (int r = 0; r < 4; ++r)
    threads.emplace_back([&, r] {
      try {
        auto& agent = *g[r];
        auto dp = remora::process_group(agent, mesh, "dp");  // {w1, w3} or {w2, w4}
        auto pp = remora::process_group(agent, mesh, "pp");  // {w1, w2} or {w3, w4}
        auto all = remora::process_group(agent, mesh);
        if (dp->getSize() != 2 || dp->getRank() != r / 2 || pp->getRank() != r % 2 || all->getRank() != r) ++failures;
        // A remora call, then a collective, then a call again.
        if (agent.rpc_sync<&meshfns::add>(g[(r + 1) % 4]->self().name, r, 1) != r + 1) ++failures;
        std::vector<torch::Tensor> t = {torch::full({2}, float(r + 1))};
        dp->allreduce(t)->wait();
        const float want = r % 2 == 0 ? 1 + 3 : 2 + 4;  // the two members of this worker's "dp" slice
        if (!torch::equal(t[0], torch::full({2}, want))) ++failures;
        std::vector<torch::Tensor> b = {torch::full({1}, float(10 * (r + 1)))};
        pp->broadcast(b)->wait();  // from each "pp" slice's rank 0: w1 or w3
        if (b[0].item<float>() != (r < 2 ? 10.f : 30.f)) ++failures;
        all->barrier()->wait();
        std::vector<torch::Tensor> s = {torch::ones({1})};
        all->allreduce(s)->wait();
        if (s[0].item<float>() != 4.f) ++failures;
        if (agent.rpc_sync<&meshfns::add>(g[(r + 3) % 4]->self().name, 40, 2) != 42) ++failures;
      } catch (const std::exception& e) {
        errors[r] = e.what();
        ++failures;
      }
    });
  for (auto& t : threads) t.join();
  for (const auto& e : errors) CHECK(e.empty());
  CHECK(failures == 0);
  CHECK_THROWS_WITH(remora::process_group(*g[0], DeviceMesh({"w2/cpu", "w3/cpu"}), "d0"),
                    Catch::Contains("worker 'w1' has no point in the mesh"));
  CHECK_THROWS_WITH(remora::process_group(*g[0], DeviceMesh({"w1/cpu", "w1/cuda:0"})),
                    Catch::Contains("two points in the mesh"));
  shutdown_group(g);
}

TEST_CASE("A group of remote modules: every placement against the same computation done locally",
          "[mesh][agent]") {
  auto g = start_group({"w0", "w1", "w2", "w3", "w4"});
  remora::Agent& me = *g[0];
  const auto dp = square().slice("dp", 0);  // w1, w3
  auto group = remora::RemoteModuleGroup<Scorer>::create<Affine>(me, dp, std::int64_t{4}, std::int64_t{2});
  REQUIRE(group.size() == 2);
  CHECK(group.member(1).owner_name() == "w3");
  Affine local(4, 2);
  auto x = torch::randn({5, 4});
  // Shard(0): rows 0-1 to w1, rows 2-4 to w3; concatenated back.
  CHECK(torch::allclose(group.forward(remora::Shard(0, x), remora::Replicate(2.0)), local.forward(x, 2.0)));
  auto x6 = torch::randn({6, 4});  // even pieces, which Shard(1) can put side by side
  CHECK(torch::allclose(group.forward_as(remora::Shard(1), remora::Shard(0, x6), 1.0),
                        torch::cat({local.forward(x6.narrow(0, 0, 3), 1.0), local.forward(x6.narrow(0, 3, 3), 1.0)}, 1)));
  CHECK(torch::allclose(group.forward_as(remora::Partial(), x, 0.5), local.forward(x, 0.5) * 2));
  CHECK(torch::allclose(group.forward_as(remora::Replicate(), x, 1.0), local.forward(x, 1.0)));
  auto each = group.forward_each(x, 3.0);
  REQUIRE(each.size() == 2);
  for (auto& f : each) CHECK(torch::allclose(f.get(), local.forward(x, 3.0)));
  CHECK(group.call<&Scorer::calls>() == std::vector<std::int64_t>{5, 5});

  // Placements that do not fit fail before anything is sent.
  CHECK_THROWS_WITH(group.forward(remora::Shard(2, x), 1.0), Catch::Contains("Shard(2) of a tensor with 2 dimensions"));
  CHECK_THROWS_WITH(group.forward(remora::Shard(0, torch::ones({1, 4})), 1.0),
                    Catch::Contains("of size 1 along it cannot give each of 2 members a piece"));
  CHECK_THROWS_WITH(group.forward(remora::Shard(0), 1.0), Catch::Contains("is a result placement"));
  CHECK(group.call<&Scorer::calls>() == std::vector<std::int64_t>{5, 5});

  // Members that disagree, under Replicate().
  auto odd = remora::RemoteModuleGroup<Scorer>::from_members(
      DeviceMesh({"w2/cpu", "w4/cpu"}),
      {remora::RemoteModule<Scorer>::create<Affine>(me, "w2/cpu", std::int64_t{4}, std::int64_t{2}),
       remora::RemoteModule<Scorer>::create<Affine>(me, "w4/cpu", std::int64_t{4}, std::int64_t{2}, 1.0)});
  CHECK_THROWS_WITH(odd.forward_as(remora::Replicate(), x, 1.0),
                    Catch::Contains("member 1 ('w4/cpu') disagrees with member 0 ('w2/cpu')"));

  // A member lost: the group call fails with WorkerLost naming it; forward_each keeps the others.
  g[2]->shutdown(false);  // w2: odd's member 0
  auto after = odd.forward_each(x, 1.0);
  CHECK_THROWS_AS(after[0].get(), remora::WorkerLost);
  CHECK(torch::allclose(after[1].get(), Affine(4, 2, 1.0).forward(x, 1.0)));
  CHECK_THROWS_WITH(odd.forward(remora::Shard(0, x), 1.0), Catch::Contains("worker 'w2'"));
  CHECK_THROWS_AS(odd.forward(remora::Shard(0, x), 1.0), remora::WorkerLost);
  group = {};
  odd = {};
  for (int i : {0, 1, 3, 4}) g[i]->shutdown(false);
}
