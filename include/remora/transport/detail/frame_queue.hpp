#pragma once
// The frames a connection has yet to write, oldest first.
//
// A std::deque of OutFrames (a few hundred bytes each) allocates a block for every few frames it
// takes and frees it once they are written: under a burst of pipelined calls, a heap that grows and
// is given back to the kernel (then faulted in again) with every burst. This queue keeps its blocks for reuse, so a connection's queue allocates nothing once it has
// held its largest burst. As in a deque, a frame stays where it is until taken: a write in flight
// points into the frames it writes while other threads queue more.
#include <array>
#include <cstddef>
#include <deque>
#include <iterator>
#include <memory>
#include <utility>
#include <vector>

#include "remora/wire/frame.hpp"

namespace remora::transport::detail {

class FrameQueue {
  static constexpr std::size_t kBlock = 32;
  using Block = std::array<wire::OutFrame, kBlock>;

 public:
  class iterator {
   public:
    using iterator_category = std::forward_iterator_tag;
    using value_type = wire::OutFrame;
    using difference_type = std::ptrdiff_t;
    using pointer = wire::OutFrame*;
    using reference = wire::OutFrame&;
    iterator() = default;
    iterator(FrameQueue* q, std::size_t i) : q_(q), i_(i) {}
    reference operator*() const { return q_->at(i_); }
    pointer operator->() const { return &q_->at(i_); }
    iterator& operator++() {
      ++i_;
      return *this;
    }
    iterator operator++(int) { return {q_, i_++}; }
    friend bool operator==(const iterator&, const iterator&) = default;

   private:
    FrameQueue* q_ = nullptr;
    std::size_t i_ = 0;
  };

  bool empty() const { return size_ == 0; }
  std::size_t size() const { return size_; }
  iterator begin() { return {this, 0}; }
  iterator end() { return {this, size_}; }
  wire::OutFrame& front() { return at(0); }

  void push_back(wire::OutFrame&& frame) {
    if (head_ + size_ == blocks_.size() * kBlock) {
      if (spare_.empty()) {
        blocks_.push_back(std::make_unique<Block>());
      } else {
        blocks_.push_back(std::move(spare_.back()));
        spare_.pop_back();
      }
    }
    at(size_) = std::move(frame);
    ++size_;
  }

  // Moves the oldest frame out: the caller destroys it where it chooses (a tensor's deleter may
  // send).
  wire::OutFrame take_front() {
    wire::OutFrame frame = std::move(at(0));
    --size_;
    if (++head_ == kBlock || size_ == 0) retire_front_block();
    return frame;
  }

  void clear() {
    while (size_ > 0) take_front();
  }
  void swap(FrameQueue& other) noexcept {
    blocks_.swap(other.blocks_);
    spare_.swap(other.spare_);
    std::swap(head_, other.head_);
    std::swap(size_, other.size_);
  }

 private:
  wire::OutFrame& at(std::size_t i) {
    const std::size_t k = head_ + i;
    return (*blocks_[k / kBlock])[k % kBlock];
  }
  void retire_front_block() {
    if (size_ == 0) {  // drained: every block is free, the next frame starts a block
      for (auto& b : blocks_) spare_.push_back(std::move(b));
      blocks_.clear();
    } else {
      spare_.push_back(std::move(blocks_.front()));
      blocks_.pop_front();
    }
    head_ = 0;
  }

  std::deque<std::unique_ptr<Block>> blocks_;  // in use, oldest first; head_ indexes the first
  std::vector<std::unique_ptr<Block>> spare_;  // emptied blocks, kept for reuse
  std::size_t head_ = 0, size_ = 0;
};

}  // namespace remora::transport::detail
