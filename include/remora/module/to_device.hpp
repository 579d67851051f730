#pragma once
// to_device(value, device): moves every tensor anywhere inside `value` to `device` — inside
// vectors, arrays, tuples, pairs, optionals, variants, map values, IValues, and user structs
// (walked through their cereal serialize function, the one they already have to be sent).
// RemoteModule applies it to arguments (to the module's device) and results (to the CPU).
#include <array>
#include <deque>
#include <list>
#include <map>
#include <optional>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include <ATen/core/ivalue.h>
#include <cereal/cereal.hpp>
#include <torch/types.h>

namespace remora {

namespace detail {

// A cereal-shaped visitor: user types call ar(members...) on it from their serialize().
class DeviceWalker {
 public:
  // `queue_uploads`: CPU-to-GPU copies from pageable memory are queued on the current stream
  // instead of waited for. Safe: CUDA has read the source by the time the copy call returns,
  // and work queued after it on that stream sees the data.
  explicit DeviceWalker(c10::Device device, bool queue_uploads = false)
      : device_(device), queue_uploads_(queue_uploads && device.is_cuda()) {}

  template <class... Ts>
  void operator()(Ts&&... values) {
    (visit(values), ...);
  }

  void visit(torch::Tensor& t) {
    if (!t.defined() || t.device() == device_) return;
    t = t.to(device_, /*non_blocking=*/queue_uploads_ && t.is_cpu() && !t.is_pinned());
  }
  void visit(c10::IValue& v) {
    if (v.isTensor()) {
      auto t = v.toTensor();
      visit(t);
      v = t;
    } else if (v.isTensorList()) {
      auto list = v.toTensorList();
      for (std::size_t i = 0; i < list.size(); ++i) {
        torch::Tensor t = list[i];
        visit(t);
        list[i] = t;
      }
    } else if (v.isList()) {
      auto list = v.toList();
      for (std::size_t i = 0; i < list.size(); ++i) {
        c10::IValue e = list[i];
        visit(e);
        list[i] = e;
      }
    } else if (v.isTuple()) {
      auto elems = v.toTupleRef().elements().vec();
      for (auto& e : elems) visit(e);
      v = c10::ivalue::Tuple::create(std::move(elems));
    } else if (v.isGenericDict()) {
      auto dict = v.toGenericDict();
      for (auto it = dict.begin(); it != dict.end(); ++it) {
        c10::IValue e = it->value();
        visit(e);
        it->setValue(e);
      }
    }
  }
  template <class T>
  void visit(cereal::NameValuePair<T>& nvp) {
    visit(nvp.value);
  }
  template <class T>
  void visit(std::optional<T>& o) {
    if (o) visit(*o);
  }
  template <class... Ts>
  void visit(std::tuple<Ts...>& t) {
    std::apply([&](auto&... e) { (visit(e), ...); }, t);
  }
  template <class A, class B>
  void visit(std::pair<A, B>& p) {
    visit_value_only(p.first);
    visit(p.second);
  }
  template <class... Ts>
  void visit(std::variant<Ts...>& v) {
    std::visit([&](auto& e) { visit(e); }, v);
  }
  template <class T, class A>
  void visit(std::vector<T, A>& c) {
    if constexpr (!std::is_same_v<T, bool>)
      for (auto& e : c) visit(e);
  }
  template <class T, class A>
  void visit(std::deque<T, A>& c) {
    for (auto& e : c) visit(e);
  }
  template <class T, class A>
  void visit(std::list<T, A>& c) {
    for (auto& e : c) visit(e);
  }
  template <class T, std::size_t N>
  void visit(std::array<T, N>& c) {
    for (auto& e : c) visit(e);
  }
  template <class K, class V, class C, class A>
  void visit(std::map<K, V, C, A>& m) {
    for (auto& [k, v] : m) visit(v);  // keys are const: tensors as keys stay put
  }
  template <class K, class V, class H, class E, class A>
  void visit(std::unordered_map<K, V, H, E, A>& m) {
    for (auto& [k, v] : m) visit(v);
  }
  template <class T>
  void visit(T& value) {
    if constexpr (std::is_arithmetic_v<T> || std::is_enum_v<T> || std::is_same_v<T, std::string>) {
      // nothing to move
    } else if constexpr (requires { value.serialize(*this); }) {
      value.serialize(*this);
    } else if constexpr (requires { serialize(*this, value); }) {
      serialize(*this, value);
    }
    // other types (sets, save/load-only types) hold no tensors remora can reach; left as is
  }

 private:
  template <class K>
  void visit_value_only(const K&) {}
  template <class K>
  void visit_value_only(K& k) {
    visit(k);
  }
  c10::Device device_;
  bool queue_uploads_;
};

// to_device for a module's arguments: copies to the GPU are queued on the current stream, where
// forward then runs (one wait fewer per call than blocking copies).
template <class T>
T to_device_queued(T value, c10::Device device) {
  DeviceWalker walker(device, /*queue_uploads=*/true);
  walker.visit(value);
  return value;
}

}  // namespace detail

// Returns `value` with every tensor inside it on `device` (tensors already there are kept, not copied).
template <class T>
T to_device(T value, c10::Device device) {
  detail::DeviceWalker walker(device);
  walker.visit(value);
  return value;
}

}  // namespace remora
