// The ceiling of a dump's page copy on one target: the kernel's
// process_vm_readv alone, reading [ADDR, ADDR+MIB) of PID in 4 MiB pieces
// into one reused 4 MiB buffer (ck-memread's pattern, without checksum,
// zero check, scan or output).  How fast this goes depends on the target's
// memory as much as on the machine: pages populated in a scattered order
// read at about half the speed of pages populated in address order, and
// memcpy_bw only ever sees the latter.  Stop the target first (SIGSTOP) for
// a steady figure.  Prints the best of 3 passes in GB/s (10^9 bytes/s).
//   pvr_bw PID ADDR MIB      (ADDR in hex, 0x optional)
#include <sys/uio.h>
#include <time.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

static double now() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: pvr_bw PID ADDR MIB\n");
    return 2;
  }
  pid_t pid = static_cast<pid_t>(std::strtol(argv[1], nullptr, 10));
  unsigned long addr = std::strtoul(argv[2], nullptr, 16);
  size_t len = std::strtoul(argv[3], nullptr, 0) << 20, chunk = 4u << 20;
  auto* buf = static_cast<char*>(std::aligned_alloc(4096, chunk));
  if (!buf) return 1;
  std::memset(buf, 0, chunk);
  double best = 0;
  for (int pass = 0; pass < 3; ++pass) {
    double t0 = now();
    for (size_t off = 0; off < len; off += chunk) {
      size_t n = len - off < chunk ? len - off : chunk;
      struct iovec local = {buf, n}, remote = {reinterpret_cast<void*>(addr + off), n};
      if (process_vm_readv(pid, &local, 1, &remote, 1, 0) != static_cast<ssize_t>(n)) {
        std::fprintf(stderr, "pvr_bw: process_vm_readv of pid %d at %#lx: %s\n", pid, addr + off,
                     std::strerror(errno));
        return 1;
      }
    }
    double gbs = len / (now() - t0) / 1e9;
    if (gbs > best) best = gbs;
  }
  std::printf("%.2f\n", best);
  return 0;
}
