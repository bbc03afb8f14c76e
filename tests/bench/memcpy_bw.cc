// The memcpy baseline of tests/bench/dump.sh: the same access pattern as a
// dump, in one process.  A 1 GiB source (populated with non-zero data, so
// every page is real) is copied in 4 MiB pieces into one reused 4 MiB
// destination, as ck-memread copies a target's memory into its one reused
// buffer; the source streams from DRAM, the destination stays in cache.
// Prints the best of 3 passes in GB/s (10^9 bytes per second).
// With "full", the destination is a second buffer as large as the source
// (DRAM to DRAM, both pre-faulted): the lower, easier baseline.
// With "fresh", the destination is mapped anew for each pass and never
// touched before: every page is allocated by the copy, as it must be when a
// restore recreates memory (on a VM, first-touch costs dominate this one).
// With "tmpfs DIR", not a memcpy: write(2) of the source in 4 MiB pieces
// into a new file in DIR (removed after each pass): what storing the pages
// on that filesystem costs at least, whatever produced them.
//   memcpy_bw [MiB [full|fresh|tmpfs DIR]]   (default 1024)
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <time.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

static double now() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char** argv) {
  size_t mib = argc > 1 ? std::strtoul(argv[1], nullptr, 0) : 1024;
  size_t len = mib << 20, chunk = 4u << 20;
  bool full = argc > 2 && std::strcmp(argv[2], "full") == 0;
  bool fresh = argc > 2 && std::strcmp(argv[2], "fresh") == 0;
  const char* tmpfs = argc > 3 && std::strcmp(argv[2], "tmpfs") == 0 ? argv[3] : nullptr;
  auto* src = static_cast<unsigned char*>(mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  auto* dst = static_cast<unsigned char*>(std::aligned_alloc(4096, full ? len : chunk));
  if (dst) std::memset(dst, 1, full ? len : chunk);
  if (src == MAP_FAILED || !dst) {
    std::perror("memcpy_bw: allocation");
    return 1;
  }
  uint64_t x = 88172645463325252ull;
  for (size_t i = 0; i < len; i += 8) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    std::memcpy(src + i, &x, 8);
  }
  double best = 0;
  unsigned sink = 0;
  for (int pass = 0; pass < 3; ++pass) {
    unsigned char* fdst = nullptr;
    if (fresh) {
      fdst = static_cast<unsigned char*>(mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
      if (fdst == MAP_FAILED) return 1;
    }
    if (tmpfs) {
      char path[4096];
      std::snprintf(path, sizeof path, "%s/memcpy_bw.%d", tmpfs, static_cast<int>(getpid()));
      int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      if (fd < 0) {
        std::perror(path);
        return 1;
      }
      double t0 = now();
      for (size_t off = 0; off < len; off += chunk)
        if (write(fd, src + off, chunk) != static_cast<ssize_t>(chunk)) {
          std::perror("memcpy_bw: write");
          unlink(path);
          return 1;
        }
      double gbs = len / (now() - t0) / 1e9;
      close(fd);
      unlink(path);
      if (gbs > best) best = gbs;
      continue;
    }
    double t0 = now();
    for (size_t off = 0; off < len; off += chunk) {
      unsigned char* to = fresh ? fdst + off : full ? dst + off : dst;
      std::memcpy(to, src + off, chunk);
      sink += to[off / chunk % chunk];
    }
    double gbs = len / (now() - t0) / 1e9;
    if (fdst) munmap(fdst, len);
    if (gbs > best) best = gbs;
  }
  std::printf("%.2f\n", best);
  return sink == 0xffffffffu ? 1 : 0;  // keeps the copies from being optimized away
}
