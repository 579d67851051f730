// Prints the ids of a set of functions and types; compare_ids.cmake builds it with g++ and with
// clang and requires identical output.
#include <cstdio>
#include <map>
#include <tuple>
#include <string>
#include <vector>

#include "remora/core/type_id.hpp"

namespace ns {
int add(int a, int b) { return a + b; }
struct Iface {
  virtual ~Iface() = default;
  virtual void reset() = 0;
  int get() const { return 1; }
  static int make(int x) { return x; }
};
template <class T>
struct Box {};
enum class Color { red };
}  // namespace ns
namespace {
void hidden() {}
struct Anon {};
}  // namespace

#define PRINT(...)                                                                        \
  {                                                                                       \
    auto x = __VA_ARGS__;                                                                 \
    std::printf("%016llx %.*s\n", (unsigned long long)x.id, (int)x.name.size(), x.name.data()); \
  }

int main() {
  PRINT(remora::function_identity<&ns::add>);
  PRINT(remora::function_identity<ns::add>);
  PRINT(remora::function_identity<&ns::Iface::reset>);
  PRINT(remora::function_identity<&ns::Iface::get>);
  PRINT(remora::function_identity<&ns::Iface::make>);
  PRINT(remora::function_identity<&hidden>);
  PRINT(remora::type_identity_of<ns::Iface>);
  PRINT(remora::type_identity_of<ns::Box<std::vector<int>>>);
  PRINT(remora::type_identity_of<std::map<std::string, ns::Box<unsigned int>>>);
  PRINT(remora::type_identity_of<ns::Color>);
  PRINT(remora::type_identity_of<Anon>);
  PRINT(remora::type_identity_of<const char*>);
  PRINT(remora::type_identity_of<unsigned long long>);
  PRINT(remora::type_identity_of<std::tuple<long, unsigned long, short, unsigned short, long long, signed char>>);
  PRINT(remora::type_identity_of<ns::Box<long unsigned int>>);
}
