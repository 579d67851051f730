// A C++ trainer against two stock workers: remora-worker processes that run none of this
// program's code. Each computes its half of the batch's predictions with builtin operators; the
// trainer fits a linear model from them.
//
//   ./stock_workers      starts the two workers itself (remora-worker --name w1, --name w2)
#include <iostream>

#include <remora/remora.hpp>

#include "launch.hpp"

int main() {
  const int rank = example::launch_group(3, REMORA_WORKER_PATH, [](int r) -> std::vector<std::string> {
    return {"--name", "w" + std::to_string(r), "--operators", "aten::mv"};
  });
  if (rank != 0) return 1;  // ranks 1 and 2 are remora-worker processes
  remora::init_rpc("trainer");

  torch::manual_seed(0);
  const auto x = torch::randn({64, 3});
  const auto target = x.matmul(torch::tensor({1.5, -2.0, 0.5}));
  const auto halves = x.chunk(2, 0);
  auto w = torch::zeros({3});
  for (int step = 0; step < 100; ++step) {
    // Both halves at once, by name: aten::mv(Tensor self, Tensor vec) on each worker.
    auto f1 = remora::rpc_async<torch::Tensor>("w1", "aten::mv", halves[0], w);
    auto f2 = remora::rpc_async<torch::Tensor>("w2", "aten::mv", halves[1], w);
    const auto prediction = torch::cat({f1.get(), f2.get()});
    const auto gradient = x.t().matmul(prediction - target) * (2.0 / x.size(0));
    w -= 0.1 * gradient;
  }
  std::cout << "fitted weights (want 1.5, -2, 0.5): " << w << "\n";
  const double error = (w - torch::tensor({1.5, -2.0, 0.5})).abs().max().item<double>();
  remora::shutdown();
  const int workers = example::wait_group();
  return error < 1e-3 && workers == 0 ? 0 : 1;
}
