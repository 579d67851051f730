#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstring>

#include "roles.hpp"

int main(int argc, char* argv[]) {
  if (argc >= 3 && std::strcmp(argv[1], "--role") == 0) {
    auto it = remora::test::roles().find(argv[2]);
    if (it == remora::test::roles().end()) {
      std::fprintf(stderr, "unknown role %s\n", argv[2]);
      return 2;
    }
    return it->second(std::vector<std::string>(argv + 3, argv + argc));
  }
  return Catch::Session().run(argc, argv);
}
