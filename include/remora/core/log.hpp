#pragma once
// Warnings remora prints on its own (closed connections, rejected frames): one line each through
// c10's LOG(WARNING), so they follow the program's libtorch log settings (GLOG_minloglevel with a
// glog build such as Debian's; TORCH_CPP_LOG_LEVEL once c10::initLogging() has run, as torch's
// Python module does). REMORA_LOG=quiet silences them whatever those say.
//
// Warnings a peer can cause (a connection closed or refused, a frame rejected) go through
// log_peer_warning, which is rate-limited: a flood of hostile connections must not become a flood
// of stderr lines. A burst of WarningLimiter::kBurst lines passes, then one line per
// WarningLimiter::kRefill; the next line printed says how many were suppressed meanwhile.
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <string>

#include <c10/util/Logging.h>

namespace remora::detail {

inline void log_warning(const std::string& line) {
  static const bool quiet = [] {
    const char* v = std::getenv("REMORA_LOG");
    return v && std::strcmp(v, "quiet") == 0;
  }();
  if (!quiet) LOG(WARNING) << "remora: " << line;
}

// A token bucket over lines. Thread-safe; cost: one uncontended mutex per warning.
class WarningLimiter {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr double kBurst = 20;
  static constexpr std::chrono::milliseconds kRefill{1000};

  // Whether a line at `now` may be printed; if so, `suppressed` is how many were refused since
  // the last one printed.
  bool admit(Clock::time_point now, std::uint64_t& suppressed) {
    std::lock_guard lock(mu_);
    if (!started_) {
      started_ = true;
      last_ = now;
    }
    tokens_ += std::chrono::duration<double>(now - last_) / std::chrono::duration<double>(kRefill);
    if (tokens_ > kBurst) tokens_ = kBurst;
    last_ = now;
    if (tokens_ < 1) {
      ++suppressed_;
      return false;
    }
    tokens_ -= 1;
    suppressed = suppressed_;
    suppressed_ = 0;
    return true;
  }

 private:
  std::mutex mu_;
  bool started_ = false;
  double tokens_ = kBurst;
  Clock::time_point last_{};
  std::uint64_t suppressed_ = 0;
};

inline void log_peer_warning(const std::string& line) {
  static WarningLimiter limiter;
  std::uint64_t suppressed = 0;
  if (!limiter.admit(WarningLimiter::Clock::now(), suppressed)) return;
  if (suppressed == 0) return log_warning(line);
  log_warning(line + " (" + std::to_string(suppressed) + " more warnings about peers were suppressed)");
}

// What a thread's last-resort catch says of the exception in flight: a handler of remora's own
// threads (I/O, the CUDA copy watch, a fault plan's timer) threw, and the thread goes on.
inline void log_current_exception(const char* where) noexcept {
  try {
    try {
      throw;
    } catch (const std::exception& e) {
      log_warning(std::string(where) + " threw " + e.what() + "; dropped, the thread goes on");
    } catch (...) {
      log_warning(std::string(where) + " threw a non-standard exception; dropped, the thread goes on");
    }
  } catch (...) {  // logging itself failed (no memory): nothing more to do
  }
}

}  // namespace remora::detail
