// expect: M neither derives from the interface I nor has a forward
#include <remora/remora.hpp>
struct Classifier {
  virtual ~Classifier() = default;
  virtual torch::Tensor forward(torch::Tensor x, double temperature) = 0;
};
struct Unrelated : torch::nn::Module {
  std::string forward(int) { return {}; }
};
void f() { remora::RemoteModule<Classifier>::create<Unrelated>("ps"); }
