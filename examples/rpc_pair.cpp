// Two workers, two processes: a trainer calls functions on a parameter server.
//
//   ./rpc_pair                       starts both workers itself (rank 1 is a child process)
//   torchrun --nproc_per_node=2 --no_python ./rpc_pair      (RANK, WORLD_SIZE, MASTER_* set)
#include <iostream>

#include <remora/remora.hpp>

#include "launch.hpp"

namespace ps {
torch::Tensor scale(torch::Tensor x, double factor) { return x * factor; }
int add(int a, int b) { return a + b; }
double fail_if_negative(double v) {
  if (v < 0) throw std::invalid_argument("negative learning rate");
  return v;
}
// Runs on the server and calls back to the trainer without holding a server thread.
remora::Task<int> add_via_trainer(int a, int b) {
  int partial = co_await remora::rpc_async<&add>("trainer", a, b);
  co_return partial * 10;
}
}  // namespace ps

int main(int argc, char** argv) {
  // Launched by hand: become rank 0 and start rank 1 (launch.hpp). Under torchrun: nothing.
  const int rank = example::launch_group(2);
  remora::init_rpc(rank == 0 ? "trainer" : "ps");  // env:// rendezvous, as with torchrun

  if (rank == 0) {
    auto x = torch::arange(4, torch::kFloat32);
    torch::Tensor y = remora::rpc_sync<&ps::scale>("ps", x, 2.0);
    std::cout << "rpc_sync scale: " << y << "\n";

    remora::Future<int> f = remora::rpc_async<&ps::add>("ps", 40, 2);
    std::cout << "rpc_async add: " << f.get() << "\n";

    auto nested = remora::rpc_async<&ps::add_via_trainer>("ps", 1, 2);
    std::cout << "ps awaited the trainer: " << nested.get() << "\n";

    try {
      remora::rpc_sync<&ps::fail_if_negative>("ps", -0.1);
    } catch (const remora::RemoteError& e) {
      std::cout << "remote exception: " << e.what() << "\n";
    }
  }
  remora::shutdown();  // graceful: both workers stop together once all calls are done
  return example::wait_group();
}
