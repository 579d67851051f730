#pragma once
// One non-blocking gather write on a socket, as the writers on sending threads make it.
#include <sys/socket.h>
#include <sys/uio.h>

#include <cerrno>
#include <cstddef>

namespace remora::transport::detail {

// At most this many pieces per write (the kernel's IOV_MAX is 1024).
inline constexpr std::size_t kMaxIov = 256;

// Bytes written (possibly fewer than asked), 0 when the socket would block, or -1 with errno set
// when it failed. Never raises SIGPIPE.
inline ssize_t gather_send(int socket, iovec* iov, std::size_t count) {
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = count;
  ssize_t n;
  do n = ::sendmsg(socket, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
  return n;
}

}  // namespace remora::transport::detail
