#pragma once
// Compile-time identity of functions, member functions and types: a readable qualified name and
// a stable 64-bit id (FNV-1a of the name). The wire carries only the id; both ends compute it
// from the same source, so processes built from the same code agree without any registration
// handshake.
//
// The name comes from __PRETTY_FUNCTION__, whose spelling differs between compilers: g++ writes
// `[with auto F = ns::add; ...]`, clang `[F = &ns::add]`; g++ spells anonymous namespaces
// `{anonymous}`, clang `(anonymous namespace)`. normalize() maps both to one spelling, so a g++
// client and a clang server compute the same ids (tests/type_id_compilers checks it).
#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace remora {

// A name and its 64-bit hash.
struct Identity {
  std::uint64_t id;
  std::string_view name;
  friend constexpr bool operator==(const Identity& a, const Identity& b) { return a.id == b.id; }
};

namespace detail {

constexpr std::uint64_t fnv1a(std::string_view s) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ull;
  }
  return h;
}

template <auto F>
constexpr std::string_view pretty_value() {
  return __PRETTY_FUNCTION__;
}
template <class T>
constexpr std::string_view pretty_type() {
  return __PRETTY_FUNCTION__;
}

// The text after `marker` (`F = ` or `T = `) up to the `;` or `]` that ends it, nesting-aware.
constexpr std::string_view extract(std::string_view pretty, std::string_view marker) {
  std::size_t start = pretty.find(marker);
  if (start == std::string_view::npos) return pretty;
  start += marker.size();
  int depth = 0;
  std::size_t i = start;
  for (; i < pretty.size(); ++i) {
    char c = pretty[i];
    if (c == '<' || c == '(' || c == '[' || c == '{') ++depth;
    if (c == '>' || c == ')' || c == '}') --depth;
    if (c == ']') {
      if (depth == 0) break;
      --depth;
    }
    if (c == ';' && depth == 0) break;
  }
  return pretty.substr(start, i - start);
}

constexpr bool is_ident(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

// Where normalize() and canonical_builtins() write: a counter first, to size the buffer that
// then holds the whole name (names are never cut: the id hashes every character).
struct NameLength {
  std::size_t size = 0;
  char last[2] = {' ', ' '};
  constexpr void push(char c) {
    ++size;
    last[0] = last[1];
    last[1] = c;
  }
  constexpr void push(std::string_view s) {
    for (char c : s) push(c);
  }
  constexpr char back() const { return size ? last[1] : ' '; }
  constexpr bool ends_with_scope() const { return size >= 2 && last[0] == ':' && last[1] == ':'; }
};

template <std::size_t N>
struct NameBuffer {
  std::array<char, N + 1> chars{};  // one more: never a zero-length array
  std::size_t size = 0;
  constexpr void push(char c) { chars[size++] = c; }
  constexpr void push(std::string_view s) {
    for (char c : s) push(c);
  }
  constexpr char back() const { return size ? chars[size - 1] : ' '; }
  constexpr bool ends_with_scope() const { return size >= 2 && chars[size - 2] == ':' && chars[size - 1] == ':'; }
  constexpr std::string_view view() const { return {chars.data(), size}; }
};

// One spelling for every compiler: no leading `&`, no space unless it separates two
// identifiers, one word for anonymous namespaces, no standard-library inline namespaces
// (g++ prints `std::__cxx11::basic_string`, clang `std::basic_string`).
template <class Out>
constexpr void normalize(std::string_view raw, Out& out) {
  constexpr std::string_view gcc_anon = "{anonymous}";
  constexpr std::string_view clang_anon = "(anonymous namespace)";
  constexpr std::string_view inline_namespaces[] = {"__cxx11::", "__1::"};
  std::size_t i = 0;
  while (i < raw.size() && (raw[i] == '&' || raw[i] == ' ')) ++i;
  for (; i < raw.size(); ++i) {
    bool skipped = false;
    for (auto ns : inline_namespaces) {
      if (raw.substr(i, ns.size()) == ns && out.ends_with_scope()) {
        i += ns.size() - 1;
        skipped = true;
      }
    }
    if (skipped) continue;
    if (raw.substr(i, gcc_anon.size()) == gcc_anon) {
      out.push("(anonymous)");
      i += gcc_anon.size() - 1;
      continue;
    }
    if (raw.substr(i, clang_anon.size()) == clang_anon) {
      out.push("(anonymous)");
      i += clang_anon.size() - 1;
      continue;
    }
    char c = raw[i];
    if (c == ' ') {
      char prev = out.back();
      char next = i + 1 < raw.size() ? raw[i + 1] : ' ';
      if (!(is_ident(prev) && is_ident(next))) continue;
    }
    out.push(c);
  }
}

// g++ spells some builtin types differently from clang (`long unsigned int` for `unsigned long`):
// rewrite them to clang's spelling, longest first, at identifier boundaries.
template <class Out>
constexpr void canonical_builtins(std::string_view s, Out& out) {
  constexpr std::string_view from[] = {"long long unsigned int", "long unsigned int", "short unsigned int",
                                       "long long int", "long int", "short int"};
  constexpr std::string_view to[] = {"unsigned long long", "unsigned long", "unsigned short",
                                     "long long", "long", "short"};
  for (std::size_t i = 0; i < s.size();) {
    bool replaced = false;
    if (i == 0 || !is_ident(s[i - 1])) {
      for (std::size_t k = 0; k < std::size(from); ++k) {
        auto f = from[k];
        if (s.substr(i, f.size()) == f && (i + f.size() == s.size() || !is_ident(s[i + f.size()]))) {
          out.push(to[k]);
          i += f.size();
          replaced = true;
          break;
        }
      }
    }
    if (!replaced) out.push(s[i++]);
  }
}

// The normalized, canonical spelling of `raw()` (a constexpr function returning the compiler's
// text), in a buffer of exactly its size.
template <auto raw>
constexpr auto spelled_name() {
  constexpr auto normalized_size = [] {
    NameLength n;
    normalize(raw(), n);
    return n.size;
  }();
  constexpr auto normalized = [] {
    NameBuffer<normalized_size> b;
    normalize(raw(), b);
    return b;
  }();
  constexpr auto size = [&] {
    NameLength n;
    canonical_builtins(normalized.view(), n);
    return n.size;
  }();
  NameBuffer<size> out;
  canonical_builtins(normalized.view(), out);
  return out;
}

template <auto F>
constexpr std::string_view raw_value_name() {
  return extract(pretty_value<F>(), "F = ");
}
template <class T>
constexpr std::string_view raw_type_name() {
  return extract(pretty_type<T>(), "T = ");
}
template <auto F>
inline constexpr auto value_name_buffer = spelled_name<&raw_value_name<F>>();
template <class T>
inline constexpr auto type_name_buffer = spelled_name<&raw_type_name<T>>();

}  // namespace detail

// Identity of a function or member function given as a template argument: function_identity<&ns::add>.
template <auto F>
inline constexpr Identity function_identity{detail::fnv1a(detail::value_name_buffer<F>.view()),
                                            detail::value_name_buffer<F>.view()};

// Identity of a type: type_identity_of<ns::Mlp>.
template <class T>
inline constexpr Identity type_identity_of{detail::fnv1a(detail::type_name_buffer<T>.view()),
                                           detail::type_name_buffer<T>.view()};

}  // namespace remora
