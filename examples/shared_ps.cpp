// A parameter server shared by two trainers. Each trainer runs its own distributed autograd
// context per step: the gradients of the server's embedding table stay apart per context on the
// server, and each trainer's DistributedOptimizer applies its own (one step at a time there).
//
//   ./shared_ps                               starts the server and both trainers itself
//   torchrun --nproc_per_node=3 --no_python ./shared_ps
#include <iostream>

#include <remora/remora.hpp>
#include <torch/nn.h>
#include <torch/optim.h>

#include "launch.hpp"

namespace server {
// The table the trainers share, on the server.
torch::Tensor table = torch::zeros({10, 4}).requires_grad_(true);
torch::Tensor lookup(torch::Tensor ids) { return table.index_select(0, ids); }
torch::Tensor the_table() { return table; }  // the tensor itself: an RRef to it for the optimizer
}  // namespace server

int main() {
  const int rank = example::launch_group(3);
  remora::init_rpc(rank == 0 ? "ps" : "trainer" + std::to_string(rank));
  int status = 0;

  if (rank > 0) {
    torch::manual_seed(rank);
    remora::optim::DistributedOptimizer<torch::optim::SGD> opt({remora::remote<&server::the_table>("ps")},
                                                               torch::optim::SGDOptions(0.5));
    // Each trainer fits its own rows of the table to its own targets.
    auto ids = rank == 1 ? torch::tensor({0, 1, 2}) : torch::tensor({5, 6, 7});
    auto target = torch::full({3, 4}, rank == 1 ? 1.0 : -1.0);
    double last = 0;
    for (int step = 0; step < 50; ++step) {
      remora::autograd::Context ctx;
      torch::Tensor rows = remora::rpc_sync<&server::lookup>("ps", ids);
      torch::Tensor loss = torch::mse_loss(rows, target);
      remora::autograd::backward(ctx, {loss});
      opt.step(ctx);
      last = loss.item<double>();
    }
    std::cout << "trainer" << rank << ": loss after 50 steps " << last << "\n";
    if (!(last < 1e-3)) status = 1;
  }
  remora::shutdown();
  if (rank == 0) {
    std::cout << "table rows 0 and 5 on the server: " << server::table[0][0].item<double>() << ", "
              << server::table[5][0].item<double>() << "\n";
    return example::wait_group();
  }
  return status;
}
