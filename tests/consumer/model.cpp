#include <remora/mesh.hpp>
#include <remora/remora.hpp>

#include "consumer.hpp"

struct Affine : torch::nn::Module, Scorer {
  Affine(std::int64_t in, std::int64_t out) : fc(register_module("fc", torch::nn::Linear(in, out))) {}
  torch::Tensor forward(torch::Tensor x) override { return fc->forward(x); }
  torch::nn::Linear fc;
};

int train_on(const std::string& device) {
  torch::manual_seed(0);
  auto model = remora::RemoteModule<Scorer>::create<Affine>(device, 4, 1);
  remora::optim::DistributedOptimizer<torch::optim::SGD> opt(model.remote_parameters(), torch::optim::SGDOptions(0.1));
  const auto x = torch::randn({16, 4});
  const auto target = x.sum(1, /*keepdim=*/true);
  double first = 0, last = 0;
  for (int step = 0; step < 3; ++step) {
    remora::autograd::Context ctx;
    auto loss = torch::mse_loss(model.forward(x), target);
    remora::autograd::backward(ctx, {loss});
    opt.step(ctx);
    (step == 0 ? first : last) = loss.item<double>();
  }
  // Weight sync: a local model's parameters pushed into the remote one, in place.
  Affine local(4, 1);
  model.load_state_dict(local.named_parameters());
  if (!torch::allclose(model.forward(x), local.forward(x))) return 1;
  return last < first ? 0 : 1;
}
