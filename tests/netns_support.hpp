#pragma once
// "Hosts" made of Linux network namespaces, for tests of several hosts on one machine: each
// host a namespace with one interface (eth0, 10.77.0.<i+1>/24) plugged by a veth pair into a
// bridge that lives in a namespace of its own (the switch), so nothing touches the machine's own
// network and two tests never see each other's addresses. Needs root (CAP_NET_ADMIN and
// CAP_SYS_ADMIN) and iproute2; `available()` says whether they were there.
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace remora::test {

class NetnsHosts {
 public:
  explicit NetnsHosts(int hosts) : prefix_("remora" + std::to_string(::getpid()) + "-") {
    if (::geteuid() != 0) {
      why_ = "needs root to make network namespaces";
      return;
    }
    remove_orphans();
    if (!run("ip netns add " + sw())) {
      why_ = "`ip netns add` failed (no iproute2, or no CAP_SYS_ADMIN/CAP_NET_ADMIN here)";
      return;
    }
    made_.push_back(sw());
    ok_ = run("ip -n " + sw() + " link add br0 type bridge") && run("ip -n " + sw() + " link set br0 up");
    for (int i = 0; ok_ && i < hosts; ++i) {
      const std::string h = host(i), port = "p" + std::to_string(i);
      ok_ = run("ip netns add " + h);
      if (ok_) made_.push_back(h);
      ok_ = ok_ && run("ip -n " + h + " link add eth0 type veth peer name " + port + " netns " + sw()) &&
            run("ip -n " + sw() + " link set " + port + " master br0") &&
            run("ip -n " + sw() + " link set " + port + " up") &&
            run("ip -n " + h + " addr add " + address(i) + "/24 dev eth0") &&
            run("ip -n " + h + " link set eth0 up") && run("ip -n " + h + " link set lo up");
    }
    if (!ok_) why_ = "setting up veth pairs and a bridge failed";
  }
  ~NetnsHosts() {
    for (const auto& ns : made_) run("ip netns del " + ns);
  }
  NetnsHosts(const NetnsHosts&) = delete;
  NetnsHosts& operator=(const NetnsHosts&) = delete;

  bool available() const { return ok_; }
  const std::string& why_not() const { return why_; }

  std::string host(int i) const { return prefix_ + "h" + std::to_string(i); }
  static std::string address(int i) { return "10.77.0." + std::to_string(i + 1); }
  // The command prefix that runs a program on host `i`.
  std::vector<std::string> on(int i) const { return {"/usr/sbin/ip", "netns", "exec", host(i)}; }
  // Pulls host `i`'s cable out of the switch (nothing is said to either side), or plugs it back.
  std::string cut_command(int i) const { return "ip -n " + sw() + " link set p" + std::to_string(i) + " down"; }

 private:
  std::string sw() const { return prefix_ + "sw"; }
  // Namespaces a test process that died (a crash, a kill) left behind: "remora<pid>-..." whose
  // pid no longer runs.
  static void remove_orphans() {
    std::FILE* list = ::popen("ip netns list 2>/dev/null", "r");
    if (!list) return;
    char line[256];
    std::vector<std::string> orphans;
    while (std::fgets(line, sizeof line, list)) {
      const std::string name(line, std::strcspn(line, " \n"));
      if (name.rfind("remora", 0) != 0) continue;
      const auto dash = name.find('-');
      if (dash == std::string::npos) continue;
      const std::string pid = name.substr(6, dash - 6);
      if (pid.empty() || pid.find_first_not_of("0123456789") != std::string::npos) continue;
      if (::kill(std::stoi(pid), 0) != 0 && errno == ESRCH) orphans.push_back(name);
    }
    ::pclose(list);
    for (const auto& ns : orphans) run("ip netns del " + ns);
  }
  static bool run(const std::string& command) { return std::system((command + " >/dev/null 2>&1").c_str()) == 0; }

  std::string prefix_, why_;
  bool ok_ = false;
  std::vector<std::string> made_;
};

}  // namespace remora::test
