#pragma once
// Making a module on its owner and presenting it as the interface I: a module that derives from
// I is used as is; an existing module (torch::nn::Linear, a TORCH_MODULE holder, any class with a
// matching forward) is wrapped in an Adapter that implements I::forward by calling it.
#include <concepts>
#include <memory>
#include <string>
#include <type_traits>

#include <torch/cuda.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "remora/config.hpp"
#include "remora/core/errors.hpp"
#include "remora/dynamic/detail/script_access.hpp"

namespace remora::detail {

// Lets the owner reach the torch::nn::Module behind an interface object (train, parameters).
struct ModuleAccess {
  virtual ~ModuleAccess() = default;
  virtual std::shared_ptr<torch::nn::Module> nn_module() = 0;
};

template <class M>
concept ModuleHolderType = requires { typename M::ContainedType; } &&
                           std::derived_from<M, torch::nn::ModuleHolder<typename M::ContainedType>>;

template <class M>
struct module_impl {
  using type = M;
};
template <ModuleHolderType M>
struct module_impl<M> {
  using type = typename M::ContainedType;
};
template <class M>
using module_impl_t = typename module_impl<M>::type;

template <class M, class... As>
std::shared_ptr<module_impl_t<M>> construct_module(As&&... args) {
  if constexpr (ModuleHolderType<M>)
    return M(std::forward<As>(args)...).ptr();
  else
    return std::make_shared<M>(std::forward<As>(args)...);
}

// Whether Impl's forward accepts I::forward's parameters and gives something convertible to its result.
template <class I, class Impl, class Sig = decltype(&I::forward)>
inline constexpr bool forward_adaptable = false;
template <class I, class Impl, class R, class... Ps>
inline constexpr bool forward_adaptable<I, Impl, R (I::*)(Ps...)> =
    std::is_void_v<R> ? requires(Impl& m, Ps&&... ps) { m.forward(std::forward<Ps>(ps)...); }
                      : requires(Impl& m, Ps&&... ps) {
                          { m.forward(std::forward<Ps>(ps)...) } -> std::convertible_to<R>;
                        };

template <class I, class Impl, class Sig = decltype(&I::forward)>
class Adapter;
template <class I, class Impl, class R, class... Ps>
class Adapter<I, Impl, R (I::*)(Ps...)> final : public I, public ModuleAccess {
 public:
  explicit Adapter(std::shared_ptr<Impl> m) : module_(std::move(m)) {}
  R forward(Ps... ps) override {
    if constexpr (std::is_void_v<R>)
      module_->forward(std::forward<Ps>(ps)...);
    else
      return module_->forward(std::forward<Ps>(ps)...);
  }
  std::shared_ptr<torch::nn::Module> nn_module() override {
    if constexpr (std::derived_from<Impl, torch::nn::Module>)
      return module_;
    else
      return nullptr;
  }

 private:
  std::shared_ptr<Impl> module_;
};

// What create<M> accepts for interface I, with the reason when it does not.
template <class I, class M>
constexpr bool derives_or_adapts() {
  if constexpr (std::derived_from<M, I>)
    return true;
  else
    return forward_adaptable<I, module_impl_t<M>>;
}

template <class I, class M>
constexpr bool adapter_complete() {
  if constexpr (std::derived_from<M, I> || !forward_adaptable<I, module_impl_t<M>>)
    return true;
  else
    return !std::is_abstract_v<Adapter<I, module_impl_t<M>>>;
}

// The torch::nn::Module behind an interface object, or null.
template <class I>
std::shared_ptr<torch::nn::Module> nn_module_of(const std::shared_ptr<I>& obj) {
  if (auto* a = dynamic_cast<ModuleAccess*>(obj.get())) return a->nn_module();
  if (auto* m = dynamic_cast<torch::nn::Module*>(obj.get())) return std::shared_ptr<torch::nn::Module>(obj, m);
  return nullptr;
}

// Throws unless `device` exists on this process.
REMORA_DECL void check_device_exists(const c10::Device& device, const std::string& worker);

// Builds M on this worker, on `device`, as an I.
template <class I, class M, class... As>
std::shared_ptr<I> make_module(const c10::Device& device, As&&... args) {
  if constexpr (std::derived_from<M, I>) {
    auto m = std::make_shared<M>(std::forward<As>(args)...);
    if constexpr (std::derived_from<M, torch::nn::Module>) m->to(device);
    return m;
  } else {
    auto impl = construct_module<M>(std::forward<As>(args)...);
    if constexpr (std::derived_from<module_impl_t<M>, torch::nn::Module>) impl->to(device);
    return std::make_shared<Adapter<I, module_impl_t<M>>>(std::move(impl));
  }
}

}  // namespace remora::detail

#if REMORA_HEADER_ONLY
#include "remora/module/impl/module.ipp"
#endif
