// The page parasite in a real child: it must find the zero runs, compute
// each run's ck64 where the data is, hand the non-zero pages to the pipe
// in order, and leave the child exactly as it was (memory, registers, signal
// mask and handlers, mappings, fds), also when it faults.
#include <signal.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "ck64.h"
#include "error.h"
#include "fd.h"
#include "parasite.h"
#include "parasite_abi.h"
#include "ptrace.h"
#include "test.h"

namespace {

constexpr size_t kPage = 4096, kPages = 512;
unsigned char* g_buf;  // same address in the child (forked)
volatile sig_atomic_t g_traps;

void on_trap(int) { ++g_traps; }

// Pages: 0..39 data, 40..59 zero, 60..60 data, 61..99 zero, 100..511 data,
// except that page 300 is zero.
bool page_has_data(size_t i) { return (i < 40 || i == 60 || i >= 100) && i != 300; }

void fill() {
  g_buf = static_cast<unsigned char*>(mmap(nullptr, kPages * kPage, PROT_READ | PROT_WRITE,
                                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  uint64_t x = 0x2545F4914F6CDD1Dull;
  for (size_t i = 0; i < kPages; ++i) {
    if (!page_has_data(i)) {
      g_buf[i * kPage] = 1, g_buf[i * kPage] = 0;  // populated, all zero
      continue;
    }
    for (size_t o = 0; o < kPage; o += 8) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      std::memcpy(g_buf + i * kPage + o, &x, 8);
    }
  }
}

// The child: a SIGTRAP handler, SIGUSR1 blocked, waits for SIGUSR2 (sent
// after the parasite is gone), then checks that nothing changed: its
// handler, its mask, no trap seen, its memory.
pid_t start_child(uint64_t want_sum) {
  pid_t c = fork();
  if (c == 0) {
    signal(SIGTRAP, on_trap);
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGUSR1);
    sigaddset(&m, SIGUSR2);
    sigprocmask(SIG_BLOCK, &m, nullptr);
    sigset_t w;
    sigemptyset(&w);
    sigaddset(&w, SIGUSR2);
    int sig = 0;
    sigwait(&w, &sig);
    struct sigaction sa;
    sigaction(SIGTRAP, nullptr, &sa);
    sigset_t now;
    sigprocmask(SIG_BLOCK, nullptr, &now);
    bool ok = sa.sa_handler == on_trap && g_traps == 0 && sigismember(&now, SIGUSR1) && sigismember(&now, SIGUSR2) &&
              !sigismember(&now, SIGTRAP) && ck::ck64(g_buf, kPages * kPage) == want_sum;
    _exit(ok ? 0 : 1);
  }
  usleep(50000);  // in sigwait
  ck::seize_thread(c);
  ck::wait_interrupt_stop(c);
  return c;
}

int finish_child(pid_t c) {
  ck::detach_thread(c);
  kill(c, SIGUSR2);
  int st = 0;
  waitpid(c, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

std::string maps(pid_t p) { return ck::read_file("/proc/" + std::to_string(p) + "/maps"); }
std::string fds(pid_t p) {
  std::string out;
  for (int fd = 0; fd < 64; ++fd) {
    char l[64];
    std::string path = "/proc/" + std::to_string(p) + "/fd/" + std::to_string(fd);
    ssize_t n = readlink(path.c_str(), l, sizeof l - 1);
    if (n > 0) out += std::to_string(fd) + "->" + std::string(l, static_cast<size_t>(n)) + "\n";
  }
  return out;
}

ck_parasite_args batch(std::vector<ck_parasite_seg> segs, uint32_t flags) {
  ck_parasite_args a;
  std::memset(&a, 0, sizeof a);
  a.magic = CK_PARASITE_MAGIC, a.version = CK_PARASITE_VERSION, a.flags = flags;
  a.nsegs = static_cast<uint32_t>(segs.size());
  for (size_t i = 0; i < segs.size(); ++i) a.segs[i] = segs[i];
  return a;
}

// Runs one batch of two segments (pages 0..199 and 250..305) and checks
// every run against the data.
void check_batch(pid_t c, ck::Parasite& p, uint32_t flags) {
  uint64_t base = reinterpret_cast<uint64_t>(g_buf);
  ck_parasite_args a = batch({{base, 200}, {base + 250 * kPage, 56}}, flags);
  a.pipe_fd = p.remote_pipe_fd();
  ck::write_mem(c, p.args_addr(), &a, sizeof a);
  long n = p.run();
  ck::read_mem(c, p.args_addr(), &a, sizeof a);
  std::vector<size_t> pages;
  for (size_t i = 0; i < 200; ++i) pages.push_back(i);
  for (size_t i = 250; i < 306; ++i) pages.push_back(i);
  size_t data = 0;
  for (size_t i : pages) data += page_has_data(i);
  CHECK_EQ(n, static_cast<long>(data * kPage));
  CHECK_EQ(a.spliced, n);
  // Expected runs: split at zero/data changes and at the segment border.
  std::vector<std::pair<size_t, bool>> want;  // (first batch page, zero)
  for (size_t k = 0; k < pages.size(); ++k) {
    bool border = k == 200;
    if (k == 0 || border || page_has_data(pages[k]) != page_has_data(pages[k - 1]))
      want.push_back({k, !page_has_data(pages[k])});
  }
  CHECK_EQ(a.nruns, want.size());
  std::vector<unsigned char> got(kPage * 256);
  for (uint32_t r = 0; r < a.nruns && r < want.size(); ++r) {
    const ck_parasite_run& run = a.runs[r];
    CHECK_EQ(run.page, want[r].first);
    CHECK_EQ(run.zero != 0, want[r].second);
    if (run.zero) continue;
    size_t len = run.npages * kPage;
    CHECK(ck::read_full(p.pipe_fd(), got.data(), len) == len);
    const unsigned char* src = g_buf + pages[run.page] * kPage;
    CHECK(std::memcmp(got.data(), src, len) == 0);
    uint64_t want_digest = ck::ck64(src, len);
    CHECK_EQ(ck::Ck64::from_state(run.a, run.b, len).digest(), want_digest);
  }
}

TEST(parasite_runs_leave_the_child_as_it_was) {
  fill();
  pid_t c = start_child(ck::ck64(g_buf, kPages * kPage));
  std::string maps0 = maps(c), fds0 = fds(c);
  user_regs_struct r0 = ck::get_regs(c);
  std::string x0 = ck::get_xsave(c);
  uint64_t m0 = ck::get_sigmask(c);
  {
    ck::Parasite p(c, c, ck::find_syscall_insn(c));
    CHECK(p.pipe_size() >= CK_PARASITE_MAX_PAGES * kPage);
    CHECK(maps(c) != maps0);  // it is in there
    check_batch(c, p, 0);
    check_batch(c, p, __builtin_cpu_supports("avx2") ? CK_PARASITE_AVX2 : 0);
    check_batch(c, p, 0);  // the pipe was drained: it goes on
  }
  CHECK_EQ(maps(c), maps0);
  CHECK_EQ(fds(c), fds0);
  user_regs_struct r1 = ck::get_regs(c);
  CHECK(std::memcmp(&r0, &r1, sizeof r0) == 0);
  CHECK(ck::get_xsave(c) == x0);
  CHECK_EQ(ck::get_sigmask(c), m0);
  CHECK_EQ(finish_child(c), 0);
  munmap(g_buf, kPages * kPage);
}

TEST(parasite_fault_and_bad_args_leave_the_child_as_it_was) {
  fill();
  pid_t c = start_child(ck::ck64(g_buf, kPages * kPage));
  std::string maps0 = maps(c);
  user_regs_struct r0 = ck::get_regs(c);
  uint64_t m0 = ck::get_sigmask(c);
  {
    ck::Parasite p(c, c, ck::find_syscall_insn(c));
    ck_parasite_args a = batch({{reinterpret_cast<uint64_t>(g_buf), 300}}, 0);  // over 256 pages
    ck::write_mem(c, p.args_addr(), &a, sizeof a);
    CHECK_EQ(p.run(), -CK_PARASITE_EBADARGS);
    a = batch({{4096, 1}}, 0);  // nothing mapped there
    ck::write_mem(c, p.args_addr(), &a, sizeof a);
    CHECK_THROWS(p.run(), 1, "got signal 11");
    CHECK_THROWS(p.run(), 1, "failed before");
  }
  CHECK_EQ(maps(c), maps0);
  user_regs_struct r1 = ck::get_regs(c);
  CHECK(std::memcmp(&r0, &r1, sizeof r0) == 0);
  CHECK_EQ(ck::get_sigmask(c), m0);
  CHECK_EQ(finish_child(c), 0);
  munmap(g_buf, kPages * kPage);
}

}  // namespace

int main() { return run_unit_tests(); }
