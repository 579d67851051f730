// Compile-time identity: readable names, stable distinct ids, usable in constant expressions.
#include <string>
#include <string_view>

#include <catch2/catch.hpp>

#include "remora/agent/detail/registry.hpp"
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

namespace {
std::string normalize(std::string_view raw) {
  remora::detail::NameBuffer<1024> b;
  remora::detail::normalize(raw, b);
  return std::string(b.view());
}
std::string canonical_builtins(std::string_view s) {
  remora::detail::NameBuffer<1024> b;
  remora::detail::canonical_builtins(s, b);
  return std::string(b.view());
}
}  // namespace

TEST_CASE("Normalize() maps both compilers' spellings to one", "[type_id]") {
  CHECK(normalize("&ns::add") == "ns::add");
  CHECK(normalize("{anonymous}::f") == "(anonymous)::f");
  CHECK(normalize("(anonymous namespace)::f") == "(anonymous)::f");
  CHECK(normalize("std::__cxx11::basic_string<char>") == "std::basic_string<char>");
  CHECK(normalize("std::__1::vector<int, std::__1::allocator<int> >") == "std::vector<int,std::allocator<int>>");
  CHECK(normalize("unsigned int") == "unsigned int");
  CHECK(canonical_builtins(normalize("std::pair<long unsigned int, long int>")) == "std::pair<unsigned long,long>");
  CHECK(canonical_builtins(normalize("long long unsigned int*")) == "unsigned long long*");
  CHECK(canonical_builtins(normalize("ns::long_int_holder")) == "ns::long_int_holder");
}

// Two functions whose names share their first 560 characters (the id once hashed only 512).
namespace a_very_long_namespace_name_one_hundred_characters_long_for_the_test_of_whole_name_hashing_0001 {
namespace a_very_long_namespace_name_one_hundred_characters_long_for_the_test_of_whole_name_hashing_0002 {
namespace a_very_long_namespace_name_one_hundred_characters_long_for_the_test_of_whole_name_hashing_0003 {
namespace a_very_long_namespace_name_one_hundred_characters_long_for_the_test_of_whole_name_hashing_0004 {
namespace a_very_long_namespace_name_one_hundred_characters_long_for_the_test_of_whole_name_hashing_0005 {
namespace a_very_long_namespace_name_one_hundred_characters_long_for_the_test_of_whole_name_hashing_0006 {
inline int first(int x) { return x; }
inline int second(int x) { return -x; }
}  // namespace a_very_long_namespace_name_one_hundred_characters_long_for_the_test_of_whole_name_hashing_0006
}  // namespace a_very_long_namespace_name_one_hundred_characters_long_for_the_test_of_whole_name_hashing_0005
}  // namespace a_very_long_namespace_name_one_hundred_characters_long_for_the_test_of_whole_name_hashing_0004
}  // namespace a_very_long_namespace_name_one_hundred_characters_long_for_the_test_of_whole_name_hashing_0003
}  // namespace a_very_long_namespace_name_one_hundred_characters_long_for_the_test_of_whole_name_hashing_0002
}  // namespace a_very_long_namespace_name_one_hundred_characters_long_for_the_test_of_whole_name_hashing_0001

TEST_CASE("Function ids hash the whole name, however long", "[type_id]") {
  namespace deep = a_very_long_namespace_name_one_hundred_characters_long_for_the_test_of_whole_name_hashing_0001::
      a_very_long_namespace_name_one_hundred_characters_long_for_the_test_of_whole_name_hashing_0002::
          a_very_long_namespace_name_one_hundred_characters_long_for_the_test_of_whole_name_hashing_0003::
              a_very_long_namespace_name_one_hundred_characters_long_for_the_test_of_whole_name_hashing_0004::
                  a_very_long_namespace_name_one_hundred_characters_long_for_the_test_of_whole_name_hashing_0005::
                      a_very_long_namespace_name_one_hundred_characters_long_for_the_test_of_whole_name_hashing_0006;
  constexpr auto a = remora::function_identity<&deep::first>;
  constexpr auto b = remora::function_identity<&deep::second>;
  CHECK(a.name.size() > 512);  // the two names differ only after their first 512 characters
  CHECK(a.name.ends_with("::first"));
  CHECK(b.name.ends_with("::second"));
  CHECK(a.id != b.id);
  CHECK(a.id == remora::detail::fnv1a(a.name));
}

TEST_CASE("Two functions with one id are served under neither, and an agent refuses to start", "[type_id][registry]") {
  remora::detail::Registry r;
  auto h = [](remora::detail::IncomingCall&&) {};
  CHECK_NOTHROW(r.check_no_clashes());
  r.add(42, "ns::one", h);
  r.add(42, "ns::one", h);  // the same function registered from two translation units
  CHECK(r.find(42) != nullptr);
  CHECK_NOTHROW(r.check_no_clashes());
  r.add(42, "ns::two", h);
  CHECK(r.find(42) == nullptr);
  r.add(42, "ns::one", h);  // a clash stays a clash
  CHECK(r.find(42) == nullptr);
  CHECK_THROWS_WITH(r.check_no_clashes(), Catch::Contains("ns::one and ns::two"));
}
