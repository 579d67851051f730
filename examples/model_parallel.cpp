// Model-parallel training across three processes: stage 1 of a model lives on one worker, stage 2
// on another, and a trainer drives them. Gradients flow back through both stages with distributed
// autograd; a DistributedOptimizer steps each stage's parameters where they live.
//
//   ./model_parallel                               starts all three workers itself
//   torchrun --nproc_per_node=3 --no_python ./model_parallel
#include <iostream>

#include <remora/remora.hpp>
#include <torch/nn.h>
#include <torch/optim.h>

#include "launch.hpp"

// What the trainer knows of a stage.
struct Stage {
  virtual ~Stage() = default;
  virtual torch::Tensor forward(torch::Tensor x) = 0;
};

struct Hidden : torch::nn::Module, Stage {
  Hidden(std::int64_t in, std::int64_t out) : fc(register_module("fc", torch::nn::Linear(in, out))) {}
  torch::Tensor forward(torch::Tensor x) override { return torch::relu(fc->forward(x)); }
  torch::nn::Linear fc;
};
struct Head : torch::nn::Module, Stage {
  Head(std::int64_t in, std::int64_t out) : fc(register_module("fc", torch::nn::Linear(in, out))) {}
  torch::Tensor forward(torch::Tensor x) override { return fc->forward(x); }
  torch::nn::Linear fc;
};

int main() {
  const int rank = example::launch_group(3);
  remora::init_rpc(rank == 0 ? "trainer" : rank == 1 ? "stage1" : "stage2");
  int status = 0;

  if (rank == 0) {
    torch::manual_seed(0);
    auto stage1 = remora::RemoteModule<Stage>::create<Hidden>("stage1/cpu", 16, 32);
    auto stage2 = remora::RemoteModule<Stage>::create<Head>("stage2/cpu", 32, 1);
    auto params = stage1.remote_parameters();
    for (auto& p : stage2.remote_parameters()) params.push_back(p);
    remora::optim::DistributedOptimizer<torch::optim::SGD> opt(params, torch::optim::SGDOptions(0.05));

    auto x = torch::randn({64, 16});
    auto target = x.narrow(1, 0, 4).sum(1, /*keepdim=*/true);
    double first = 0, last = 0;
    for (int step = 0; step < 100; ++step) {
      remora::autograd::Context ctx;
      torch::Tensor h = stage1.forward(x);   // lives here now, with its history on stage1
      torch::Tensor y = stage2.forward(h);
      torch::Tensor loss = torch::mse_loss(y, target);
      remora::autograd::backward(ctx, {loss});  // through stage2, back here, then stage1
      opt.step(ctx);                            // each stage steps its own parameters
      if (step == 0) first = loss.item<double>();
      last = loss.item<double>();
      if (step % 20 == 0 || step == 99) std::cout << "step " << step << " loss " << last << "\n";
    }
    std::cout << "loss " << first << " -> " << last << "\n";
    if (!(last < first / 2)) {
      std::cerr << "the model did not learn\n";
      status = 1;
    }
  }
  remora::shutdown();
  return rank == 0 ? (example::wait_group() | status) : 0;
}
