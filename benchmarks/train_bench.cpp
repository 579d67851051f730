// Time per training step of a two-stage MLP split over two workers (stage 1 on s1, stage 2 on
// s2) driven by a trainer, with distributed autograd and DistributedOptimizer: small layers (the
// step is all overhead) and large ones (matmul-bound), the large ones beside the same model
// trained in one process and the wire time of the same activations and gradients.
// benchmarks/baselines/pytorch_dist_train.py is PyTorch's twin. Prints `name value` lines.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include <remora/remora.hpp>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/nn.h>
#include <torch/optim.h>

namespace bench {

struct Stage {
  virtual ~Stage() = default;
  virtual torch::Tensor forward(torch::Tensor x) = 0;
};
struct Layer : torch::nn::Module, Stage {
  Layer(std::int64_t in, std::int64_t out, bool relu)
      : fc(register_module("fc", torch::nn::Linear(in, out))), relu_(relu) {}
  torch::Tensor forward(torch::Tensor x) override {
    auto y = fc->forward(x);
    return relu_ ? torch::relu(y) : y;
  }
  torch::nn::Linear fc;
  bool relu_;
};
torch::Tensor echo(torch::Tensor t) { return t; }

}  // namespace bench

using clock_type = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Median microseconds of `steps` calls of `step` after `warm` unmeasured ones.
template <class F>
double time_steps(int warm, int steps, F&& step) {
  for (int i = 0; i < warm; ++i) step();
  std::vector<double> us;
  for (int i = 0; i < steps; ++i) {
    auto t = clock_type::now();
    step();
    us.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - t).count());
  }
  return median(us);
}

int main() {
  torch::set_num_threads(1);  // three workers share this host's cores, as PyTorch's three processes
  remora::Options o;
  o.store = c10::make_intrusive<c10d::HashStore>();
  std::unique_ptr<remora::Agent> trainer, s1, s2;
  std::thread t1([&] { s1 = std::make_unique<remora::Agent>("s1", 1, 3, o); });
  std::thread t2([&] { s2 = std::make_unique<remora::Agent>("s2", 2, 3, o); });
  trainer = std::make_unique<remora::Agent>("trainer", 0, 3, o);
  t1.join();
  t2.join();

  struct Size {
    const char* name;
    std::int64_t batch, in, hidden, out;
    int warm, steps;
  };
  const char* only = std::getenv("REMORA_TRAIN");  // small or large: that size only
  for (Size s : {Size{"small", 8, 16, 32, 4, 100, 1000}, Size{"large", 256, 1024, 1024, 1024, 3, 20}}) {
    if (only && std::string(only) != s.name) continue;
    torch::manual_seed(0);
    using RM = remora::RemoteModule<bench::Stage>;
    auto stage1 = RM::create<bench::Layer>(*trainer, "s1/cpu", s.in, s.hidden, true);
    auto stage2 = RM::create<bench::Layer>(*trainer, "s2/cpu", s.hidden, s.out, false);
    auto params = stage1.remote_parameters();
    for (auto& p : stage2.remote_parameters()) params.push_back(p);
    remora::optim::DistributedOptimizer<torch::optim::SGD> opt(params, torch::optim::SGDOptions(0.01));
    auto x = torch::randn({s.batch, s.in});
    auto target = torch::randn({s.batch, s.out});
    auto remote_step = [&] {
      remora::autograd::Context ctx(*trainer);
      auto loss = torch::mse_loss(stage2.forward(stage1.forward(x)), target);
      remora::autograd::backward(ctx, {loss});
      opt.step(ctx);
    };
    if (std::string(s.name) != "large") {
      std::printf("train_%s_step_us %.1f\n", s.name, time_steps(s.warm, s.steps, remote_step));
      // Where a small step's time goes: each phase of the same step, timed inside it, and the
      // forward alone outside a context (nothing recorded).
      std::vector<double> phase[4];
      for (int i = 0; i < s.warm + s.steps; ++i) {
        clock_type::time_point t[5];
        t[0] = clock_type::now();
        {
          remora::autograd::Context ctx(*trainer);
          auto loss = torch::mse_loss(stage2.forward(stage1.forward(x)), target);
          t[1] = clock_type::now();
          remora::autograd::backward(ctx, {loss});
          t[2] = clock_type::now();
          opt.step(ctx);
          t[3] = clock_type::now();
        }
        t[4] = clock_type::now();
        if (i >= s.warm)
          for (int k = 0; k < 4; ++k)
            phase[k].push_back(std::chrono::duration<double, std::micro>(t[k + 1] - t[k]).count());
      }
      const char* names[4] = {"forward", "backward", "optimizer", "release"};
      for (int k = 0; k < 4; ++k) std::printf("train_%s_%s_us %.1f\n", s.name, names[k], median(phase[k]));
      std::printf("train_%s_forward_plain_us %.1f\n", s.name, time_steps(s.warm, s.steps, [&] {
                    (void)torch::mse_loss(stage2.forward(stage1.forward(x)), target);
                  }));
      continue;
    }
    // The same model in one process, and the wire: what a step moves, as echoes of the same
    // sizes (forward: x to s1 and h back, h to s2 and y back; backward: dy to s2 and dh back, dh
    // to s1). Taken in turns with the remote step, since this host's speed drifts over minutes.
    bench::Layer l1(s.in, s.hidden, true), l2(s.hidden, s.out, false);
    std::vector<torch::Tensor> local_params = l1.parameters();
    for (auto& p : l2.parameters()) local_params.push_back(p);
    torch::optim::SGD local_opt(local_params, torch::optim::SGDOptions(0.01));
    auto local_step = [&] {
      local_opt.zero_grad();
      torch::mse_loss(l2.forward(l1.forward(x)), target).backward();
      local_opt.step();
    };
    auto h = torch::randn({s.batch, s.hidden}), y = torch::randn({s.batch, s.out});
    auto wire = [&] {
      trainer->rpc_sync<&bench::echo>("s1", h);
      trainer->rpc_sync<&bench::echo>("s2", h);
      trainer->rpc_sync<&bench::echo>("s2", y);
      trainer->rpc_sync<&bench::echo>("s1", h);
    };
    std::vector<double> remote_us, local_us, wire_us;
    for (int i = 0; i < s.warm + s.steps; ++i) {
      const bool keep = i >= s.warm;
      for (auto [f, out] : {std::pair<std::function<void()>, std::vector<double>*>{remote_step, &remote_us},
                            {local_step, &local_us}, {wire, &wire_us}}) {
        auto t = clock_type::now();
        f();
        if (keep) out->push_back(std::chrono::duration<double, std::micro>(clock_type::now() - t).count());
      }
    }
    std::printf("train_large_step_us %.1f\n", median(remote_us));
    std::printf("train_large_local_us %.1f\ntrain_large_wire_us %.1f\n", median(local_us), median(wire_us));
  }
  std::vector<std::thread> stops;
  for (auto* a : {trainer.get(), s1.get(), s2.get()}) stops.emplace_back([a] { a->shutdown(); });
  for (auto& t : stops) t.join();
}
