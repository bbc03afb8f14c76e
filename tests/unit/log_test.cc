// Unit tests of the logging engine (TAP, no arguments), and a helper that
// tests/bats/log.bats runs with arguments:
//   log_test crash abort|segv|bus|fpe|ill N FILE [THREADS]
//       logs N messages (over THREADS threads, all still running) to FILE,
//       then crashes; every message must be in FILE.
//   log_test tool [-v] [-q] [--log-file F]
//       a tool's main (run_tool): one message per level in modules alpha, beta.
//   log_test stage NAME N
//       a pipeline stage: N debug messages, for merging several logs.
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "log.h"
#include "test.h"
#include "tool.h"

CK_LOG_MODULE("logtest");

namespace alpha {
CK_LOG_MODULE("alpha");
void all_levels(int n) {
  LOG_ERROR("alpha error %d", n);
  LOG_WARN("alpha warn %d", n);
  LOG_INFO("alpha info %d", n);
  LOG_DEBUG("alpha debug %d", n);
  LOG_TRACE("alpha trace %d", n);
}
}  // namespace alpha
namespace beta {
CK_LOG_MODULE("beta");
void all_levels(int n) {
  LOG_ERROR("beta error %d", n);
  LOG_WARN("beta warn %d", n);
  LOG_INFO("beta info %d", n);
  LOG_DEBUG("beta debug %d", n);
  LOG_TRACE("beta trace %d", n);
}
}  // namespace beta

namespace {

std::string tmpfile_path(const char* tag) {
  char buf[128];
  std::snprintf(buf, sizeof buf, "/tmp/ck-logtest-%d-%s", static_cast<int>(getpid()), tag);
  ::unlink(buf);
  return buf;
}

std::vector<std::string> read_lines(const std::string& path) {
  std::vector<std::string> out;
  std::ifstream in(path);
  std::string l;
  while (std::getline(in, l)) out.push_back(l);
  return out;
}

// The message part of a full line: after "TS tool[tid] level module: ".
std::string message_of(const std::string& line) {
  size_t p = line.find(": ");
  return p == std::string::npos ? "" : line.substr(p + 2);
}

bool has_line_ending(const std::vector<std::string>& lines, const std::string& msg) {
  for (auto& l : lines)
    if (l.size() >= msg.size() && l.compare(l.size() - msg.size(), msg.size(), msg) == 0) return true;
  return false;
}

}  // namespace

// ---- decoding gives printf's text -------------------------------------------

// A child forked while the noisy thread runs inherits a heap the leak
// checker cannot judge (that thread is gone in the child, its allocations
// look unreachable): LeakSanitizer calls this hook and skips the check in
// such children.  Plain builds never call it.
static volatile int forked_mid_thread = 0;
extern "C" int __lsan_is_turned_off() { return forked_mid_thread; }

static int same_count = 0;
#define SAME(fmt, ...)                                                               \
  do {                                                                               \
    char want_[1024];                                                                \
    std::snprintf(want_, sizeof want_, fmt, ##__VA_ARGS__);                          \
    std::string got_ = CK_LOG_RENDER(fmt, ##__VA_ARGS__);                            \
    ++same_count;                                                                    \
    if (got_ != want_)                                                               \
      std::printf("#   format \"%s\": got '%s', want '%s'\n", fmt, got_.c_str(), want_); \
    CHECK(got_ == want_);                                                            \
  } while (0)

enum Color { kRed = 3 };
enum class Big : uint64_t { kHuge = 0xfedcba9876543210ull };

TEST(decode_matches_snprintf) {
  SAME("plain text, no conversions");
  SAME("%%");
  SAME("100%% of %d", 7);
  SAME("%d %d %d %d %d", 0, 1, -1, INT_MAX, INT_MIN);
  SAME("%i|%5d|%-5d|%05d|%+d|% d|%+05d", 42, 42, 42, 42, 42, 42, -42);
  SAME("%u %u %u", 0u, 1u, UINT_MAX);
  SAME("%ld %ld %ld", 0L, LONG_MAX, LONG_MIN);
  SAME("%lu %lu", 0UL, ULONG_MAX);
  SAME("%lld %llu %llx %llX", LLONG_MIN, ULLONG_MAX, 0x123456789abcdefULL, 0xabcdefULL);
  SAME("%x %X %#x %#X %#x %08x %-8x|", 0xdeadbeefu, 0xdeadbeefu, 255u, 255u, 0u, 0x1fu, 0x1fu);
  SAME("%lx %#lx %#018lx %#lx", 0x7fffffffe000UL, 0x7f0000001000UL, 0x1000UL, 0UL);
  SAME("%o %#o %lo", 8u, 8u, 0777UL);
  SAME("%hd %hu %hhd %hhu %hhx", 70000, 70000, 300, 300, 511);
  SAME("%zu %zd %zx", SIZE_MAX, static_cast<ssize_t>(-1), static_cast<size_t>(4096));
  SAME("%jd %ju %td", INTMAX_MIN, UINTMAX_MAX, static_cast<ptrdiff_t>(-12345));
  SAME("%c%c%c %3c|%-3c|", 'a', 'B', '!', 'x', 'y');
  SAME("%c", static_cast<char>(-56));
  SAME("%s", "hello");
  SAME("[%s] [%10s] [%-10s] [%.3s] [%5.2s] [%-6.1s] [%.0s]", "str", "str", "str", "string", "string",
       "string", "gone");
  const char* volatile null_str = nullptr;  // volatile: hidden from -Wformat's null check
  SAME("%s|%10s|%.3s|%.8s", null_str, null_str, null_str, null_str);
  SAME("%s and %s", "", "end");
  char buf[8] = {'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'};  // not NUL-terminated
  SAME("%.*s|%.4s|%.*s", 3, buf, buf, 8, buf);
  SAME("%.*s", -1, "negative precision means none");
  SAME("%*d|%-*d|%*s|%.*d|%*.*f", 6, 42, 6, 42, -7, "neg", 5, 42, 10, 3, 3.14159265);
  SAME("%p %p", reinterpret_cast<void*>(0x7ffc12345678UL), static_cast<void*>(nullptr));
  SAME("%20p|%-20p|", reinterpret_cast<void*>(0x1000UL), reinterpret_cast<void*>(0x1000UL));
  SAME("%p", static_cast<const char*>("a char pointer printed as a pointer"));
  SAME("%f %f %f %f", 0.0, 3.14159265358979, -2.5, 1e300);
  SAME("%.2f %10.3f %-10.1f| %+.0f %#.0f", 2.675, 3.14159, 2.5, 2.5, 3.0);
  SAME("%e %E %.3e %g %G %g %g", 12345.678, 0.000123, 6.02214076e23, 100000.0, 1e-10, 0.0001, 123456789.0);
  SAME("%a %A %.2a", 1.0, 255.5, 3.3);
  SAME("%f %f %f %g", HUGE_VAL, -HUGE_VAL, std::nan(""), DBL_MIN);
  SAME("%f", 1.5f);
  SAME("%Lf %Lg %.20Le", 3.14159265358979323846L, 1e4000L, 2.0L / 3.0L);
  SAME("%d %u", kRed, static_cast<unsigned>(kRed));
  SAME("%lx", static_cast<unsigned long>(Big::kHuge));
  SAME("%d %d", true, false);
  unsigned char uc = 200;
  signed char sc = -3;
  short sh = -300;
  unsigned short us = 65000;
  SAME("%u %d %hd %hu %d %d", uc, sc, sh, us, uc, sh);
  SAME("%'d", 1234567);
  errno = ENOENT;
  SAME("failed: %m (%d)", 5);
  errno = 0;
  SAME("mix: %s=%#lx size %zu at %p: %d%% done, %.1f MiB/s, flag %c", "vma", 0x400000UL,
       static_cast<size_t>(8192), reinterpret_cast<void*>(0xdeadUL), 50, 123.45, 'r');
  std::string big(70000, 'z');  // longer than kMaxStr: cut at 65536 bytes
  std::string got = CK_LOG_RENDER("<%s>", big.c_str());
  CHECK_EQ(got.size(), 65536u + 2);
  CHECK(same_count > 40);
}

// Found by tests/fuzz/log_decode_fuzz.cc: a width or precision from an
// argument near INT_MAX made snprintf pad for 2 GiB (seconds; the fuzzer's
// timeout).  The decoder cuts it to what the output can show: the same
// visible text, in bounded time.
TEST(huge_star_width_is_bounded_and_shows_the_same_text) {
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  std::string r = CK_LOG_RENDER("%*d|", INT_MAX, 5);
  std::string l = CK_LOG_RENDER("%-*d|", INT_MAX, 5);
  std::string n = CK_LOG_RENDER("%*d|", INT_MIN, 5);  // negative: left-justified
  std::string p = CK_LOG_RENDER("%.*d|", INT_MAX, 5);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double s = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
  // snprintf's own text cut where the renderer cuts (kMaxStr + 4096 - 1)
  const size_t cut = ck::log::detail::kMaxStr + 4096 - 1;
  CHECK_EQ(r.size(), cut);
  CHECK(r.find_first_not_of(' ') == std::string::npos);
  CHECK_EQ(l.size(), cut);
  CHECK(l[0] == '5' && l.find_first_not_of(' ', 1) == std::string::npos);
  CHECK_EQ(n.size(), cut);
  CHECK(n[0] == '5');
  CHECK_EQ(p.size(), cut);
  CHECK(p.find_first_not_of('0') == std::string::npos);
  CHECK(s < 1.0);  // 2 GiB of padding each took seconds
}

// Found by tests/fuzz/log_decode_fuzz.cc: a %s slot whose length runs past
// the record made the decoder copy that many bytes out of a 1-byte "".
// Such a string (and one without its NUL) now decodes as "", and the slots
// after it as 0.
TEST(a_string_slot_longer_than_its_record_decodes_as_empty) {
  using ck::log::detail::RecHead;
  alignas(8) char buf[sizeof(RecHead) + 32] = {};
  RecHead* h = reinterpret_cast<RecHead*>(buf);
  h->fmt = "<%s|%d>";
  h->size = sizeof buf;
  uint64_t len = 265;  // the record holds 24 bytes after this slot
  std::memcpy(buf + sizeof(RecHead), &len, 8);
  std::memcpy(buf + sizeof(RecHead) + 8, "abcdefgh", 8);
  char out[512];
  size_t n = ck::log::detail::decode_message(h, out, sizeof out);
  CHECK_EQ(std::string(out, n), std::string("<|0>"));
  len = 8;  // fits, but no NUL after its 8 bytes
  std::memcpy(buf + sizeof(RecHead), &len, 8);
  std::memset(buf + sizeof(RecHead) + 8, 'z', 24);
  n = ck::log::detail::decode_message(h, out, sizeof out);
  CHECK_EQ(std::string(out, n), std::string("<|0>"));
  len = 3;  // a good one still decodes
  std::memcpy(buf + sizeof(RecHead), &len, 8);
  std::memcpy(buf + sizeof(RecHead) + 8, "abc\0\0\0\0\0", 8);
  int64_t v = 7;
  std::memcpy(buf + sizeof(RecHead) + 16, &v, 8);
  n = ck::log::detail::decode_message(h, out, sizeof out);
  CHECK_EQ(std::string(out, n), std::string("<abc|7>"));
}

TEST(format_info_at_compile_time) {
  using ck::log::detail::parse_fmt;
  constexpr auto a = parse_fmt("%d %s %.*s %p %%");
  static_assert(a.ok && a.nargs == 5, "slots");
  static_assert(a.kind[0] == 'i' && a.kind[1] == 's' && a.kind[2] == '*' && a.kind[3] == 's' && a.kind[4] == 'p',
                "kinds");
  static_assert(a.prec[1] == -1 && a.prec[3] == -2, "string precision");
  static_assert(!parse_fmt("%n").ok && !parse_fmt("%ls").ok && !parse_fmt("%1$d").ok && !parse_fmt("%lc").ok,
                "refused");
  static_assert(parse_fmt("%.5s").prec[0] == 5 && parse_fmt("%m").nargs == 0, "more");
  CHECK(a.ok);
}

// ---- levels, modules, verbosity ---------------------------------------------

TEST(levels_and_modules_filter) {
  std::string f = tmpfile_path("levels");
  ck::log::set_log_file(f);
  ck::log::configure("all:info,beta:trace", 0);
  alpha::all_levels(1);
  beta::all_levels(1);
  ck::log::configure("alpha:error,beta:off", 0);
  alpha::all_levels(2);
  beta::all_levels(2);
  ck::log::configure("debug", 0);  // a bare level is all modules
  alpha::all_levels(3);
  ck::log::flush();
  auto lines = read_lines(f);
  std::set<std::string> msgs;
  for (auto& l : lines) msgs.insert(message_of(l));
  std::set<std::string> want = {"alpha error 1", "alpha warn 1", "alpha info 1", "beta error 1", "beta warn 1",
                                "beta info 1",   "beta debug 1", "beta trace 1", "alpha error 2", "alpha error 3",
                                "alpha warn 3",  "alpha info 3", "alpha debug 3"};
  for (auto& m : msgs)
    if (!want.count(m)) std::printf("#   unexpected: %s\n", m.c_str());
  for (auto& m : want)
    if (!msgs.count(m)) std::printf("#   missing: %s\n", m.c_str());
  CHECK(msgs == want);
  CHECK_EQ(lines.size(), want.size());
  // the line shape: "SECONDS.NANOSECONDS tool[tid] level module: message"
  bool shape = !lines.empty();
  for (auto& l : lines) {
    unsigned long s = 0, ns = 0;
    int tid = 0;
    char lvl[16], mod[32];
    int n = std::sscanf(l.c_str(), "%lu.%9lu ck[%d] %15s %31[^:]:", &s, &ns, &tid, lvl, mod);
    if (n != 5 || tid <= 0) {
      std::printf("#   bad line: %s\n", l.c_str());
      shape = false;
    }
  }
  CHECK(shape);
  CHECK(has_line_ending(lines, "beta: beta trace 1"));
  ck::log::set_output(2);
  ::unlink(f.c_str());
}

TEST(verbosity_shifts_levels) {
  using namespace ck::log;
  Module* a = module("alpha");
  Module* b = module("beta");
  configure("all:warn", 0);
  CHECK_EQ(a->level, kWarn);
  configure("all:warn", 1);
  CHECK_EQ(a->level, kInfo);
  configure("all:warn", 2);
  CHECK_EQ(a->level, kDebug);
  configure("all:warn", 9);
  CHECK_EQ(a->level, kTrace);
  configure("all:warn", -1);
  CHECK_EQ(a->level, kError);
  configure("all:warn", -5);  // -qq still shows errors
  CHECK_EQ(a->level, kError);
  configure("alpha:debug,beta:off", -1);
  CHECK_EQ(a->level, kInfo);
  CHECK_EQ(b->level, kOff);
  configure("alpha=2", 0);
  CHECK_EQ(a->level, kInfo);
  CHECK_EQ(b->level, kWarn);
  configure("all:warn", 0);
}

TEST(terse_warnings_on_stderr) {
  int p[2];
  CHECK(::pipe(p) == 0);
  ck::log::configure("all:warn", 0);
  ck::log::set_tool("ck-unit");
  ck::log::set_output(p[1]);
  alpha::all_levels(7);
  ck::log::configure("all:debug", 0);  // at debug every line has the full prefix
  LOG_WARN("full %s", "line");
  ck::log::set_output(2);
  ck::log::set_tool("ck");
  ::close(p[1]);
  char buf[4096];
  ssize_t n = ::read(p[0], buf, sizeof buf - 1);
  ::close(p[0]);
  buf[n > 0 ? n : 0] = 0;
  std::string s(buf);
  CHECK(s.find("ck-unit: alpha error 7\nck-unit: warning: alpha warn 7\n") == 0);
  CHECK(s.find("alpha info 7") == std::string::npos);
  CHECK(s.find("] warn logtest: full line\n") != std::string::npos);
  if (s.find("ck-unit: alpha error 7") != 0) std::printf("#   got: %s", buf);
  ck::log::configure("all:warn", 0);
}

// ---- many threads: nothing lost, nothing torn ---------------------------------

TEST(concurrent_writers_lose_nothing) {
  constexpr int kThreads = 8, kPer = 100000;
  std::string f = tmpfile_path("threads");
  ck::log::set_log_file(f);
  ck::log::configure("all:info", 0);
  std::vector<std::thread> th;
  for (int t = 0; t < kThreads; ++t)
    th.emplace_back([t] {
      for (int i = 0; i < kPer; ++i) LOG_INFO("thread %d message %d %s %.2f", t, i, "payload-xyz", i * 0.5);
    });
  for (auto& x : th) x.join();
  ck::log::flush();
  ck::log::set_output(2);
  std::ifstream in(f);
  std::string l;
  std::vector<int> next(kThreads, 0);
  long bad = 0, lines = 0, out_of_order = 0;
  while (std::getline(in, l)) {
    ++lines;
    std::string m = message_of(l);
    int t = -1, i = -1;
    char pay[32] = "";
    double d = -1;
    if (std::sscanf(m.c_str(), "thread %d message %d %31s %lf", &t, &i, pay, &d) != 4 || t < 0 || t >= kThreads ||
        std::strcmp(pay, "payload-xyz") != 0 || d != i * 0.5 || l.find("] info logtest: thread ") == std::string::npos) {
      if (bad++ < 3) std::printf("#   bad line: %s\n", l.c_str());
      continue;
    }
    if (i != next[t]) ++out_of_order;
    next[t] = i + 1;
  }
  std::printf("#   %ld lines, %ld bad, %ld out of order\n", lines, bad, out_of_order);
  CHECK_EQ(lines, long(kThreads) * kPer);
  CHECK_EQ(bad, 0);
  CHECK_EQ(out_of_order, 0);  // each thread's messages complete and in order
  for (int t = 0; t < kThreads; ++t) CHECK_EQ(next[t], kPer);
  CHECK_EQ(ck::log::lost(), 0u);
  ::unlink(f.c_str());
  ck::log::configure("all:warn", 0);
}

// ---- fork: the child neither deadlocks nor repeats the parent's lines ---------

TEST(fork_child_logs_without_deadlock) {
  std::string f = tmpfile_path("fork");
  ck::log::set_log_file(f);
  ck::log::configure("all:info", 0);
  // A thread that keeps the engine busy, so fork() lands while the lock and
  // the flusher are in use.
  std::atomic<bool> stop{false};
  std::thread noisy([&] {
    int i = 0;
    while (!stop.load()) LOG_INFO("noisy %d", i++);
  });
  for (int i = 0; i < 1000; ++i) LOG_INFO("before fork %d", i);  // likely still in the ring
  int children_ok = 0;
  std::fflush(stdout);  // or each child would print the harness's buffered lines again
  for (int round = 0; round < 20; ++round) {
    pid_t pid = fork();
    if (pid == 0) {
      forked_mid_thread = 1;
      alarm(10);
      for (int i = 0; i < 100; ++i) LOG_INFO("child %d line %d", round, i);
      std::exit(0);  // atexit writes what is left
    }
    int st = 0;
    pid_t w = 0;
    for (int ms = 0; ms < 10000 && (w = waitpid(pid, &st, WNOHANG)) == 0; ++ms) usleep(1000);
    if (w == 0) {
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      std::printf("#   child %d deadlocked\n", round);
    } else if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
      ++children_ok;
    }
  }
  stop = true;
  noisy.join();
  ck::log::flush();
  ck::log::set_output(2);
  std::map<std::string, int> count;
  for (auto& l : read_lines(f)) {
    std::string m = message_of(l);
    if (m.rfind("noisy ", 0) != 0) ++count[m];
  }
  CHECK_EQ(children_ok, 20);
  int before = 0, child = 0, dup = 0;
  for (auto& [m, c] : count) {
    if (c != 1) ++dup;
    if (m.rfind("before fork ", 0) == 0) ++before;
    if (m.rfind("child ", 0) == 0) ++child;
  }
  CHECK_EQ(before, 1000);
  CHECK_EQ(child, 20 * 100);
  CHECK_EQ(dup, 0);
  ::unlink(f.c_str());
  ck::log::configure("all:warn", 0);
}

// ---- the helper modes ---------------------------------------------------------

namespace {

std::atomic<int> crash_ready{0};

int crash_mode(int argc, char** argv) {
  if (argc < 5) return 2;
  std::string how = argv[2];
  long n = std::strtol(argv[3], nullptr, 10);
  int threads = argc > 5 ? std::atoi(argv[5]) : 1;
  if (threads < 1) threads = 1;
  ck::log::set_tool("log_test");
  ck::log::configure("all:debug", 0);
  ck::log::set_log_file(argv[4]);
  ck::log::install_crash_handlers();
  long share = n / threads;
  std::vector<std::thread> th;
  for (int t = 1; t < threads; ++t)
    th.emplace_back([t, share] {
      for (long i = t * share; i < (t + 1) * share; ++i) LOG_DEBUG("crash message %ld", i);
      crash_ready.fetch_add(1);
      for (;;) pause();  // still running when the process dies
    });
  for (long i = 0; i < share; ++i) LOG_DEBUG("crash message %ld", i);
  for (long i = threads * share; i < n; ++i) LOG_DEBUG("crash message %ld", i);
  while (crash_ready.load() < threads - 1) usleep(100);
  if (how == "abort") std::abort();
  if (how == "segv") {  // a real fault, not a null store (UBSan would stop that first)
    void* none = mmap(nullptr, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    *static_cast<volatile int*>(none) = 1;
  }
  if (how == "bus" || how == "fpe" || how == "ill")
    ::raise(how == "bus" ? SIGBUS : how == "fpe" ? SIGFPE : SIGILL);
  if (how == "exit") std::exit(1);
  return 0;
}

int tool_mode(int argc, char** argv) {
  CLI::App app{"log_test tool: one message per level and module"};
  ck::CommonOptions o;
  ck::add_common_options(app, o);
  return ck::run_tool("ck-logtest", app, o, argc - 1, argv + 1, [] {
    alpha::all_levels(0);
    beta::all_levels(0);
    return 0;
  });
}

int stage_mode(int argc, char** argv) {
  CLI::App app{"log_test stage NAME N: a pipeline stage"};
  ck::CommonOptions o;
  ck::add_common_options(app, o);
  std::string name;
  long n = 0;
  app.add_option("name", name)->required();
  app.add_option("n", n)->required();
  return ck::run_tool("ck-stage", app, o, argc - 1, argv + 1, [&] {
    for (long i = 0; i < n; ++i) {
      LOG_DEBUG("%s step %ld", name.c_str(), i);
      if (i % 32 == 0) usleep(2000);  // runs ~0.2 s, so that stages overlap
    }
    return 0;
  });
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "crash") == 0) return crash_mode(argc, argv);
  if (argc > 1 && std::strcmp(argv[1], "tool") == 0) return tool_mode(argc, argv);
  if (argc > 1 && std::strcmp(argv[1], "stage") == 0) return stage_mode(argc, argv);
  return run_unit_tests();
}
