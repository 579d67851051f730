// A serve-only binary: it never calls these functions, so nothing registers them but the two
// lines below. Usage: expose_server PORT (the port of the TCPStore the caller hosts).
#include <cstdio>
#include <string>

#include <remora/remora.hpp>

#include "expose_fns.hpp"

REMORA_EXPOSE(&expose_fns::add, &expose_fns::greet);
REMORA_EXPOSE_REMOTE(&expose_fns::make_table);

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s STORE_PORT\n", argv[0]);
    return 2;
  }
  remora::Options o;
  o.init_method = std::string("tcp://127.0.0.1:") + argv[1];
  o.init_timeout = o.shutdown_timeout = std::chrono::seconds(30);
  remora::Agent agent("server", 1, 2, o);
  agent.shutdown();  // serves until the group shuts down
  return 0;
}
