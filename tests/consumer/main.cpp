// Two processes of this program (rank 0 starts rank 1): typed calls, an operator by name, a
// module and distributed autograd, from three translation units.
#include <spawn.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>

#include <remora/mesh.hpp>
#include <remora/remora.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "consumer.hpp"

extern char** environ;

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "--help") return 0;
  pid_t child = 0;
  c10::intrusive_ptr<c10d::TCPStore> store;
  if (!std::getenv("RANK")) {  // rank 0: host the store, start rank 1
    c10d::TCPStoreOptions so;
    so.port = 0;
    so.isServer = true;
    so.waitWorkers = false;
    store = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", so);
    setenv("MASTER_ADDR", "127.0.0.1", 1);
    setenv("MASTER_PORT", std::to_string(store->getPort()).c_str(), 1);
    setenv("TORCHELASTIC_USE_AGENT_STORE", "True", 1);
    setenv("WORLD_SIZE", "2", 1);
    setenv("RANK", "1", 1);
    const std::string self = std::filesystem::read_symlink("/proc/self/exe");
    char* args[] = {const_cast<char*>(self.c_str()), nullptr};
    if (posix_spawn(&child, self.c_str(), nullptr, nullptr, args, environ) != 0) return 3;
    setenv("RANK", "0", 1);
  }
  const int rank = std::atoi(std::getenv("RANK"));
  remora::Options o;
  o.serve_operators = {"aten::mul"};
  remora::init_rpc(rank == 0 ? "trainer" : "ps", o);
  int failed = 0;
  if (rank == 0) {
    failed |= calls_on("ps");
    failed |= train_on("ps/cpu") << 4;
    std::cout << "consumer: " << (failed ? "FAILED " + std::to_string(failed) : std::string("calls, module and autograd ok"))
              << "\n";
  }
  remora::shutdown();
  if (child) {
    int status = 0;
    waitpid(child, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) failed |= 64;
  }
  return failed;
}
