// A two-stage pipeline: stage 1 on worker w1, stage 2 on worker w2, driven by a third process.
// Micro-batches flow through both stages concurrently (stage 1 of batch k+1 overlaps stage 2 of
// batch k), and in the second half w1 feeds w2 directly: the driver hands stage 2 to w1.
//
//   ./pipeline          starts all three workers itself
#include <iostream>

#include <remora/remora.hpp>
#include <torch/nn.h>

#include "launch.hpp"

struct Stage {
  virtual ~Stage() = default;
  virtual torch::Tensor forward(torch::Tensor x) = 0;
};

struct Block : torch::nn::Module, Stage {
  Block(std::int64_t in, std::int64_t out) : fc(register_module("fc", torch::nn::Linear(in, out))) {}
  torch::Tensor forward(torch::Tensor x) override { return torch::relu(fc->forward(x)); }
  torch::nn::Linear fc;
};

namespace w1 {
// Runs on w1: its own stage, then straight on to w2's stage. A coroutine, so the eight
// micro-batches in flight hold none of w1's threads while they wait.
remora::Task<torch::Tensor> through_both(remora::RemoteModule<Stage> first, remora::RemoteModule<Stage> second,
                                         torch::Tensor x) {
  torch::Tensor h = co_await first.forward_async(x);
  co_return co_await second.forward_async(h);
}
}  // namespace w1

int main() {
  const int rank = example::launch_group(3);
  const char* names[] = {"driver", "w1", "w2"};
  remora::init_rpc(names[rank]);

  if (rank == 0) {
    auto stage1 = remora::RemoteModule<Stage>::create<Block>("w1", 16, 32);
    auto stage2 = remora::RemoteModule<Stage>::create<Block>("w2", 32, 4);
    auto batch = torch::randn({64, 16});
    auto micro = batch.chunk(8);

    // Driver-scheduled: each micro-batch goes w1 then w2; all are in flight at once.
    std::vector<remora::Future<torch::Tensor>> outs;
    for (auto& mb : micro)
      outs.push_back(stage1.forward_async(mb).then([stage2](torch::Tensor h) { return stage2.forward_async(h); }));
    std::vector<torch::Tensor> results;
    for (auto& f : outs) results.push_back(f.get());
    auto out = torch::cat(results);
    std::cout << "pipelined " << micro.size() << " micro-batches: output " << out.sizes() << "\n";

    // Worker-to-worker: w1 calls w2 itself; the driver only sees the final result.
    std::vector<remora::Future<torch::Tensor>> direct;
    for (auto& mb : micro) direct.push_back(remora::rpc_async<&w1::through_both>("w1", stage1, stage2, mb));
    std::vector<torch::Tensor> direct_results;
    for (auto& f : direct) direct_results.push_back(f.get());
    std::cout << "w1 -> w2 directly, same result: " << std::boolalpha
              << torch::allclose(torch::cat(direct_results), out) << "\n";
  }
  remora::shutdown();
  return example::wait_group();
}
