// Two workers, two processes: a trainer uses an MLP that lives on a parameter server, through a
// typed RemoteModule: forward (sync), forward_async, co_await, and training steps that run on
// the server next to the weights.
//
//   ./mlp_trainer                               starts both workers itself
//   torchrun --nproc_per_node=2 --no_python --redirects=2 --tee=2 ./mlp_trainer
#include <iostream>

#include <remora/remora.hpp>
#include <torch/nn.h>
#include <torch/optim.h>

#include "launch.hpp"

// The contract between trainer and server: any worker that includes this can call the module.
struct Classifier {
  virtual ~Classifier() = default;
  virtual torch::Tensor forward(torch::Tensor x, double temperature = 1.0) = 0;
  virtual void reset() = 0;
};

struct Mlp : torch::nn::Module, Classifier {
  Mlp(std::int64_t in, std::int64_t hidden, std::int64_t out)
      : fc1(register_module("fc1", torch::nn::Linear(in, hidden))),
        fc2(register_module("fc2", torch::nn::Linear(hidden, out))) {}
  torch::Tensor forward(torch::Tensor x, double temperature) override {
    return fc2->forward(torch::relu(fc1->forward(x))) / temperature;
  }
  void reset() override {
    for (auto& p : parameters()) torch::nn::init::normal_(p, 0.0, 0.1);
  }
  torch::nn::Linear fc1, fc2;
};

namespace ps {
// Runs on the server: one SGD step on the module the RemoteModule refers to, returns the loss.
double train_step(remora::RemoteModule<Classifier> model, torch::Tensor x, torch::Tensor target, double lr) {
  auto& mlp = dynamic_cast<Mlp&>(model.module_rref().local_value());
  torch::optim::SGD opt(mlp.parameters(), lr);
  opt.zero_grad();
  auto loss = torch::mse_loss(mlp.forward(x, 1.0), target);
  loss.backward();
  opt.step();
  return loss.item<double>();
}
}  // namespace ps

remora::Task<double> mean_score(remora::RemoteModule<Classifier> model, torch::Tensor x) {
  torch::Tensor y = co_await model.forward_async(x, 0.5);  // suspends, holds no thread
  co_return y.mean().item<double>();
}

int main() {
  const int rank = example::launch_group(2);
  remora::init_rpc(rank == 0 ? "trainer" : "ps");

  if (rank == 0) {
    torch::manual_seed(0);
    auto model = remora::RemoteModule<Classifier>::create<Mlp>("ps/cpu", 8, 16, 1);
    std::cout << "module on " << model.owner_name() << " (" << model.device() << ")\n";

    auto x = torch::randn({32, 8});
    auto target = x.sum(1, /*keepdim=*/true);
    torch::Tensor y = model.forward(x);  // temperature takes the interface's default
    std::cout << "forward: " << y.sizes() << "\n";

    remora::Future<torch::Tensor> f = model.forward_async(x, 2.0);
    std::cout << "forward_async: " << f.get().sizes() << "\n";

    std::cout << "co_await: mean score " << mean_score(model, x).get() << "\n";

    model.call<&Classifier::reset>();
    for (int step = 0; step < 50; ++step) {
      double loss = remora::rpc_sync<&ps::train_step>("ps", model, x, target, 0.05);
      if (step % 10 == 0 || step == 49) std::cout << "step " << step << " loss " << loss << "\n";
    }
    auto params = model.remote_parameters();
    std::cout << params.size() << " parameters stay on " << params[0].owner_name() << "; fc1.weight is "
              << params[0].to_here().sizes() << "\n";
  }
  remora::shutdown();
  return example::wait_group();
}
