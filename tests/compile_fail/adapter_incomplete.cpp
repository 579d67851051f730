// expect: I has pure virtual methods besides forward
#include <remora/remora.hpp>
struct Classifier {
  virtual ~Classifier() = default;
  virtual torch::Tensor forward(torch::Tensor x) = 0;
  virtual void reset() = 0;
};
struct Echo : torch::nn::Module {
  torch::Tensor forward(torch::Tensor x) { return x; }
};
void f() { remora::RemoteModule<Classifier>::create<Echo>("ps"); }
