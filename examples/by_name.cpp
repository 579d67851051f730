// Calls by name: a worker with no code of this program's runs builtin operators and a
// TorchScript module (saved here with libtorch's TorchScript compiler, as torch.jit.save would).
//
//   ./by_name                        starts both workers itself (rank 1 is a child process)
//   torchrun --nproc_per_node=2 --no_python ./by_name
#include <filesystem>
#include <iostream>

#include <remora/remora.hpp>

#include "launch.hpp"

// The interface the trainer knows the script module by.
struct Scorer {
  virtual ~Scorer() = default;
  virtual torch::Tensor forward(torch::Tensor x, double s) = 0;
};

int main(int argc, char** argv) {
  const int rank = example::launch_group(2);
  // A worker serves by name only what its program lists: these operators, and model files below
  // the temporary directory.
  remora::Options options;
  options.serve_operators = {"aten::add", "aten::topk", "aten::ones"};
  options.model_dirs = {std::filesystem::temp_directory_path().string()};
  remora::init_rpc(rank == 0 ? "trainer" : "w1", options);

  if (rank == 0) {
    auto a = torch::ones({2, 2});
    auto b = torch::full({2, 2}, 3.0);
    torch::Tensor c = remora::rpc_sync<torch::Tensor>("w1", "aten::add", a, b, remora::kwargs({{"alpha", 2}}));
    std::cout << "aten::add(a, b, alpha=2) on w1:\n" << c << "\n";
    c10::IValue top = remora::rpc_sync("w1", "aten::topk", torch::tensor({3.0, 9.0, 1.0}), 2);
    std::cout << "aten::topk gives a tuple: " << top.toTupleRef().elements()[0].toTensor() << "\n";
    remora::RRef<torch::Tensor> ones = remora::remote<torch::Tensor>("w1", "aten::ones", std::vector<int64_t>{3});
    std::cout << "remote aten::ones, fetched: " << ones.to_here() << "\n";
    try {
      remora::rpc_sync("w1", "aten::add", a, std::string("three"));
    } catch (const remora::SchemaMismatch& e) {
      std::cout << "refused before sending: " << std::string(e.what()).substr(0, 60) << "...\n";
    }

    // A TorchScript module, written where both processes can read it (one host here).
    const auto path = (std::filesystem::temp_directory_path() / "remora_by_name_scorer.pt").string();
    torch::jit::Module m("Scorer");
    m.register_parameter("w", torch::full({2}, 0.5), false);
    m.define(R"JIT(
def forward(self, x: Tensor, s: float = 1.0) -> Tensor:
    return x * self.w * s
def norm(self) -> float:
    return float(self.w.norm())
)JIT");
    m.save(path);

    auto typed = remora::RemoteModule<Scorer>::load("w1/cpu", path);  // checked against Scorer::forward
    std::cout << "typed forward: " << typed.forward(torch::ones({2}), 4.0) << "\n";
    auto untyped = remora::ScriptRemoteModule::load("w1/cpu", path);
    std::cout << "methods: " << untyped.methods().size() << ", norm() = " << untyped.call("norm").toDouble() << "\n";
    std::filesystem::remove(path);
  }
  remora::shutdown();
  return example::wait_group();
}
