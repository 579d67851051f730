#pragma once
// ValueMesh<T>: one value per point of a DeviceMesh, in its row-major order, as a group call
// gathers them (Monarch's ValueMesh). A value: copying one copies its values and mesh.
//
//   remora::ValueMesh<Obs> obs = envs.call<&Env::reset>();
//   Obs o = obs.at({1, 0});                      // by coordinates, as DeviceMesh::at
//   const std::vector<Obs>& all = obs.values();  // mesh order
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "remora/core/errors.hpp"
#include "remora/module/device_mesh.hpp"

namespace remora {

template <class T>
class ValueMesh {
 public:
  ValueMesh() = default;  // no points
  // Throws remora::Error when there is not one value per point.
  ValueMesh(DeviceMesh mesh, std::vector<T> values) : mesh_(std::move(mesh)), values_(std::move(values)) {
    if (static_cast<std::int64_t>(values_.size()) != mesh_->size())
      throw Error("remora: ValueMesh: " + std::to_string(values_.size()) + " values for a mesh of " +
                  std::to_string(mesh_->size()) + " points");
  }

  // The value at `coords` (one per dimension); throws remora::Error when out of range.
  using const_reference = typename std::vector<T>::const_reference;  // (bool for a std::vector<bool>)

  const_reference at(const std::vector<std::int64_t>& coords) const { return values_[checked_mesh().index_of(coords)]; }
  // The value of the `i`-th point in row-major order (unchecked, as std::vector's).
  const_reference operator[](std::size_t i) const { return values_[i]; }

  const std::vector<T>& values() const& { return values_; }
  std::vector<T> values() && { return std::move(values_); }
  std::size_t size() const { return values_.size(); }
  // The mesh of the group that answered (the points its members were on).
  const DeviceMesh& mesh() const { return checked_mesh(); }
  auto begin() const { return values_.begin(); }
  auto end() const { return values_.end(); }

  // The values alone, for code that took RemoteModuleGroup::call's std::vector.
  operator const std::vector<T>&() const& { return values_; }
  operator std::vector<T>() && { return std::move(values_); }
  friend bool operator==(const ValueMesh& a, const std::vector<T>& b) { return a.values_ == b; }
  friend bool operator==(const ValueMesh& a, const ValueMesh& b) { return a.mesh_ == b.mesh_ && a.values_ == b.values_; }

 private:
  const DeviceMesh& checked_mesh() const {
    if (!mesh_) throw Error("remora: ValueMesh: this one is empty (default-constructed)");
    return *mesh_;
  }
  std::optional<DeviceMesh> mesh_;
  std::vector<T> values_;
};

}  // namespace remora
