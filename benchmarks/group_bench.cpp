// A data-parallel forward through a RemoteModuleGroup of 4 replicas (the batch sharded along
// dim 0, results concatenated) against the same four forward_async calls made by hand, and
// against the whole batch run by one member. Five agents in one process over the transport
// REMORA_TRANSPORT picks. Then weight sync: a 512 MiB state (named_parameters of an Mlp(8192))
// loaded into one member and into three, against one memcpy of as many bytes. Prints `name value`
// lines; scripts/bench reads them.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include <remora/mesh.hpp>
#include <remora/remora.hpp>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/nn.h>

namespace bench {
struct Block {
  virtual ~Block() = default;
  virtual torch::Tensor forward(torch::Tensor x) = 0;
};
struct Mlp : torch::nn::Module, Block {
  explicit Mlp(std::int64_t width)
      : a(register_module("a", torch::nn::Linear(width, width))), b(register_module("b", torch::nn::Linear(width, width))) {}
  torch::Tensor forward(torch::Tensor x) override { return b->forward(torch::relu(a->forward(x))); }
  torch::nn::Linear a, b;
};
}  // namespace bench

namespace {
template <class F>
double mean_us(int iters, F&& f) {
  for (int i = 0; i < std::max(3, iters / 10); ++i) f();
  const auto t = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) f();
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t).count() / iters;
}
}  // namespace

int main() {
  torch::set_num_threads(1);
  remora::Options o;
  o.store = c10::make_intrusive<c10d::HashStore>();
  const std::vector<std::string> names = {"w0", "w1", "w2", "w3", "w4"};
  std::vector<std::unique_ptr<remora::Agent>> agents(names.size());
  {
    std::vector<std::thread> t;
    for (std::size_t i = 0; i < names.size(); ++i)
      t.emplace_back([&, i] { agents[i] = std::make_unique<remora::Agent>(names[i], int(i), int(names.size()), o); });
    for (auto& th : t) th.join();
  }
  remora::Agent& me = *agents[0];
  const remora::DeviceMesh replicas({"w1/cpu", "w2/cpu", "w3/cpu", "w4/cpu"}, "dp");
  struct Size {
    const char* name;
    std::int64_t batch, width;
    int iters;
  };
  for (const Size s : {Size{"small", 64, 32, 2000}, Size{"large", 2048, 512, 50}}) {
    auto group = remora::RemoteModuleGroup<bench::Block>::create<bench::Mlp>(me, replicas, s.width);
    auto x = torch::randn({s.batch, s.width});
    const double grouped = mean_us(s.iters, [&] { group.forward(remora::Shard(0, x)); });
    const double by_hand = mean_us(s.iters, [&] {
      const auto piece = s.batch / 4;
      std::vector<remora::Future<torch::Tensor>> f;
      for (int i = 0; i < 4; ++i)
        f.push_back(group.member(i).forward_async(x.narrow(0, i * piece, i == 3 ? s.batch - 3 * piece : piece)));
      std::vector<torch::Tensor> out;
      for (auto& fi : f) out.push_back(fi.get());
      torch::cat(out);
    });
    const double one = mean_us(s.iters, [&] { group.member(0).forward(x); });
    std::printf("group_%s_us %.1f\nby_hand_%s_us %.1f\none_member_%s_us %.1f\n", s.name, grouped, s.name, by_hand,
                s.name, one);
  }
  {
    const auto best_ms = [](auto&& f) {
      double best = 1e300;
      for (int round = 0; round < 3; ++round) {
        const auto t = std::chrono::steady_clock::now();
        f();
        best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count());
      }
      return best;
    };
    auto model = std::make_shared<bench::Mlp>(8192);
    const auto named = model->named_parameters();
    std::int64_t bytes = 0;
    for (const auto& p : model->parameters()) bytes += static_cast<std::int64_t>(p.nbytes());
    auto from = torch::ones({bytes}, torch::kByte);
    auto to = torch::zeros({bytes}, torch::kByte);
    const double copy_ms = best_ms([&] { std::memcpy(to.data_ptr(), from.data_ptr(), static_cast<std::size_t>(bytes)); });
    std::printf("weight_sync_bytes %lld\nweight_sync_memcpy_ms %.1f\n", static_cast<long long>(bytes), copy_ms);
    for (int n : {1, 3}) {
      std::vector<std::string> points;
      for (int i = 1; i <= n; ++i) points.push_back("w" + std::to_string(i) + "/cpu");
      auto group = remora::RemoteModuleGroup<bench::Block>::create<bench::Mlp>(me, remora::DeviceMesh(points),
                                                                               std::int64_t{8192});
      group.load_state_dict(named);  // the members' receive buffers touched once
      std::printf("weight_sync_%d_members_ms %.1f\n", n, best_ms([&] { group.load_state_dict(named); }));
    }
  }
  std::vector<std::thread> t;
  for (auto& a : agents) t.emplace_back([&a] { a->shutdown(); });
  for (auto& th : t) th.join();
}
