#pragma once
// When a thread should watch for work instead of sleeping at once: while its recent watches
// mostly found what they watched for (a moving average over about 16 watches). Otherwise only
// every 16th watch is tried, to notice that work came back. Not thread-safe: one per thread, or
// used under the owner's lock.

namespace remora::detail {

class WatchRate {
 public:
  explicit WatchRate(double threshold) : threshold_(threshold) {}

  // Whether to watch now.
  bool should_try() {
    if (rate_ < threshold_ && ++since_try_ < 16) return false;
    since_try_ = 0;
    return true;
  }
  // What the watch just tried found.
  void record(bool found) { rate_ += ((found ? 1.0 : 0.0) - rate_) / 16; }

 private:
  const double threshold_;
  double rate_ = 1.0;
  int since_try_ = 0;
};

}  // namespace remora::detail
