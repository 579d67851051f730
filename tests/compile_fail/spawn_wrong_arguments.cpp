// expect: spawn<T>: T has no constructor that takes these arguments
#include <string>

#include <remora/mesh.hpp>
struct Env {
  explicit Env(int seed) : seed(seed) {}
  int seed;
};
void f(const remora::DeviceMesh& mesh) { remora::spawn<Env>(mesh, std::string("seed")); }
