// Weight sync on one GPU (issue "GPUs", part 3): a trainer's state of REMORA_GPU_WEIGHTS_GB
// (default 14.5) in REMORA_GPU_WEIGHTS_TENSORS tensors (default 291, a 7B model's count) on cuda:0,
// loaded with RemoteModuleGroup::load_state_dict into one member and into three, each member a
// process of its own on the same GPU (the members copy straight from the trainer's memory by CUDA
// IPC handle). Against a device-to-device copy of 1 GiB in the trainer, measured in the same run.
// Prints `name value` lines:
//   d2d_copy_GBps, weight_sync_bytes, weight_sync_first_ms (handles opened), and per member count
//   weight_sync_N_members_ms / _GBps (bytes x N / time) / _of_d2d (that over d2d_copy_GBps).
// Usage: gpu_weight_sync [PORT]; the members are this program started with --member PORT RANK.
#include <spawn.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <torch/cuda.h>
#include <torch/nn.h>

#include <remora/mesh.hpp>
#include <remora/remora.hpp>

namespace gpu_weights {
struct Model {
  virtual ~Model() = default;
  virtual torch::Tensor forward(torch::Tensor x) = 0;
};
// `count` parameters of `elements` floats each, made on `device` (uninitialized: the benchmark
// loads them).
struct Wide : torch::nn::Module, Model {
  Wide(std::int64_t count, std::int64_t elements, std::string device) {
    for (std::int64_t i = 0; i < count; ++i)
      register_parameter("p" + std::to_string(i), torch::empty({elements}, torch::Device(device)));
  }
  // Each parameter's sum, one row per parameter (what the benchmark compares).
  torch::Tensor forward(torch::Tensor x) override {
    std::vector<torch::Tensor> sums;
    for (const auto& p : parameters()) sums.push_back(p.sum().reshape({1}) * x.to(p.device()));
    return torch::cat(sums);
  }
};
}  // namespace gpu_weights

extern char** environ;

namespace {
constexpr int kMembers = 3;

remora::Options options_for(const std::string& port) {
  remora::Options o;
  o.init_method = "tcp://127.0.0.1:" + port;
  o.rpc_timeout = std::chrono::seconds(300);
  return o;
}

double env_or(const char* name, double fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atof(v) : fallback;
}

template <class F>
double best_ms(int rounds, F&& f) {
  double best = 1e300;
  for (int i = 0; i < rounds; ++i) {
    const auto t = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count());
  }
  return best;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc == 4 && std::string(argv[1]) == "--member") {  // a member's process: serves until shutdown
    remora::Agent member("w" + std::string(argv[3]), std::atoi(argv[3]), kMembers + 1, options_for(argv[2]));
    member.shutdown();
    return 0;
  }
  if (!torch::cuda::is_available()) {
    std::fprintf(stderr, "gpu_weight_sync: no CUDA device\n");
    return 1;
  }
  const std::string port = argc > 1 ? argv[1] : "29851";
  const auto count = static_cast<std::int64_t>(env_or("REMORA_GPU_WEIGHTS_TENSORS", 291));
  const auto elements = static_cast<std::int64_t>(env_or("REMORA_GPU_WEIGHTS_GB", 14.5) * 1e9 / 4 / count);
  const std::string self = std::filesystem::read_symlink("/proc/self/exe");
  std::vector<pid_t> children;
  for (int rank = 1; rank <= kMembers; ++rank) {
    std::vector<std::string> args = {self, "--member", port, std::to_string(rank)};
    std::vector<char*> argv_c;
    for (auto& a : args) argv_c.push_back(a.data());
    argv_c.push_back(nullptr);
    pid_t child;
    if (posix_spawn(&child, self.c_str(), nullptr, nullptr, argv_c.data(), environ) != 0) return 1;
    children.push_back(child);
  }
  {
    auto o = options_for(port);
    for (int rank = 1; rank <= kMembers; ++rank) o.set_device_map("w" + std::to_string(rank), {{"cuda:0", "cuda:0"}});
    remora::Agent trainer("w0", 0, kMembers + 1, o);
    auto model = std::make_shared<gpu_weights::Wide>(count, elements, "cuda:0");
    for (auto& p : model->parameters()) p.data().uniform_();
    const auto named = model->named_parameters();
    const std::int64_t bytes = count * elements * 4;

    double d2d_GBps = 0;
    {  // the device's own copy bandwidth (bytes copied per second), in this process
      auto from = torch::ones({std::int64_t{1} << 28}, torch::kCUDA), to = torch::empty_like(from);
      d2d_GBps = static_cast<double>(from.nbytes()) / best_ms(10, [&] {
        to.copy_(from);
        torch::cuda::synchronize();
      }) / 1e6;
      std::printf("d2d_copy_GBps %.1f\n", d2d_GBps);
    }
    std::printf("weight_sync_bytes %lld\nweight_sync_tensors %lld\n", static_cast<long long>(bytes),
                static_cast<long long>(count));
    for (int n : {1, kMembers}) {
      std::vector<std::string> points;
      for (int rank = 1; rank <= n; ++rank) points.push_back("w" + std::to_string(rank) + "/cuda:0");
      auto group = remora::RemoteModuleGroup<gpu_weights::Model>::create<gpu_weights::Wide>(
          trainer, remora::DeviceMesh(points), count, elements, std::string("cuda:0"));
      torch::cuda::synchronize();  // the trainer's state is complete before the clock starts
      const double first = best_ms(1, [&] { group.load_state_dict(named); });
      if (n == 1) std::printf("weight_sync_first_ms %.1f\n", first);
      const double ms = best_ms(5, [&] { group.load_state_dict(named); });
      const double GBps = static_cast<double>(bytes) * n / ms / 1e6;
      std::printf("weight_sync_%d_members_ms %.1f\nweight_sync_%d_members_GBps %.1f\nweight_sync_%d_members_of_d2d %.2f\n",
                  n, ms, n, GBps, n, GBps / d2d_GBps);
      // Every member holds the trainer's values: the same sums, computed the same way.
      const auto expected = model->forward(torch::ones({1}, torch::kCUDA));
      bool equal = true;
      for (int i = 0; i < n; ++i)
        equal = equal && torch::allclose(group.member(i).forward(torch::ones({1}, torch::kCUDA)).to(torch::kCUDA), expected);
      std::printf("weight_sync_%d_members_equal %d\n", n, equal ? 1 : 0);
    }
    trainer.shutdown();
  }
  int failed = 0;
  for (pid_t child : children) {
    int status = 0;
    waitpid(child, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) ++failed;
  }
  return failed ? 1 : 0;
}
