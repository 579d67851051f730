#pragma once
// The cereal archives of a frame body. They write native little-endian binary like
// cereal::BinaryOutputArchive, with two differences that make them safe for network input:
//  - every read is bounds-checked, and a container's announced size must fit in the bytes that
//    remain, so a forged size can never make the reader allocate more than the frame holds;
//  - a bool must be 0 or 1 (any other byte would be undefined behaviour in C++).
// Tensors do not go into the body: BodyWriter hands them to the frame's segment list and writes
// their index; BodyReader gives back the tensor the frame reader already allocated and filled.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include <cereal/cereal.hpp>

#include <torch/types.h>

#include "remora/config.hpp"
#include "remora/core/errors.hpp"

#include "remora/wire/device_map.hpp"
#include "remora/wire/dtype.hpp"
#include "remora/wire/frame.hpp"
#include "remora/wire/limits.hpp"

namespace remora::wire {

// A tensor's index in a body when it is undefined (torch::Tensor()).
inline constexpr std::uint32_t kUndefinedTensor = std::numeric_limits<std::uint32_t>::max();

class BodyWriter : public cereal::OutputArchive<BodyWriter, cereal::AllowEmptyClassElision> {
 public:
  // `devices`: where the frame's CUDA tensors arrive on its receiver (none: they cannot be sent).
  REMORA_DECL BodyWriter(FrameHead& out, std::vector<std::byte>& descriptors, FrameTensors& tensors,
                         const EncodeDevices& devices = {});
  REMORA_DECL ~BodyWriter();

  void saveBinary(const void* data, std::size_t size) {
    auto p = static_cast<const std::byte*>(data);
    out_.insert(out_.end(), p, p + size);
  }

  // Adds a tensor's bytes as a segment of the frame and returns its index. What is sent is the
  // tensor's value (tensor_codec.hpp says which tensors can travel).
  REMORA_DECL std::uint32_t add_tensor(const torch::Tensor& t);

 private:
  FrameHead& out_;
  std::vector<std::byte>& descriptors_;
  FrameTensors& tensors_;
  const EncodeDevices& devices_;
};

class BodyReader : public cereal::InputArchive<BodyReader, cereal::AllowEmptyClassElision> {
 public:
  REMORA_DECL BodyReader(std::span<const std::byte> body, std::span<const ReceivedTensor> tensors,
                         const Limits& limits);
  REMORA_DECL ~BodyReader();

  void loadBinary(void* data, std::size_t size) {
    if (size > remaining()) fail("body ends inside a value (" + std::to_string(size) + " bytes wanted, " +
                                 std::to_string(remaining()) + " left)");
    if (size == 0) return;  // empty containers pass a null pointer
    std::memcpy(data, body_.data() + pos_, size);
    pos_ += size;
  }

  std::size_t remaining() const { return body_.size() - pos_; }
  bool at_end() const { return pos_ == body_.size(); }

  // A container announced `n` elements: each takes at least one byte, so n cannot exceed what
  // is left. (Containers of empty types are therefore limited to the body's size.)
  void check_count(std::uint64_t n) {
    if (n > remaining())
      fail("container announces " + std::to_string(n) + " elements but only " + std::to_string(remaining()) +
           " bytes remain");
  }

  const ReceivedTensor& tensor(std::uint32_t index) const {
    if (index >= tensors_.size())
      fail("tensor index " + std::to_string(index) + " out of range (frame has " + std::to_string(tensors_.size()) +
           ")");
    return tensors_[index];
  }

  // Nesting guard for recursive dynamic values; pair every enter() with leave().
  void enter() {
    if (++depth_ > limits_.max_depth) fail("values nested deeper than " + std::to_string(limits_.max_depth));
  }
  void leave() { --depth_; }

  [[noreturn]] static REMORA_DECL void fail(const std::string& why);

 private:
  std::span<const std::byte> body_;
  std::size_t pos_ = 0;
  std::span<const ReceivedTensor> tensors_;
  const Limits& limits_;
  std::uint32_t depth_ = 0;
};

// --- cereal hooks: arithmetic, bool, sizes, binary blocks, names (ignored as in binary) ---

template <class T>
  requires(std::is_arithmetic_v<T> && !std::is_same_v<T, bool>)
void CEREAL_SAVE_FUNCTION_NAME(BodyWriter& ar, const T& t) {
  ar.saveBinary(&t, sizeof t);
}
template <class T>
  requires(std::is_arithmetic_v<T> && !std::is_same_v<T, bool>)
void CEREAL_LOAD_FUNCTION_NAME(BodyReader& ar, T& t) {
  ar.loadBinary(&t, sizeof t);
}
template <class T>
  requires std::is_same_v<T, bool>
void CEREAL_SAVE_FUNCTION_NAME(BodyWriter& ar, const T& b) {
  std::uint8_t v = b ? 1 : 0;
  ar.saveBinary(&v, 1);
}
template <class T>
  requires std::is_same_v<T, bool>
void CEREAL_LOAD_FUNCTION_NAME(BodyReader& ar, T& b) {
  std::uint8_t v;
  ar.loadBinary(&v, 1);
  if (v > 1) BodyReader::fail("invalid bool byte " + std::to_string(v));
  b = v == 1;
}

template <class T>
void CEREAL_SAVE_FUNCTION_NAME(BodyWriter& ar, const cereal::SizeTag<T>& t) {
  ar(t.size);
}
template <class T>
void CEREAL_LOAD_FUNCTION_NAME(BodyReader& ar, cereal::SizeTag<T>& t) {
  ar(t.size);
  ar.check_count(static_cast<std::uint64_t>(t.size));
}

template <class T>
void CEREAL_SAVE_FUNCTION_NAME(BodyWriter& ar, const cereal::BinaryData<T>& bd) {
  ar.saveBinary(bd.data, static_cast<std::size_t>(bd.size));
}
template <class T>
void CEREAL_LOAD_FUNCTION_NAME(BodyReader& ar, cereal::BinaryData<T>& bd) {
  ar.loadBinary(bd.data, static_cast<std::size_t>(bd.size));
}

template <class Archive, class T>
  requires(std::is_same_v<Archive, BodyWriter> || std::is_same_v<Archive, BodyReader>)
void CEREAL_SERIALIZE_FUNCTION_NAME(Archive& ar, cereal::NameValuePair<T>& t) {
  ar(t.value);
}

}  // namespace remora::wire

CEREAL_REGISTER_ARCHIVE(remora::wire::BodyWriter)
CEREAL_REGISTER_ARCHIVE(remora::wire::BodyReader)
CEREAL_SETUP_ARCHIVE_TRAITS(remora::wire::BodyReader, remora::wire::BodyWriter)
