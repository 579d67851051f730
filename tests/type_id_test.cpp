// Compile-time identity: readable names, stable distinct ids, usable in constant expressions.
#include <string_view>

#include <catch2/catch.hpp>

#include "remora/core/type_id.hpp"

namespace geo {
inline int add(int a, int b) { return a + b; }
inline int sub(int a, int b) { return a - b; }
struct Shape {
  virtual ~Shape() = default;
  virtual double area() const = 0;
  virtual void scale(double) = 0;
};
template <class T>
struct Grid {};
}  // namespace geo

// Ids are constant expressions: usable as case labels and template arguments.
static_assert(remora::function_identity<&geo::add>.id != remora::function_identity<&geo::sub>.id);
static_assert(remora::function_identity<&geo::add>.id == remora::function_identity<geo::add>.id);
static_assert(remora::function_identity<&geo::add>.name == "geo::add");

TEST_CASE("Functions and members and types have readable qualified names", "[type_id]") {
  CHECK(remora::function_identity<&geo::add>.name == "geo::add");
  CHECK(remora::function_identity<&geo::Shape::area>.name == "geo::Shape::area");
  CHECK(remora::function_identity<&geo::Shape::scale>.name == "geo::Shape::scale");
  CHECK(remora::type_identity_of<geo::Shape>.name == "geo::Shape");
  CHECK(remora::type_identity_of<geo::Grid<int>>.name == "geo::Grid<int>");
  CHECK(remora::type_identity_of<std::string>.name == "std::basic_string<char>");
}

TEST_CASE("Ids are the FNV-1a hash of the name and so every process computes the same", "[type_id]") {
  // Fixed expected values: a change to the hash or the normalization breaks wire compatibility
  // and must be a deliberate protocol version bump.
  CHECK(remora::detail::fnv1a("") == 0xcbf29ce484222325ull);
  CHECK(remora::detail::fnv1a("geo::add") == remora::function_identity<&geo::add>.id);
  CHECK(remora::function_identity<&geo::add>.id == 0x3c77d92b8f0f75e5ull);
  CHECK(remora::type_identity_of<geo::Shape>.id != remora::function_identity<&geo::Shape::area>.id);
}

TEST_CASE("normalize() maps both compilers' spellings to one", "[type_id]") {
  using remora::detail::normalize;
  CHECK(normalize("&ns::add").view() == "ns::add");
  CHECK(normalize("{anonymous}::f").view() == "(anonymous)::f");
  CHECK(normalize("(anonymous namespace)::f").view() == "(anonymous)::f");
  CHECK(normalize("std::__cxx11::basic_string<char>").view() == "std::basic_string<char>");
  CHECK(normalize("std::__1::vector<int, std::__1::allocator<int> >").view() ==
        "std::vector<int,std::allocator<int>>");
  CHECK(normalize("unsigned int").view() == "unsigned int");
  using remora::detail::canonical_builtins;
  CHECK(canonical_builtins(normalize("std::pair<long unsigned int, long int>")).view() ==
        "std::pair<unsigned long,long>");
  CHECK(canonical_builtins(normalize("long long unsigned int*")).view() == "unsigned long long*");
  CHECK(canonical_builtins(normalize("ns::long_int_holder")).view() == "ns::long_int_holder");
}
