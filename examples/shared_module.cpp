// One module, many callers: an embedding server on "ps" serves three caller processes, each
// calling from several threads at once. The callers get the RemoteModule from the server
// itself (a RemoteModule is a value that travels in results).
//
//   ./shared_module     starts the server and three callers itself
#include <atomic>
#include <iostream>
#include <thread>

#include <remora/remora.hpp>
#include <torch/nn.h>

#include "launch.hpp"

struct Lookup {
  virtual ~Lookup() = default;
  virtual torch::Tensor forward(torch::Tensor ids) = 0;
  virtual std::int64_t served() = 0;
};

struct EmbeddingServer : torch::nn::Module, Lookup {
  EmbeddingServer(std::int64_t rows, std::int64_t dim)
      : table(register_module("table", torch::nn::Embedding(rows, dim))) {}
  torch::Tensor forward(torch::Tensor ids) override {
    ++count;  // called from several server threads at once
    torch::NoGradGuard no_grad;
    return table->forward(ids);
  }
  std::int64_t served() override { return count.load(); }
  torch::nn::Embedding table;
  std::atomic<std::int64_t> count{0};
};

namespace ps {
remora::RemoteModule<Lookup> shared;
remora::Promise<remora::RemoteModule<Lookup>> made;
// Every caller asks the server for the one module it hosts; a caller that asks before it exists
// waits without holding a server thread.
remora::Future<remora::RemoteModule<Lookup>> get_shared() { return made.get_future(); }
}  // namespace ps

int main() {
  const int world = 4, threads = 3, calls = 100;
  const int rank = example::launch_group(world);
  remora::init_rpc(rank == 0 ? "ps" : "caller" + std::to_string(rank));
  if (rank == 0) {
    ps::shared = remora::RemoteModule<Lookup>::create<EmbeddingServer>("ps", 1000, 8);
    ps::made.set_value(ps::shared);
  }

  if (rank != 0) {
    auto table = remora::rpc_sync<&ps::get_shared>("ps");
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        for (int i = 0; i < calls; ++i) {
          auto rows = table.forward(torch::randint(0, 1000, {16}));
          if (rows.size(0) != 16) std::abort();
        }
      });
    for (auto& t : pool) t.join();
    std::cout << "caller" << rank << ": " << threads * calls << " lookups done\n";
  }
  remora::shutdown();  // graceful: returns when every caller is done
  if (rank == 0) {  // the server owns the module: it reads it directly
    std::cout << "ps served " << ps::shared.module_rref().local_value().served() << " lookups (expected "
              << (world - 1) * threads * calls << ")\n";
  }
  return example::wait_group();
}
