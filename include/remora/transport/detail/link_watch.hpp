#pragma once
// How a TCP link notices that its peer's host is gone (cable pulled, host down, network cut):
// nothing arrives, and without these options the kernel waits hours (keepalive's default) or
// for ever (an idle link) before it says so. With them, a link whose peer acknowledges nothing
// for `timeout` (neither data nor keepalive probes) fails with ETIMEDOUT, and the agent reports
// the peer lost. A peer that is busy or slow still acknowledges: its kernel does.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>

#include <algorithm>
#include <chrono>
#include <sstream>
#include <string>
#include <system_error>

namespace remora::transport::detail {

// Sets keepalive (first probe after about a third of `timeout`, then one a second) and
// TCP_USER_TIMEOUT (unacknowledged data, including a connect's SYNs, for at most `timeout`) on
// `fd`. `timeout` of zero: leaves the kernel's defaults. Best effort: a socket that refuses an
// option keeps its default.
inline void watch_link(int fd, std::chrono::milliseconds timeout) {
  if (timeout.count() <= 0 || fd < 0) return;
  const int on = 1;
  const int idle = static_cast<int>(std::max<long long>(1, timeout.count() / 3000));
  const int interval = 1;
  const int probes = static_cast<int>(std::max<long long>(1, (timeout.count() / 1000 - idle) / interval));
  const unsigned user_timeout = static_cast<unsigned>(timeout.count());
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof probes);
  ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof user_timeout);
}

// Why connecting to `endpoint` failed, saying whose address it is: the one that peer published
// (Options::advertise_host, remora-worker --advertise-host), which this host cannot reach.
template <class Endpoint>
std::string connect_failure(const Endpoint& endpoint, std::error_code ec) {
  std::ostringstream out;
  out << "cannot connect to " << endpoint << ", the address it advertised: " << ec.message();
  const int e = ec.value();  // an errno: Asio reports socket errors in the system category
  if (e == ETIMEDOUT || e == EHOSTUNREACH || e == ENETUNREACH)
    out << " (is its advertise_host an address other hosts can reach?)";
  return out.str();
}

}  // namespace remora::transport::detail
