#pragma once
// What RemoteModule<I> checks of an interface and of the module that implements it, so misuse is
// one readable compile error.
#include <concepts>
#include <type_traits>

namespace remora {

// An interface a RemoteModule can present: a polymorphic class with exactly one `forward`,
// which is not a template (so `&I::forward` names it).
template <class I>
concept ModuleInterface = std::is_class_v<I> && std::is_polymorphic_v<I> && requires { &I::forward; };

// M implements interface I by deriving from it.
template <class M, class I>
concept Implements = ModuleInterface<I> && std::derived_from<M, I>;

}  // namespace remora
