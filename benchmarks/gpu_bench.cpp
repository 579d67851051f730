// GPU figures, run on the device machine by scripts/gpu-test beside PyTorch's RemoteModule anchor:
// RemoteModule forward of 4 B on cpu and on cuda:0 (no device map: CPU tensors in and out; two
// agents in one process), and between two processes with a device map cuda:0 -> cuda:0 the
// forward and the echo of CUDA tensors, against two device-to-device copies of the same size.
// REMORA_TRANSPORT picks the transport. Prints one "name value" line per figure.
#include <spawn.h>
#include <sys/wait.h>

#include <algorithm>
#include <filesystem>
#include <future>
#include <string>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <c10/cuda/CUDAStream.h>
#include <torch/cuda.h>

#include <asio/post.hpp>
#include <asio/thread_pool.hpp>

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
// A CPU module that does the GPU work of a cuda:0 module call (upload, download) itself: what
// the cuda:0 call costs beyond this one is remora's.
struct GpuRoundTrip : torch::nn::Module, EchoInterface {
  torch::Tensor forward(torch::Tensor x) override { return x.to(torch::kCUDA, true).cpu(); }
};
// The same through pinned buffers kept from call to call: both copies queued, one stream wait.
struct PinnedGpuRoundTrip : torch::nn::Module, EchoInterface {
  torch::Tensor forward(torch::Tensor x) override {
    if (!in.defined() || in.sizes() != x.sizes()) {
      in = torch::empty_like(x).pin_memory();
      out = torch::empty_like(x).pin_memory();
    }
    in.copy_(x);
    out.copy_(in.to(torch::kCUDA, true), true);
    c10::cuda::getCurrentCUDAStream().synchronize();
    return out.clone();
  }
  torch::Tensor in, out;
};
}  // namespace gpu_bench

extern char** environ;

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

struct Pair {
  std::unique_ptr<remora::Agent> a, b;
  // `server_threads`: w1's worker threads (Options::num_worker_threads; 0: the default).
  explicit Pair(int server_threads = 0) {
    remora::Options o;
    o.store = c10::make_intrusive<c10d::HashStore>();
    remora::Options ob = o;
    if (server_threads) ob.num_worker_threads = server_threads;
    std::thread tb([&] { b = std::make_unique<remora::Agent>("w1", 1, 2, ob); });
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

remora::Options pair_options(const std::string& port) {
  remora::Options o;
  o.init_method = "tcp://127.0.0.1:" + port;
  // REMORA_GPU_BENCH_IPC_MIN=BYTES: the size from which tensors cross by shared memory or CUDA
  // IPC handle (Options::shared_memory_min_bytes; 0: every GPU tensor by handle), for the A/B of
  // small mapped calls.
  if (const char* v = std::getenv("REMORA_GPU_BENCH_IPC_MIN"); v && *v) o.shared_memory_min_bytes = std::stoull(v);
  return o;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "--serve") {  // the second process: serves until shutdown
    remora::Agent server("w1", 1, 2, pair_options(argv[2]));
    server.shutdown();
    return 0;
  }
  if (!torch::cuda::is_available()) {
    std::fprintf(stderr, "gpu_bench: no CUDA device\n");
    return 1;
  }
  const auto big = std::size_t{64} << 20;
  auto small_cpu = torch::ones({1});
  const std::string part = std::getenv("REMORA_GPU_BENCH") ? std::getenv("REMORA_GPU_BENCH") : "";
  if (part == "module") {
    // REMORA_GPU_BENCH=module: the A/B of a cuda:0 module called with CPU tensors. Its calls on
    // one worker thread (one thread per device, for a worker with one GPU) against the default
    // pool; and the copies such a call makes, through pinned buffers kept between calls against
    // from pageable memory, done by a CPU module. Taken in turns: this GPU's figures drift.
    for (int round = 0; round < 2; ++round) {
      for (int threads : {0, 1}) {
        Pair p(threads);
        auto gpu_module = Module::create<gpu_bench::Echo>(*p.a, "w1/cuda:0");
        const std::string name = "forward_cuda_module_server_threads_" + std::to_string(threads ? threads : 4) + "_4B";
        time_calls(name.c_str(), 3000, 4, [&] { gpu_module.forward(small_cpu); });
      }
      Pair p;
      auto pageable = Module::create<gpu_bench::GpuRoundTrip>(*p.a, "w1/cpu");
      auto pinned = Module::create<gpu_bench::PinnedGpuRoundTrip>(*p.a, "w1/cpu");
      time_calls("forward_cpu_module_doing_gpu_work_pageable_4B", 3000, 4, [&] { pageable.forward(small_cpu); });
      time_calls("forward_cpu_module_doing_gpu_work_pinned_4B", 3000, 4, [&] { pinned.forward(small_cpu); });
    }
    return 0;
  }
  // REMORA_GPU_BENCH=mapped: only the two processes with a device map (the A/B of scripts/gpu-test).
  const bool only_mapped = part == "mapped";
  if (!only_mapped) {
    Pair p;  // one process, no device map: CPU tensors in and out, as PyTorch's anchor without --device-map
    auto cpu_module = Module::create<gpu_bench::Echo>(*p.a, "w1/cpu");
    auto gpu_module = Module::create<gpu_bench::Echo>(*p.a, "w1/cuda:0");
    time_calls("forward_cpu_module_4B", 3000, 4, [&] { cpu_module.forward(small_cpu); });
    time_calls("forward_cuda_module_4B", 3000, 4, [&] { gpu_module.forward(small_cpu); });
    auto gpu_work_module = Module::create<gpu_bench::GpuRoundTrip>(*p.a, "w1/cpu");
    time_calls("forward_cpu_module_doing_gpu_work_4B", 3000, 4, [&] { gpu_work_module.forward(small_cpu); });
    // The GPU work a cuda:0 module call cannot avoid: upload (queued), download (waited for).
    time_calls("upload_then_download_4B", 3000, 4, [&] { small_cpu.to(torch::kCUDA, true).cpu(); });
    // The same work handed to a pool thread and waited for: on 4 threads (any of them runs it,
    // as remora's pool does) and on 1 (always the same thread).
    for (int threads : {4, 1}) {
      asio::thread_pool pool(threads);
      const std::string name = "upload_then_download_on_pool_of_" + std::to_string(threads) + "_4B";
      time_calls(name.c_str(), 3000, 4, [&] {
        std::promise<void> done;
        asio::post(pool, [&] {
          small_cpu.to(torch::kCUDA, true).cpu();
          done.set_value();
        });
        done.get_future().wait();
      });
      time_calls(("nothing_on_pool_of_" + std::to_string(threads)).c_str(), 3000, 4, [&] {
        std::promise<void> done;
        asio::post(pool, [&] { done.set_value(); });
        done.get_future().wait();
      });
      pool.join();
    }
    time_calls("is_pinned_4B", 3000, 4, [&] { (void)small_cpu.is_pinned(); });
  }
  // Two processes with a device map cuda:0 -> cuda:0 (REMORA_GPU_BENCH_TARGET=cuda:1: -> cuda:1,
  // the module there too), as the anchor with --device-map [--target].
  const char* target_env = std::getenv("REMORA_GPU_BENCH_TARGET");
  const std::string target = target_env && *target_env ? target_env : "cuda:0";
  const std::string port = argc > 1 ? argv[1] : "29841";
  const std::string self = std::filesystem::read_symlink("/proc/self/exe");
  std::vector<std::string> child_args = {self, "--serve", port};
  std::vector<char*> cargv;
  for (auto& a : child_args) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  pid_t child;
  if (posix_spawn(&child, self.c_str(), nullptr, nullptr, cargv.data(), environ) != 0) return 1;
  {
    auto o = pair_options(port);
    o.set_device_map("w1", {{"cuda:0", target}});
    remora::Agent client("w0", 0, 2, o);
    auto gpu_module = Module::create<gpu_bench::Echo>(client, "w1/" + target);
    auto small_gpu = torch::ones({1}, torch::kCUDA);
    time_calls("two_processes_rpc_cpu_4B", 3000, 4, [&] { client.rpc_sync<&gpu_bench::echo>("w1", small_cpu); });
    time_calls("two_processes_rpc_cuda_mapped_4B", 3000, 4, [&] { client.rpc_sync<&gpu_bench::echo>("w1", small_gpu); });
    time_calls("d2h_then_h2d_4B", 3000, 4, [&] { small_gpu.cpu().to(torch::kCUDA); });
    time_calls("forward_cuda_mapped_4B", 3000, 4, [&] { gpu_module.forward(small_gpu); });
    std::printf("transport %s\n", client.transport_to("w1").c_str());
    auto big_gpu = torch::ones({static_cast<int64_t>(big / 4)}, torch::kCUDA);
    time_calls("forward_cuda_mapped_64MiB", 50, big, [&] { gpu_module.forward(big_gpu); });
    time_calls("echo_cuda_mapped_64MiB", 50, big, [&] { client.rpc_sync<&gpu_bench::echo>("w1", big_gpu); });
    // The same bytes as CPU tensors over the same transport: what the GPU echo adds is staging.
    auto big_cpu = torch::ones({static_cast<int64_t>(big / 4)});
    time_calls("echo_cpu_64MiB", 50, big, [&] { client.rpc_sync<&gpu_bench::echo>("w1", big_cpu); });

    // The physical reference: two device-to-device copies of 64 MiB (out and back).
    // (With another target, the first copy goes to it and back: two peer copies.)
    auto d1 = torch::empty_like(big_gpu, torch::TensorOptions().device(target)), d2 = torch::empty_like(big_gpu);
    time_calls("two_d2d_copies_64MiB", 50, big, [&] {
      d1.copy_(big_gpu);
      d2.copy_(d1);
      torch::cuda::synchronize();
    });
    gpu_module = {};
    client.shutdown();
  }
  int status = 0;
  waitpid(child, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
