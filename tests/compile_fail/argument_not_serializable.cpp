// expect: a parameter type of this function is not Serializable
#include <remora/remora.hpp>
struct Opaque {
  Opaque(int) {}
};
int use(Opaque) { return 0; }
void f() { remora::rpc_sync<&use>("ps", Opaque(1)); }
