// expect: RemoteGroup<T>: this method is not a method of T
#include <remora/mesh.hpp>
struct Env {
  int reset() { return 0; }
};
struct Other {
  int reset() { return 1; }
};
void f(const remora::RemoteGroup<Env>& g) { g.call<&Other::reset>(); }
