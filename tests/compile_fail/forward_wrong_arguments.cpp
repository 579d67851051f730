// expect: these arguments do not match I::forward's parameters
#include <remora/remora.hpp>
struct Classifier {
  virtual ~Classifier() = default;
  virtual torch::Tensor forward(torch::Tensor x, double temperature) = 0;
};
void f(remora::RemoteModule<Classifier>& m) { m.forward(std::string("not a tensor"), 0.5); }
