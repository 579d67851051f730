// Two GPUs of one host (issue 23): device maps cuda:0 -> cuda:1 and back, a RemoteModule on
// cuda:1 called from cuda:0, RRefs across the two devices, a pipeline with one stage per GPU
// trained with distributed autograd, an NCCL process group over a two-GPU mesh, and two
// processes handing GPU tensors by CUDA IPC with peer access. scripts/gpu-test --two-gpus runs
// these over the local transport and over TCP; with fewer than two GPUs they say so and skip.
#include <thread>

#include <catch2/catch.hpp>
#include <torch/cuda.h>

#include "agent_support.hpp"
#include "process_support.hpp"
#include "roles.hpp"
#include "remora/autograd.hpp"
#include "remora/mesh.hpp"
#include "remora/module/remote_module.hpp"

namespace two_gpu {
std::string device_of(torch::Tensor t) { return t.device().str(); }
torch::Tensor scale(torch::Tensor t, double f) { return t * f; }
torch::Tensor arange_on_cuda1(std::int64_t n) { return torch::arange(n, torch::kFloat).to(torch::Device("cuda:1")); }

struct Stage {
  virtual ~Stage() = default;
  virtual torch::Tensor forward(torch::Tensor x) = 0;
};
// y = w * x with a scalar weight the test knows, on the module's device.
struct Scale : torch::nn::Module, Stage {
  explicit Scale(double w0) { w = register_parameter("w", torch::full({1}, w0)); }
  torch::Tensor forward(torch::Tensor x) override { return x * w; }
  torch::Tensor w;
};
// The gradient of stage `m`'s weight in autograd context `context`, on its owner, on the CPU.
torch::Tensor weight_grad(remora::RRef<Stage> m, std::uint64_t context) {
  auto grads = remora::autograd::get_gradients(context);
  auto it = grads.find(dynamic_cast<Scale&>(m.local_value()).w);
  return it == grads.end() ? torch::Tensor() : it->value().cpu();
}
int two_gpu_server(const std::vector<std::string>& args) {
  remora::Agent agent("server", 1, 2, remora::test::tcp_options(static_cast<std::uint16_t>(std::stoi(args.at(0)))));
  agent.shutdown();
  return 0;
}
remora::test::RegisterRole role("two_gpu_server", &two_gpu_server);
}  // namespace two_gpu

namespace {
using remora::test::shutdown_group;
using remora::test::start_group;
#define REMORA_NEED_TWO_GPUS                                                        \
  if (torch::cuda::device_count() < 2) {                                            \
    WARN("skipped: needs two GPUs, this machine has " << torch::cuda::device_count()); \
    return;                                                                         \
  }
const torch::Device cuda0("cuda:0"), cuda1("cuda:1");
}  // namespace

TEST_CASE("Two GPUs: a map cuda:0 -> cuda:1 delivers there, and replies come back to cuda:0", "[two_gpus]") {
  REMORA_NEED_TWO_GPUS;
  remora::Options o;
  o.set_device_map("b", {{"cuda:0", "cuda:1"}});
  auto g = start_group({"a", "b"}, o);
  for (std::int64_t n : {std::int64_t{1}, std::int64_t{16} << 20}) {  // 4 B and 64 MiB
    auto x = torch::randn({n}, cuda0);
    CHECK(g[0]->rpc_sync<&two_gpu::device_of>("b", x) == "cuda:1");
    auto y = g[0]->rpc_sync<&two_gpu::scale>("b", x, 3.0);
    CHECK(y.device() == cuda0);
    CHECK(torch::allclose(y, x * 3));
  }
  // An RRef owned on b whose value lives on b's cuda:1 comes here on cuda:0.
  auto r = remora::remote<&two_gpu::arange_on_cuda1>(*g[0], "b", std::int64_t{8});
  auto here = r.to_here();
  CHECK(here.device() == cuda0);
  CHECK(torch::equal(here.cpu(), torch::arange(8, torch::kFloat)));
  r = {};
  // A module on b's cuda:1 called with cuda:0 tensors answers on cuda:0.
  auto m = remora::RemoteModule<two_gpu::Stage>::create<two_gpu::Scale>(*g[0], "b/cuda:1", 2.0);
  auto x = torch::randn({4, 4}, cuda0);
  auto y = m.forward(x);
  CHECK(y.device() == cuda0);
  CHECK(torch::allclose(y, x * 2));
  m = {};
  shutdown_group(g);
}

TEST_CASE("Two GPUs: a two-stage pipeline, one stage per GPU, trained with distributed autograd", "[two_gpus]") {
  REMORA_NEED_TWO_GPUS;
  remora::Options o;
  o.set_device_map("s1", {{"cuda:0", "cuda:0"}});
  o.set_device_map("s2", {{"cuda:0", "cuda:1"}});
  auto g = start_group({"trainer", "s1", "s2"}, o);
  auto& t = *g[0];
  auto stage1 = remora::RemoteModule<two_gpu::Stage>::create<two_gpu::Scale>(t, "s1/cuda:0", 2.0);
  auto stage2 = remora::RemoteModule<two_gpu::Stage>::create<two_gpu::Scale>(t, "s2/cuda:1", 3.0);
  auto x = torch::randn({8}, cuda0);
  for (int step = 0; step < 2; ++step) {
    remora::autograd::Context ctx;
    auto y = stage2.forward(stage1.forward(x));
    CHECK(y.device() == cuda0);
    CHECK(torch::allclose(y, x * 6));
    remora::autograd::backward(ctx, {y.sum()});
    // loss = sum(w2 * w1 * x): d/dw1 = w2 * sum(x), d/dw2 = w1 * sum(x).
    const double sx = x.sum().item<double>();
    auto g1 = t.rpc_sync<&two_gpu::weight_grad>("s1", stage1.module_rref(), ctx.id());
    auto g2 = t.rpc_sync<&two_gpu::weight_grad>("s2", stage2.module_rref(), ctx.id());
    REQUIRE(g1.defined());
    REQUIRE(g2.defined());
    CHECK(g1.item<double>() == Approx(3.0 * sx).epsilon(1e-4));
    CHECK(g2.item<double>() == Approx(2.0 * sx).epsilon(1e-4));
  }
  stage1 = {};
  stage2 = {};
  shutdown_group(g);
}

TEST_CASE("Two GPUs: an NCCL process group over a mesh of cuda:0 and cuda:1, between remora calls", "[two_gpus][mesh]") {
  REMORA_NEED_TWO_GPUS;
  auto g = start_group({"a", "b"});
  const remora::DeviceMesh mesh({"a/cuda:0", "b/cuda:1"}, "dp");
  std::vector<std::string> errors(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r)
    threads.emplace_back([&, r] {
      try {
        auto pg = remora::process_group(*g[r], mesh, "dp");
        const torch::Device dev(torch::kCUDA, static_cast<c10::DeviceIndex>(r));
        std::vector<torch::Tensor> t = {torch::full({4}, float(r + 1), dev)};
        pg->allreduce(t)->wait();
        torch::cuda::synchronize(r);
        if (!torch::equal(t[0].cpu(), torch::full({4}, 3.f))) errors[r] = "allreduce gave " + std::to_string(t[0][0].item<float>());
      } catch (const std::exception& e) {
        errors[r] = e.what();
      }
    });
  for (auto& th : threads) th.join();
  for (const auto& e : errors) CHECK(e.empty());
  shutdown_group(g);
}

TEST_CASE("Two GPUs, two processes: GPU tensors cross by CUDA IPC with peer access, cuda:0 -> cuda:1",
          "[two_gpus][process]") {
  REMORA_NEED_TWO_GPUS;
  auto hosted = remora::test::host_store();
  pid_t child = remora::test::spawn_self({"--role", "two_gpu_server", std::to_string(hosted.port)});
  {
    auto o = remora::test::hosted_options(hosted);
    o.set_device_map("server", {{"cuda:0", "cuda:1"}});
    remora::Agent client("client", 0, 2, o);
    for (std::int64_t n : {std::int64_t{1}, std::int64_t{16} << 20}) {
      auto x = torch::randn({n}, cuda0);
      CHECK(client.rpc_sync<&two_gpu::device_of>("server", x) == "cuda:1");
      auto y = client.rpc_sync<&two_gpu::scale>("server", x, 0.5);
      CHECK(y.device() == cuda0);
      CHECK(torch::allclose(y, x * 0.5));
    }
    client.shutdown();
  }
  CHECK(remora::test::wait_exit(child) == 0);
}
