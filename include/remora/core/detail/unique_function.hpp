#pragma once
// A move-only std::function. std::function needs copyable targets, but continuations own
// move-only things (promises, Asio handlers). Targets of up to kInline bytes (most continuations
// and pool jobs: a few pointers and a handle or two) live inside the object, so a call's hand-offs
// do not each cost an allocation.
#include <cstddef>
#include <new>
#include <type_traits>
#include <utility>

namespace remora::detail {

template <class Signature>
class UniqueFunction;

template <class R, class... Args>
class UniqueFunction<R(Args...)> {
  static constexpr std::size_t kInline = 48;

  template <class F>
  static constexpr bool fits_inline = sizeof(F) <= kInline && alignof(F) <= alignof(std::max_align_t) &&
                                      std::is_nothrow_move_constructible_v<F>;

 public:
  UniqueFunction() noexcept = default;
  template <class F>
    requires(!std::is_same_v<std::decay_t<F>, UniqueFunction> && std::is_invocable_r_v<R, std::decay_t<F>&, Args...>)
  UniqueFunction(F&& f) {
    using T = std::decay_t<F>;
    if constexpr (fits_inline<T>) {
      ::new (static_cast<void*>(storage_)) T(std::forward<F>(f));
    } else {
      ::new (static_cast<void*>(storage_)) T*(new T(std::forward<F>(f)));
    }
    ops_ = &ops_for<T>;
  }
  UniqueFunction(UniqueFunction&& other) noexcept { take(other); }
  UniqueFunction& operator=(UniqueFunction&& other) noexcept {
    if (this != &other) {
      reset();
      take(other);
    }
    return *this;
  }
  UniqueFunction(const UniqueFunction&) = delete;
  UniqueFunction& operator=(const UniqueFunction&) = delete;
  ~UniqueFunction() { reset(); }

  explicit operator bool() const noexcept { return ops_ != nullptr; }
  R operator()(Args... args) { return ops_->call(storage_, std::forward<Args>(args)...); }

 private:
  struct Ops {
    R (*call)(void* storage, Args&&... args);
    void (*move)(void* to, void* from) noexcept;  // constructs at `to`, destroys `from`
    void (*destroy)(void* storage) noexcept;
  };

  template <class T>
  static T& target(void* storage) noexcept {
    if constexpr (fits_inline<T>)
      return *std::launder(static_cast<T*>(storage));
    else
      return **std::launder(static_cast<T**>(storage));
  }

  template <class T>
  static constexpr Ops ops_for{
      [](void* s, Args&&... args) -> R { return target<T>(s)(std::forward<Args>(args)...); },
      [](void* to, void* from) noexcept {
        if constexpr (fits_inline<T>) {
          T& src = *std::launder(static_cast<T*>(from));
          ::new (to) T(std::move(src));
          src.~T();
        } else {
          ::new (to) T*(*std::launder(static_cast<T**>(from)));
        }
      },
      [](void* s) noexcept {
        if constexpr (fits_inline<T>)
          std::launder(static_cast<T*>(s))->~T();
        else
          delete *std::launder(static_cast<T**>(s));
      }};

  void take(UniqueFunction& other) noexcept {
    if (!other.ops_) return;
    other.ops_->move(storage_, other.storage_);
    ops_ = other.ops_;
    other.ops_ = nullptr;
  }
  void reset() noexcept {
    if (!ops_) return;
    auto* ops = ops_;
    ops_ = nullptr;  // a target whose destructor reaches back here finds it empty
    ops->destroy(storage_);
  }

  alignas(std::max_align_t) unsigned char storage_[kInline];
  const Ops* ops_ = nullptr;
};

}  // namespace remora::detail
