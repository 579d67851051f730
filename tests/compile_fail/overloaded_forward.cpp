// expect: RemoteModule<I> needs an interface I
#include <remora/remora.hpp>
struct Overloaded {
  virtual ~Overloaded() = default;
  virtual torch::Tensor forward(torch::Tensor x) = 0;
  virtual torch::Tensor forward(torch::Tensor x, double t) = 0;
};
remora::RemoteModule<Overloaded> m;
