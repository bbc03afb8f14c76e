// Checksum speed on cache-hot data, for tests/bench/dump.sh: Ck64::update
// over one 256 KiB buffer of random bytes (it stays in L2), again and again
// for 2 GiB, in 64 KiB pieces as a dump feeds it; best of 5 passes of CPU
// time of this thread (so other load on the machine does not count), in
// GB/s (10^9 bytes per second).
//   ck64_bw [KiB]   (buffer size, default 256)
#include <time.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "ck64.h"

static double cpu_now() {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char** argv) {
  size_t len = (argc > 1 ? std::strtoul(argv[1], nullptr, 0) : 256) << 10;
  if (len < (64 << 10)) len = 64 << 10;
  std::vector<unsigned char> buf(len);
  uint64_t x = 88172645463325252ull;
  for (auto& c : buf) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    c = static_cast<unsigned char>(x);
  }
  const size_t piece = 64 << 10, total = size_t{2} << 30;
  double best = 0;
  uint64_t sink = 0;
  for (int pass = 0; pass < 5; ++pass) {
    ck::Ck64 c;
    double t0 = cpu_now();
    for (size_t done = 0; done < total;)
      for (size_t off = 0; off < len && done < total; off += piece, done += piece) c.update(buf.data() + off, piece);
    sink += c.digest();
    double gbs = total / (cpu_now() - t0) / 1e9;
    if (gbs > best) best = gbs;
  }
  std::printf("%.2f\n", best);
  return sink == 42 ? 1 : 0;
}
