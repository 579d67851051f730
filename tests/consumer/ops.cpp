#include <remora/mesh.hpp>
#include <remora/remora.hpp>

#include "consumer.hpp"

int twice(int x) { return 2 * x; }
torch::Tensor scale(torch::Tensor x, double s) { return x * s; }

int calls_on(const std::string& worker) {
  const auto x = torch::ones({2});
  int failed = 0;
  failed |= remora::rpc_sync<&twice>(worker, 21) == 42 ? 0 : 1;
  failed |= torch::equal(remora::rpc_async<&scale>(worker, x, 3.0).get(), x * 3) ? 0 : 2;
  failed |= remora::remote<&twice>(worker, 4).to_here() == 8 ? 0 : 4;
  failed |= torch::equal(remora::rpc_sync<torch::Tensor>(worker, "aten::mul", x, 5), x * 5) ? 0 : 8;
  return failed;
}
