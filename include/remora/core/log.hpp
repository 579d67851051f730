#pragma once
// Warnings remora prints on its own (closed connections, rejected frames): one line on stderr.
// REMORA_LOG=quiet silences them.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace remora::detail {

inline void log_warning(const std::string& line) {
  static const bool quiet = [] {
    const char* v = std::getenv("REMORA_LOG");
    return v && std::strcmp(v, "quiet") == 0;
  }();
  if (!quiet) std::fprintf(stderr, "remora: %s\n", line.c_str());
}

}  // namespace remora::detail
