// expect: this method belongs to a class that the RRef's value type does not derive from
#include <remora/remora.hpp>
struct Counter {
  int add(int k) { return k; }
};
struct Other {
  int add(int k) { return k; }
};
void f(remora::RRef<Counter> c) { c.rpc_sync().call<&Other::add>(1); }
