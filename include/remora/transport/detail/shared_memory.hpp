#pragma once
// Shared memory between two processes of one host, for the local transport's large tensors.
//
// Each side of a local connection owns one arena (a sealed memfd, sparse until touched) that it
// writes into and the peer maps. To send a large tensor the sender copies it into a free range
// of its arena and sends the range's offset; the receiver's tensor is a view of that range, and
// when the receiver's last reference to it is gone the receiver tells the sender, which frees
// the range. One copy per direction, none through the socket. Ranges are taken lowest offset
// first, so a steady flow of tensors reuses pages that are already mapped.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <utility>

#include "remora/core/errors.hpp"

namespace remora::transport::detail {

inline constexpr std::size_t kSharedAlignment = 4096;
// The wire placement (wire/format.hpp) of a tensor in the sender's arena: the stream holds its
// offset there, 8 bytes.
inline constexpr std::uint8_t kSharedPlacement = 1;
inline constexpr std::size_t kSharedRecordBytes = 8;

// A file descriptor that closes itself.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  ~Fd() { reset(); }
  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

// A MAP_SHARED mapping of a whole memfd; unmapped when the last user lets go.
class Mapping {
 public:
  Mapping(int fd, std::size_t bytes) : bytes_(bytes) {
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) throw std::system_error(errno, std::generic_category(), "remora: mmap of shared memory");
    base_ = static_cast<std::byte*>(p);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() { ::munmap(base_, bytes_); }
  std::byte* base() const { return base_; }
  std::size_t size() const { return bytes_; }

 private:
  std::byte* base_ = nullptr;
  std::size_t bytes_ = 0;
};

// The sender's arena: a sealed memfd of fixed size and a first-fit allocator over it.
class SendArena {
 public:
  // Null when the kernel refuses (no memfd, no memory): the connection then sends inline.
  static std::unique_ptr<SendArena> create(std::size_t bytes) {
    if (bytes < kSharedAlignment) return nullptr;
    bytes = bytes / kSharedAlignment * kSharedAlignment;
    Fd fd(::memfd_create("remora-arena", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (!fd || ::ftruncate(fd.get(), static_cast<off_t>(bytes)) != 0) return nullptr;
    // Sealed so that neither side can shrink it under the other's mapping (that would be SIGBUS).
    if (::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) return nullptr;
    try {
      auto map = std::make_shared<Mapping>(fd.get(), bytes);
      return std::unique_ptr<SendArena>(new SendArena(std::move(fd), std::move(map)));
    } catch (const std::system_error&) {
      return nullptr;
    }
  }

  int fd() const { return fd_.get(); }
  std::size_t size() const { return map_->size(); }

  // A free range of at least `bytes`, or nullopt when the arena is full (the caller then sends
  // the bytes inline).
  std::optional<std::uint64_t> allocate(std::size_t bytes) {
    const std::size_t want = (bytes + kSharedAlignment - 1) / kSharedAlignment * kSharedAlignment;
    std::lock_guard lock(mu_);
    for (auto it = free_.begin(); it != free_.end(); ++it) {
      if (it->second < want) continue;
      const std::uint64_t offset = it->first;
      const std::size_t rest = it->second - want;
      free_.erase(it);
      if (rest) free_.emplace(offset + want, rest);
      used_.emplace(offset, want);
      in_use_ += want;
      return offset;
    }
    return std::nullopt;
  }

  std::byte* at(std::uint64_t offset) const { return map_->base() + offset; }

  // The receiver is done with the range at `offset`; false if no such range is in use.
  bool release(std::uint64_t offset) {
    std::lock_guard lock(mu_);
    auto it = used_.find(offset);
    if (it == used_.end()) return false;
    std::uint64_t start = offset;
    std::size_t len = it->second;
    in_use_ -= len;
    used_.erase(it);
    // Merge with the free neighbours on both sides.
    auto next = free_.lower_bound(start);
    if (next != free_.end() && start + len == next->first) {
      len += next->second;
      next = free_.erase(next);
    }
    if (next != free_.begin()) {
      auto prev = std::prev(next);
      if (prev->first + prev->second == start) {
        start = prev->first;
        len += prev->second;
        free_.erase(prev);
      }
    }
    free_.emplace(start, len);
    return true;
  }

  // Bytes the receiver still holds.
  std::size_t in_use() const {
    std::lock_guard lock(mu_);
    return in_use_;
  }

 private:
  SendArena(Fd fd, std::shared_ptr<Mapping> map) : fd_(std::move(fd)), map_(std::move(map)) {
    free_.emplace(0, map_->size());
  }

  Fd fd_;
  std::shared_ptr<Mapping> map_;
  mutable std::mutex mu_;
  std::map<std::uint64_t, std::size_t> free_;  // offset -> length
  std::map<std::uint64_t, std::size_t> used_;
  std::size_t in_use_ = 0;
};

// The peer's arena, mapped here after checking that it is a sealed memfd of the announced size.
inline std::shared_ptr<Mapping> map_peer_arena(Fd fd, std::uint64_t announced) {
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || static_cast<std::uint64_t>(st.st_size) != announced || announced == 0 ||
      announced % kSharedAlignment != 0)
    throw ProtocolError("the peer's shared memory does not have the announced size");
  const int seals = ::fcntl(fd.get(), F_GET_SEALS);
  if (seals < 0 || !(seals & F_SEAL_SHRINK))
    throw ProtocolError("the peer's shared memory is not sealed against shrinking");
  try {
    return std::make_shared<Mapping>(fd.get(), announced);
  } catch (const std::system_error& e) {
    throw ProtocolError(std::string("cannot map the peer's shared memory: ") + e.what());
  }
}

// The first bytes each side of a local connection sends: the size of its arena (0: none), with
// the arena's descriptor attached when there is one.
struct LocalPreface {
  std::uint32_t magic = 0x4c4d5252;  // "RRML"
  std::uint32_t version = 1;
  std::uint64_t arena_bytes = 0;
};
static_assert(sizeof(LocalPreface) == 16);

// Sends the preface (and `fd` if >= 0) on a fresh, non-blocking socket. False if it did not go
// out whole at once, which on a fresh connection means the peer is gone.
inline bool send_preface(int socket, const LocalPreface& preface, int fd) {
  iovec iov{const_cast<LocalPreface*>(&preface), sizeof preface};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (fd >= 0) {
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  }
  ssize_t n;
  do n = ::sendmsg(socket, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  return n == static_cast<ssize_t>(sizeof preface);
}

// Receives up to `want` more preface bytes into `into`, keeping a passed descriptor in `fd`.
// Returns bytes read, 0 at end of stream, -1 with errno set (EAGAIN: nothing yet).
inline ssize_t receive_preface(int socket, std::byte* into, std::size_t want, Fd& fd) {
  iovec iov{into, want};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do n = ::recvmsg(socket, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n <= 0) return n;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int received;
      std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof received);
      if (!fd) fd = Fd(received);
      else ::close(received);  // more than one descriptor: keep the first, close the rest
    }
  }
  return n;
}

}  // namespace remora::transport::detail
