// GPU figures, run on the device machine by scripts/gpu-test beside PyTorch's RemoteModule anchor:
// RemoteModule forward of 4 B on cpu and on cuda:0 (no device map: CPU tensors in and out), and
// with a device map cuda:0 -> cuda:0 the forward and the echo of CUDA tensors, against two
// device-to-device copies of the same size. Two agents in one process; REMORA_TRANSPORT picks
// the transport. Prints one "name value" line per figure.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/cuda.h>

#include "remora/agent/rpc.hpp"
#include "remora/module/remote_module.hpp"

namespace gpu_bench {
torch::Tensor echo(torch::Tensor x) { return x; }
struct EchoInterface {
  virtual ~EchoInterface() = default;
  virtual torch::Tensor forward(torch::Tensor x) = 0;
};
struct Echo : torch::nn::Module, EchoInterface {
  torch::Tensor forward(torch::Tensor x) override { return x; }
};
}  // namespace gpu_bench

namespace {
using clock_type = std::chrono::steady_clock;

template <class F>
void time_calls(const char* name, int iters, std::size_t bytes, F&& call) {
  for (int i = 0; i < std::max(3, iters / 10); ++i) call();
  std::vector<double> us;
  auto start = clock_type::now();
  for (int i = 0; i < iters; ++i) {
    auto t = clock_type::now();
    call();
    us.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - t).count());
  }
  const double mean = std::chrono::duration<double, std::micro>(clock_type::now() - start).count() / iters;
  std::sort(us.begin(), us.end());
  std::printf("%s_p50_us %.1f\n%s_mean_us %.1f\n", name, us[us.size() / 2], name, mean);
  if (bytes >= (1 << 20)) std::printf("%s_GBps %.2f\n", name, 2.0 * bytes / mean / 1e3);
}
}  // namespace

struct Pair {
  std::unique_ptr<remora::Agent> a, b;
  explicit Pair(bool device_map) {
    remora::Options o;
    o.store = c10::make_intrusive<c10d::HashStore>();
    if (device_map) o.set_device_map("w1", {{"cuda:0", "cuda:0"}});
    std::thread tb([&] { b = std::make_unique<remora::Agent>("w1", 1, 2, o); });
    a = std::make_unique<remora::Agent>("w0", 0, 2, o);
    tb.join();
  }
  ~Pair() {
    std::thread sb([&] { b->shutdown(); });
    a->shutdown();
    sb.join();
  }
};
using Module = remora::RemoteModule<gpu_bench::EchoInterface>;

int main() {
  if (!torch::cuda::is_available()) {
    std::fprintf(stderr, "gpu_bench: no CUDA device\n");
    return 1;
  }
  const auto big = std::size_t{64} << 20;
  auto small_cpu = torch::ones({1});
  {
    Pair p(false);  // no device map: CPU tensors in and out, as PyTorch's anchor without --device-map
    std::printf("transport %s\n", p.a->transport_to("w1").c_str());
    auto cpu_module = Module::create<gpu_bench::Echo>(*p.a, "w1/cpu");
    auto gpu_module = Module::create<gpu_bench::Echo>(*p.a, "w1/cuda:0");
    time_calls("forward_cpu_module_4B", 3000, 4, [&] { cpu_module.forward(small_cpu); });
    time_calls("forward_cuda_module_4B", 3000, 4, [&] { gpu_module.forward(small_cpu); });
  }
  Pair p(true);  // cuda:0 -> cuda:0: CUDA tensors both ways, as the anchor with --device-map
  auto gpu_module = Module::create<gpu_bench::Echo>(*p.a, "w1/cuda:0");
  auto small_gpu = torch::ones({1}, torch::kCUDA);
  time_calls("forward_cuda_mapped_4B", 3000, 4, [&] { gpu_module.forward(small_gpu); });
  auto big_gpu = torch::ones({static_cast<int64_t>(big / 4)}, torch::kCUDA);
  time_calls("forward_cuda_mapped_64MiB", 30, big, [&] { gpu_module.forward(big_gpu); });
  time_calls("echo_cuda_mapped_64MiB", 30, big, [&] { p.a->rpc_sync<&gpu_bench::echo>("w1", big_gpu); });

  // The physical reference: two device-to-device copies of 64 MiB (out and back).
  auto d1 = torch::empty_like(big_gpu), d2 = torch::empty_like(big_gpu);
  time_calls("two_d2d_copies_64MiB", 50, big, [&] {
    d1.copy_(big_gpu);
    d2.copy_(d1);
    torch::cuda::synchronize();
  });
  gpu_module = {};
}
