// expect: M has no constructor that takes these arguments
#include <remora/remora.hpp>
struct Classifier {
  virtual ~Classifier() = default;
  virtual torch::Tensor forward(torch::Tensor x) = 0;
};
struct Mlp : torch::nn::Module, Classifier {
  Mlp(std::int64_t in, std::int64_t out) {}
  torch::Tensor forward(torch::Tensor x) override { return x; }
};
void f() { remora::RemoteModule<Classifier>::create<Mlp>("ps", std::string("128")); }
