#pragma once
// The buffers of one gather write on the strand. Pieces of up to kCoalesce bytes are copied into
// a staging buffer and written as one buffer with their neighbours: Asio writes at most 64
// buffers per system call, so a burst of small frames (two pieces each) would otherwise take a
// system call per 32 frames. The staging buffer never grows past its reserved kStage bytes (the
// buffers point into it); a piece that does not fit is written from where it is.
#include <cstddef>
#include <vector>

#include <asio/buffer.hpp>

namespace remora::transport::detail {

class WriteList {
 public:
  static constexpr std::size_t kCoalesce = 1024, kStage = 64 * 1024;

  // Starts a new write; the buffers of the previous one are no longer in use.
  void clear() {
    buffers_.clear();
    stage_.clear();
    if (stage_.capacity() < kStage) stage_.reserve(kStage);
    staged_tail_ = false;
  }

  void add(const std::byte* data, std::size_t n) {
    if (n > kCoalesce || stage_.size() + n > stage_.capacity()) {
      buffers_.emplace_back(data, n);
      staged_tail_ = false;
      return;
    }
    const std::byte* at = stage_.data() + stage_.size();
    stage_.insert(stage_.end(), data, data + n);
    if (staged_tail_)
      buffers_.back() = asio::const_buffer(buffers_.back().data(), buffers_.back().size() + n);
    else
      buffers_.emplace_back(at, n);
    staged_tail_ = true;
  }

  std::size_t size() const { return buffers_.size(); }
  bool empty() const { return buffers_.empty(); }
  // For asio::async_write; valid until the next clear().
  const std::vector<asio::const_buffer>& buffers() const { return buffers_; }

 private:
  std::vector<asio::const_buffer> buffers_;
  std::vector<std::byte> stage_;
  bool staged_tail_ = false;  // buffers_.back() ends where stage_ does
};

}  // namespace remora::transport::detail
