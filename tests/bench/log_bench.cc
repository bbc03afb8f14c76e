// The logging engine against its baselines, all measured in one run:
//   disabled level (ns per call), enabled level to a file (ns per call on the
//   logging thread, and with the final flush counted in), fprintf to a file,
//   snprintf + write(2) to a file.  Each baseline writes the same line the
//   engine writes (timestamp, tool[tid], level, module, message).
// Prints "bench: NAME = VALUE UNIT" lines; tests/bench/log.sh runs it.
#include <fcntl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "log.h"

CK_LOG_MODULE("bench");

namespace {

double now() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// The message every variant writes: a page run of a dump.
#define MSG_FMT "page run %ld at %#lx, %zu pages, %s"

__attribute__((noinline)) void disabled_loop(long n) {
  for (long i = 0; i < n; ++i) LOG_TRACE(MSG_FMT, i, 0x7f0000000000UL + i * 4096, static_cast<size_t>(i & 255), "anon");
}

__attribute__((noinline)) void enabled_loop(long n) {
  for (long i = 0; i < n; ++i) LOG_DEBUG(MSG_FMT, i, 0x7f0000000000UL + i * 4096, static_cast<size_t>(i & 255), "anon");
}

struct Prefix {
  unsigned long s, ns;
  int tid;
};
Prefix prefix(int tid) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return {static_cast<unsigned long>(ts.tv_sec), static_cast<unsigned long>(ts.tv_nsec), tid};
}

__attribute__((noinline)) void fprintf_loop(FILE* f, long n, int tid) {
  for (long i = 0; i < n; ++i) {
    Prefix p = prefix(tid);
    std::fprintf(f, "%lu.%09lu log_bench[%d] debug bench: " MSG_FMT "\n", p.s, p.ns, p.tid, i,
                 0x7f0000000000UL + i * 4096, static_cast<size_t>(i & 255), "anon");
  }
}

__attribute__((noinline)) void snprintf_loop(int fd, long n, int tid) {
  char buf[512];
  for (long i = 0; i < n; ++i) {
    Prefix p = prefix(tid);
    int k = std::snprintf(buf, sizeof buf, "%lu.%09lu log_bench[%d] debug bench: " MSG_FMT "\n", p.s, p.ns, p.tid, i,
                          0x7f0000000000UL + i * 4096, static_cast<size_t>(i & 255), "anon");
    if (::write(fd, buf, static_cast<size_t>(k)) != k) std::abort();
  }
}

void report(const char* name, double v, const char* unit) { std::printf("bench: %s = %.2f %s\n", name, v, unit); }

}  // namespace

int main(int argc, char** argv) {
  std::string dir = argc > 1 ? argv[1] : "/tmp";
  long n = argc > 2 ? std::atol(argv[2]) : 1000000;
  int tid = static_cast<int>(::syscall(SYS_gettid));
  ck::log::set_tool("log_bench");
  std::string lf = dir + "/log_bench.engine.log", ff = dir + "/log_bench.fprintf.log",
              sf = dir + "/log_bench.snprintf.log";
  ::unlink(lf.c_str());
  ::unlink(ff.c_str());
  ::unlink(sf.c_str());
  ck::log::set_log_file(lf);

  // Disabled: best of 3 runs of 20n calls.
  ck::log::configure("all:debug", 0);
  double dis = 1e9;
  for (int r = 0; r < 3; ++r) {
    double t0 = now();
    disabled_loop(20 * n);
    dis = std::min(dis, (now() - t0) / (20.0 * n) * 1e9);
  }

  // Enabled, to the log file; the first pass warms up the ring and the flusher.
  enabled_loop(n / 10);
  ck::log::flush();
  double best_hot = 1e9, best_total = 1e9;
  for (int r = 0; r < 3; ++r) {
    double t0 = now();
    enabled_loop(n);
    double t1 = now();
    ck::log::flush();
    double t2 = now();
    best_hot = std::min(best_hot, (t1 - t0) / n * 1e9);
    best_total = std::min(best_total, (t2 - t0) / n * 1e9);
  }

  // Bursts that fit in the thread's ring (a dump logs in bursts: a VMA, its
  // page runs): the cost on the logging thread itself, flush not timed.
  double burst_sum = 0;
  long bursts = n / 4000;
  for (long b = 0; b < bursts; ++b) {
    double t0 = now();
    enabled_loop(4000);
    burst_sum += now() - t0;
    ck::log::flush();
  }
  double burst = burst_sum / (bursts * 4000.0) * 1e9;

  double best_fp = 1e9, best_sw = 1e9;
  for (int r = 0; r < 3; ++r) {
    FILE* f = std::fopen(ff.c_str(), "a");
    if (!f) return 1;
    double t0 = now();
    fprintf_loop(f, n, tid);
    std::fclose(f);
    best_fp = std::min(best_fp, (now() - t0) / n * 1e9);

    int fd = ::open(sf.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0) return 1;
    t0 = now();
    snprintf_loop(fd, n, tid);
    ::close(fd);
    best_sw = std::min(best_sw, (now() - t0) / n * 1e9);
  }

  report("log_disabled_call", dis, "ns");
  report("log_enabled_call_file_burst", burst, "ns");
  report("log_enabled_call_file", best_hot, "ns");
  report("log_enabled_call_file_incl_flush", best_total, "ns");
  report("log_fprintf_file", best_fp, "ns");
  report("log_snprintf_write_file", best_sw, "ns");
  report("log_enabled_speedup_vs_snprintf_write", best_sw / best_hot, "x");
  report("log_enabled_incl_flush_speedup_vs_snprintf_write", best_sw / best_total, "x");
  report("log_enabled_burst_speedup_vs_snprintf_write", best_sw / burst, "x");
  report("log_enabled_speedup_vs_fprintf", best_fp / best_hot, "x");
  report("log_lost_messages", static_cast<double>(ck::log::lost()), "count");
  // The engine's file must hold every enabled message.
  FILE* f = std::fopen(lf.c_str(), "r");
  long lines = 0;
  for (int c; f && (c = std::fgetc(f)) != EOF;) lines += c == '\n';
  if (f) std::fclose(f);
  long want = n / 10 + 3 * n + bursts * 4000;
  if (lines != want) {
    std::fprintf(stderr, "log_bench: expected %ld lines in '%s', found %ld\n", want, lf.c_str(), lines);
    return 1;
  }
  ::unlink(lf.c_str());
  ::unlink(ff.c_str());
  ::unlink(sf.c_str());
  return 0;
}
