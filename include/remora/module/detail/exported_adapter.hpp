#pragma once
// RemoteModule<I>::load of a torch.export / AOTInductor package (.pt2): the owner loads the
// package with libtorch's AOTIModelPackageLoader (libtorch 2.8 or later) and serves I::forward by
// running the compiled model. A package takes and gives flat lists of tensors, so I::forward must
// take tensors only and return a tensor, a tuple of tensors or a vector of them; the numbers of
// inputs and outputs are checked against the package's call spec at load (SchemaMismatch).
// Without the loader, load() names the libtorch the package needs.
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <torch/types.h>
#include <torch/version.h>

#include "remora/core/errors.hpp"
#include "remora/core/type_id.hpp"

// The package loader's header exists from 2.6; the constructor that takes a device index, which
// this file uses, from 2.8.
#if !defined(REMORA_AOTI)
#if __has_include(<torch/csrc/inductor/aoti_package/model_package_loader.h>) && \
    (TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 8))
#define REMORA_AOTI 1
#else
#define REMORA_AOTI 0
#endif
#endif
#if REMORA_AOTI
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#endif

namespace remora::detail {

// The leaves of a pytree spec as torch.export writes it (JSON; a leaf is a node whose type is
// null): the number of tensors a package takes or gives. -1 if the spec is not understood.
inline int pytree_leaves(const std::string& spec) {
  if (spec.empty() || spec.find("children_spec") == std::string::npos) return -1;
  int n = 0;
  for (auto at = spec.find("\"type\""); at != std::string::npos; at = spec.find("\"type\"", at + 1)) {
    auto v = spec.find_first_not_of(" :", at + 6);
    if (v != std::string::npos && spec.compare(v, 4, "null") == 0) ++n;
  }
  return n;
}

template <class T>
inline constexpr bool is_tensor_v = std::is_same_v<std::remove_cvref_t<T>, torch::Tensor>;
template <class T>
struct TensorsOut : std::false_type {};  // how many tensors a result type holds
template <>
struct TensorsOut<torch::Tensor> : std::true_type {
  static constexpr int count = 1;
};
template <>
struct TensorsOut<std::vector<torch::Tensor>> : std::true_type {
  static constexpr int count = -1;  // any
};
template <class... Ts>
struct TensorsOut<std::tuple<Ts...>> : std::bool_constant<(is_tensor_v<Ts> && ...)> {
  static constexpr int count = sizeof...(Ts);
};

#if REMORA_AOTI
// A loaded package. The loader is safe to run from several threads (it hands each run one of its
// model instances, waiting for one to be free).
class ExportedPackage {
 public:
  ExportedPackage(const std::string& path, const c10::Device& device, const std::string& worker) : path_(path) {
    try {
      loader_ = std::make_unique<torch::inductor::AOTIModelPackageLoader>(path, "model", false, 1,
                                                                          device.has_index() ? device.index() : -1);
    } catch (const std::exception& e) {
      throw Error("remora: cannot load the AOTInductor package '" + path + "' on worker '" + worker + "': " + e.what());
    }
    auto meta = loader_->get_metadata();
    const auto built = meta.count("AOTI_DEVICE_KEY") ? meta["AOTI_DEVICE_KEY"] : std::string();
    if (!built.empty() && built != c10::DeviceTypeName(device.type(), true))
      throw Error("remora: the AOTInductor package '" + path + "' was compiled for " + built + ", not for " +
                  device.str() + " (worker '" + worker + "')");
    device_ = device;
    auto spec = loader_->get_call_spec();
    inputs_ = spec.size() > 0 ? pytree_leaves(spec[0]) : -1;
    outputs_ = spec.size() > 1 ? pytree_leaves(spec[1]) : -1;
  }

  std::vector<torch::Tensor> run(std::vector<torch::Tensor> inputs) {
    for (auto& t : inputs)
      if (t.device() != device_) t = t.to(device_);
    return loader_->run(inputs);
  }
  int inputs() const { return inputs_; }  // -1: unknown
  int outputs() const { return outputs_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  c10::Device device_{c10::kCPU};
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader_;
  int inputs_ = -1, outputs_ = -1;
};

template <class I, class F = decltype(&I::forward)>
class ExportedAdapter;

template <class I, class C, class R, class... Ps>
class ExportedAdapter<I, R (C::*)(Ps...)> : public I {
 public:
  explicit ExportedAdapter(std::shared_ptr<ExportedPackage> package) : package_(std::move(package)) {}

  R forward(Ps... ps) override {
    auto out = package_->run({std::forward<Ps>(ps)...});
    using Out = std::remove_cvref_t<R>;
    if constexpr (std::is_same_v<Out, torch::Tensor>) {
      return std::move(out.at(0));
    } else if constexpr (std::is_same_v<Out, std::vector<torch::Tensor>>) {
      return out;
    } else {
      return [&]<std::size_t... k>(std::index_sequence<k...>) {
        return Out{std::move(out.at(k))...};
      }(std::make_index_sequence<std::tuple_size_v<Out>>());
    }
  }

  // Throws SchemaMismatch unless I::forward takes as many tensors as the package and returns what
  // it gives.
  static void check(const ExportedPackage& package) {
    const std::string name(type_identity_of<I>.name);
    const int ins = static_cast<int>(sizeof...(Ps)), outs = TensorsOut<std::remove_cvref_t<R>>::count;
    if (package.inputs() >= 0 && package.inputs() != ins)
      throw SchemaMismatch(package.path(), "forward of " + name + " takes " + std::to_string(ins) +
                                               " tensors; the AOTInductor package '" + package.path() + "' takes " +
                                               std::to_string(package.inputs()));
    if (package.outputs() >= 0 && outs >= 0 && package.outputs() != outs)
      throw SchemaMismatch(package.path(), "forward of " + name + " returns " + std::to_string(outs) +
                                               " tensors; the AOTInductor package '" + package.path() + "' gives " +
                                               std::to_string(package.outputs()));
  }

 private:
  std::shared_ptr<ExportedPackage> package_;
};
#endif

// What the owner runs for RemoteModule<I>::load of a .pt2 package.
template <class I>
std::shared_ptr<I> make_exported(const std::string& path, const c10::Device& device, const std::string& worker) {
#if REMORA_AOTI
  using F = decltype(&I::forward);
  constexpr bool fits = [] {
    if constexpr (std::is_member_function_pointer_v<F>) {
      return []<class C, class R, class... Ps>(R (C::*)(Ps...)) {
        return (is_tensor_v<Ps> && ...) && TensorsOut<std::remove_cvref_t<R>>::value;
      }(F{});
    }
    return false;
  }();
  if constexpr (fits) {
    auto package = std::make_shared<ExportedPackage>(path, device, worker);
    ExportedAdapter<I>::check(*package);
    return std::make_shared<ExportedAdapter<I>>(std::move(package));
  } else {
    throw SchemaMismatch(path, "an AOTInductor package takes and gives tensors only: forward of " +
                                   std::string(type_identity_of<I>.name) +
                                   " must take torch::Tensor arguments and return a tensor, a tuple or a vector of "
                                   "them (loading '" + path + "')");
  }
#else
  (void)device;
  throw Error("remora: '" + path + "' is a torch.export / AOTInductor package: loading it needs libtorch 2.8 or "
              "later with the AOTInductor package loader; worker '" + worker + "' has libtorch " TORCH_VERSION);
#endif
}

}  // namespace remora::detail
