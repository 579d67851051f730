// Codec cost for a 64 MiB float tensor against the host's memcpy, in one process.
//
// A transport moves the bytes once whatever the codec does, so the baseline is one memcpy of the
// tensor's bytes. The codec round trip is: encode (metadata only; the tensor's memory is the
// segment), then a FrameReader reading the head and copying the segment straight into the
// freshly allocated destination tensor, then decode. Both variants with a fresh destination pay
// the same page faults; the "warm" memcpy shows the ceiling with a reused destination.
#include <cstring>
#include <vector>

#include <benchmark/benchmark.h>

#include "remora/wire/frame_reader.hpp"
#include "remora/wire/value_codec.hpp"

namespace {
constexpr int64_t kBytes = 64 << 20;

void BM_memcpy_warm(benchmark::State& state) {
  std::vector<std::byte> src(kBytes, std::byte{1}), dst(kBytes);
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), kBytes);
    benchmark::DoNotOptimize(dst.data());
  }
  state.SetBytesProcessed(state.iterations() * kBytes);
}

void BM_memcpy_fresh(benchmark::State& state) {
  auto src = torch::ones({kBytes / 4});
  for (auto _ : state) {
    auto dst = torch::empty({kBytes / 4});
    std::memcpy(dst.data_ptr(), src.data_ptr(), kBytes);
    benchmark::DoNotOptimize(dst.data_ptr());
  }
  state.SetBytesProcessed(state.iterations() * kBytes);
}

void BM_codec_roundtrip(benchmark::State& state) {
  auto src = torch::ones({kBytes / 4});
  for (auto _ : state) {
    auto frame = remora::wire::encode_frame(remora::wire::FrameKind::call, 1, src);
    remora::wire::FrameReader reader;
    for (auto segment : frame.segments()) {
      std::size_t used = 0;
      while (used < segment.size()) {  // as a transport would: straight into next_buffer()
        auto dst = reader.next_buffer();
        std::size_t n = std::min(dst.size(), segment.size() - used);
        std::memcpy(dst.data(), segment.data() + used, n);
        reader.commit(n);
        used += n;
      }
    }
    auto [t] = remora::wire::decode<torch::Tensor>(reader.take());
    benchmark::DoNotOptimize(t.data_ptr());
  }
  state.SetBytesProcessed(state.iterations() * kBytes);
}
}  // namespace

BENCHMARK(BM_memcpy_warm)->Unit(benchmark::kMillisecond)->MinTime(1.0);
BENCHMARK(BM_memcpy_fresh)->Unit(benchmark::kMillisecond)->MinTime(1.0);
BENCHMARK(BM_codec_roundtrip)->Unit(benchmark::kMillisecond)->MinTime(1.0);
BENCHMARK_MAIN();
