#pragma once
// Who is at the other end of a unix socket: the same-host transport admits only processes of this
// process's user, or root (SO_PEERCRED: the kernel's word, taken when the socket connected). Both
// sides check: an acceptor does not serve another user's process, and a dialer does not talk to
// another user's process squatting a worker's abstract socket name. Cost: one getsockopt per
// connection.
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <string>

namespace remora::transport::detail {

// Why the peer of the connected unix socket `fd` is not admitted; nullopt when it is.
inline std::optional<std::string> untrusted_local_peer(int fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
    return std::string("cannot read the peer's credentials: ") + std::strerror(errno);
  const uid_t self = ::geteuid();
  if (cred.uid == self || cred.uid == 0) return std::nullopt;
  return "the peer (pid " + std::to_string(cred.pid) + ") runs as uid " + std::to_string(cred.uid) +
         ", not as this process's uid " + std::to_string(self) + " or root";
}

}  // namespace remora::transport::detail
