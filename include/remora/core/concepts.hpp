#pragma once
// The concepts the public API checks, so misuse is one readable compile error.
#include <array>
#include <complex>
#include <concepts>
#include <deque>
#include <list>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include <ATen/core/ivalue.h>
#include <torch/types.h>

namespace remora {

namespace detail {
// An archive stand-in for probing a type's serialize/save/load members.
struct ProbeArchive {
  template <class... Ts>
  void operator()(Ts&&...);
};

template <class T>
concept HasCerealMembers = std::default_initializable<T> && (requires(T& t, ProbeArchive& a) { t.serialize(a); } ||
                                                             requires(T& t, const T& c, ProbeArchive& a) {
                                                               c.save(a);
                                                               t.load(a);
                                                             });
template <class T>
concept HasCerealFunctions = std::default_initializable<T> && (requires(T& t, ProbeArchive& a) { serialize(a, t); } ||
                                                               requires(T& t, const T& c, ProbeArchive& a) {
                                                                 save(a, c);
                                                                 load(a, t);
                                                               });

template <class T>
struct serializable : std::bool_constant<std::is_arithmetic_v<T> || std::is_enum_v<T> ||
                                         std::is_same_v<T, std::string> || std::is_same_v<T, torch::Tensor> ||
                                         std::is_same_v<T, c10::IValue> || HasCerealMembers<T> ||
                                         HasCerealFunctions<T>> {};
template <class T>
inline constexpr bool serializable_v = serializable<std::remove_cv_t<T>>::value;

template <class T, class A>
struct serializable<std::vector<T, A>> : std::bool_constant<serializable_v<T>> {};
template <class T, class A>
struct serializable<std::deque<T, A>> : std::bool_constant<serializable_v<T>> {};
template <class T, class A>
struct serializable<std::list<T, A>> : std::bool_constant<serializable_v<T>> {};
template <class T, std::size_t N>
struct serializable<std::array<T, N>> : std::bool_constant<serializable_v<T>> {};
template <class T>
struct serializable<std::optional<T>> : std::bool_constant<serializable_v<T>> {};
template <class T>
struct serializable<std::complex<T>> : std::bool_constant<std::is_arithmetic_v<T>> {};
template <class A, class B>
struct serializable<std::pair<A, B>> : std::bool_constant<serializable_v<A> && serializable_v<B>> {};
template <class... Ts>
struct serializable<std::tuple<Ts...>> : std::bool_constant<(serializable_v<Ts> && ...)> {};
template <class... Ts>
struct serializable<std::variant<Ts...>> : std::bool_constant<(serializable_v<Ts> && ...)> {};
template <class K, class V, class C, class A>
struct serializable<std::map<K, V, C, A>> : std::bool_constant<serializable_v<K> && serializable_v<V>> {};
template <class K, class V, class H, class E, class A>
struct serializable<std::unordered_map<K, V, H, E, A>> : std::bool_constant<serializable_v<K> && serializable_v<V>> {};
template <class K, class C, class A>
struct serializable<std::set<K, C, A>> : std::bool_constant<serializable_v<K>> {};
template <class K, class H, class E, class A>
struct serializable<std::unordered_set<K, H, E, A>> : std::bool_constant<serializable_v<K>> {};
}  // namespace detail

// A type remora can send: arithmetic, enums, std::string, torch::Tensor, c10::IValue, standard
// containers, optionals, tuples, pairs and variants of those, and default-constructible user
// types with a cereal `serialize(Archive&)` member (or save/load, or free functions).
// References and cv-qualifiers are ignored: arguments travel by value.
template <class T>
concept Serializable = detail::serializable_v<std::remove_cvref_t<T>>;

}  // namespace remora
