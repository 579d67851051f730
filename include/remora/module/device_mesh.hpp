#pragma once
// DeviceMesh: workers and their devices ("w1/cpu", "w2/cuda:0", as RemoteModule takes them)
// arranged in named dimensions, as PyTorch's DeviceMesh arranges ranks. A value: copying one
// copies its names; nothing talks to the network here.
//
//   remora::DeviceMesh mesh({"w1/cpu", "w2/cpu", "w3/cpu", "w4/cpu"}, {2, 2}, {"dp", "pp"});
//   mesh.at({1, 0})            // "w3/cpu": row-major, as a tensor of shape {2, 2}
//   mesh.slice("dp", 0)        // the points along "dp" where "pp" is 0: {"w1/cpu", "w3/cpu"}
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "remora/core/errors.hpp"
#include "remora/module/remote_device.hpp"

namespace remora {

class DeviceMesh {
 public:
  // `devices` in row-major order of `shape`; `dims` names each dimension. Throws remora::Error
  // when the shape does not hold the devices, a name repeats, or a device string is malformed.
  DeviceMesh(std::vector<std::string> devices, std::vector<std::int64_t> shape, std::vector<std::string> dims)
      : devices_(std::move(devices)), shape_(std::move(shape)), dims_(std::move(dims)) {
    if (shape_.empty()) throw Error("remora: DeviceMesh: the shape has no dimension");
    if (dims_.size() != shape_.size())
      throw Error("remora: DeviceMesh: " + std::to_string(dims_.size()) + " dimension names for a shape of " +
                  std::to_string(shape_.size()) + " dimensions");
    std::int64_t n = 1;
    for (std::size_t d = 0; d < shape_.size(); ++d) {
      if (shape_[d] < 1) throw Error("remora: DeviceMesh: dimension '" + dims_[d] + "' has size " + std::to_string(shape_[d]));
      n *= shape_[d];
      for (std::size_t e = 0; e < d; ++e)
        if (dims_[e] == dims_[d]) throw Error("remora: DeviceMesh: two dimensions are named '" + dims_[d] + "'");
    }
    if (n != static_cast<std::int64_t>(devices_.size()))
      throw Error("remora: DeviceMesh: a shape of " + std::to_string(n) + " points for " +
                  std::to_string(devices_.size()) + " devices");
    for (std::size_t i = 0; i < devices_.size(); ++i)
      for (std::size_t j = 0; j < i; ++j)
        if (devices_[i] == devices_[j]) throw Error("remora: DeviceMesh: '" + devices_[i] + "' appears twice");
    for (const auto& d : devices_) RemoteDevice::parse(d);  // throws for a malformed one
  }
  // A one-dimensional mesh named `dim`.
  explicit DeviceMesh(std::vector<std::string> devices, std::string dim = "d0")
      : DeviceMesh(devices, {static_cast<std::int64_t>(devices.size())}, {std::move(dim)}) {}

  std::int64_t size() const { return static_cast<std::int64_t>(devices_.size()); }
  std::int64_t size(std::string_view dim) const { return shape_[dim_index(dim)]; }
  std::int64_t ndim() const { return static_cast<std::int64_t>(shape_.size()); }
  const std::vector<std::int64_t>& shape() const { return shape_; }
  const std::vector<std::string>& dims() const { return dims_; }
  // Every point's "worker/device", row-major.
  const std::vector<std::string>& devices() const { return devices_; }

  // The point at `coords` (one per dimension). Throws remora::Error when out of range.
  const std::string& at(const std::vector<std::int64_t>& coords) const { return devices_[flat(coords)]; }
  // The row-major position of the point at `coords` (what ValueMesh::at looks up).
  std::size_t index_of(const std::vector<std::int64_t>& coords) const { return flat(coords); }

  // The one-dimensional mesh along `dim` through the `index`-th point of the other dimensions
  // (row-major over them; for a 2-D mesh, the other dimension's coordinate). It keeps the name
  // `dim`. Throws remora::Error for an unknown dimension or an index out of range.
  DeviceMesh slice(std::string_view dim, std::int64_t index) const {
    const std::size_t d = dim_index(dim);
    const std::int64_t others = size() / shape_[d];
    if (index < 0 || index >= others)
      throw Error("remora: DeviceMesh::slice(\"" + std::string(dim) + "\", " + std::to_string(index) + "): there are " +
                  std::to_string(others) + " slices along that dimension");
    std::vector<std::int64_t> coords(shape_.size());
    for (std::size_t e = shape_.size(); e-- > 0;) {  // `index` spelled in the other dimensions
      if (e == d) continue;
      coords[e] = index % shape_[e];
      index /= shape_[e];
    }
    std::vector<std::string> points;
    for (coords[d] = 0; coords[d] < shape_[d]; ++coords[d]) points.push_back(devices_[flat(coords)]);
    return DeviceMesh(std::move(points), std::string(dim));
  }

  // The slice along `dim` that holds a point of worker `worker` (the first such point), and that
  // point's position in it; throws remora::Error when the worker has no point in the mesh.
  std::pair<DeviceMesh, std::int64_t> slice_through(std::string_view dim, std::string_view worker) const {
    const std::size_t d = dim_index(dim);
    for (std::size_t i = 0; i < devices_.size(); ++i) {
      if (RemoteDevice::parse(devices_[i]).worker != worker) continue;
      auto coords = coordinates(static_cast<std::int64_t>(i));
      const std::int64_t position = coords[d];
      std::int64_t index = 0;
      for (std::size_t e = 0; e < shape_.size(); ++e)
        if (e != d) index = index * shape_[e] + coords[e];
      return {slice(dim, index), position};
    }
    throw Error("remora: worker '" + std::string(worker) + "' has no point in the mesh");
  }

  friend bool operator==(const DeviceMesh&, const DeviceMesh&) = default;

 private:
  std::size_t dim_index(std::string_view dim) const {
    for (std::size_t d = 0; d < dims_.size(); ++d)
      if (dims_[d] == dim) return d;
    std::string known;
    for (const auto& n : dims_) known += (known.empty() ? "" : ", ") + n;
    throw Error("remora: the mesh has no dimension '" + std::string(dim) + "' (it has " + known + ")");
  }
  std::size_t flat(const std::vector<std::int64_t>& coords) const {
    if (coords.size() != shape_.size())
      throw Error("remora: DeviceMesh::at: " + std::to_string(coords.size()) + " coordinates for " +
                  std::to_string(shape_.size()) + " dimensions");
    std::int64_t i = 0;
    for (std::size_t d = 0; d < shape_.size(); ++d) {
      if (coords[d] < 0 || coords[d] >= shape_[d])
        throw Error("remora: DeviceMesh::at: coordinate " + std::to_string(coords[d]) + " is outside dimension '" +
                    dims_[d] + "' of size " + std::to_string(shape_[d]));
      i = i * shape_[d] + coords[d];
    }
    return static_cast<std::size_t>(i);
  }
  std::vector<std::int64_t> coordinates(std::int64_t i) const {
    std::vector<std::int64_t> c(shape_.size());
    for (std::size_t d = shape_.size(); d-- > 0;) {
      c[d] = i % shape_[d];
      i /= shape_[d];
    }
    return c;
  }

  std::vector<std::string> devices_;
  std::vector<std::int64_t> shape_;
  std::vector<std::string> dims_;
};

}  // namespace remora
