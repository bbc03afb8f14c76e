// The page parasite in a real child: it must find the zero runs, compute
// each run's ck64 where the data is, hand the non-zero pages to the pipe
// in order, and leave the child exactly as it was (memory, registers, signal
// mask and handlers, mappings, fds), also when it faults.
#include <signal.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstring>
#include <thread>
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

constexpr size_t kPage = 4096, kPages = 1024;
unsigned char* g_buf;  // same address in the child (forked)
volatile sig_atomic_t g_traps;

void on_trap(int) { ++g_traps; }
void on_segv(int) { _exit(99); }

// Pages: 0..39 data, 40..59 zero, 60 data, 61..99 zero, 100 on data,
// except that pages 300 and 600..619 are zero.
bool page_has_data(size_t i) { return (i < 40 || i == 60 || i >= 100) && i != 300 && (i < 600 || i >= 620); }

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
    signal(SIGSEGV, on_segv);
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
    struct sigaction segv;
    sigaction(SIGSEGV, nullptr, &segv);
    bool ok = sa.sa_handler == on_trap && segv.sa_handler == on_segv && g_traps == 0 && sigismember(&now, SIGUSR1) && sigismember(&now, SIGUSR2) &&
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

// What the parasite must leave as it found it.
struct State {
  std::string maps, fds, xsave;
  user_regs_struct regs;
  uint64_t mask;
};
State state(pid_t c) { return {maps(c), fds(c), ck::get_xsave(c), ck::get_regs(c), ck::get_sigmask(c)}; }
void check_same(pid_t c, const State& before) {
  State now = state(c);
  CHECK_EQ(now.maps, before.maps);
  CHECK_EQ(now.fds, before.fds);
  CHECK(now.xsave == before.xsave);
  CHECK(std::memcmp(&now.regs, &before.regs, sizeof now.regs) == 0);
  CHECK_EQ(now.mask, before.mask);
  CHECK_EQ(finish_child(c), 0);  // its own checks: handlers, mask, memory
  munmap(g_buf, kPages * kPage);
}

// A child with the test data, stopped for us, and its state now.
pid_t data_child(State* before) {
  fill();
  pid_t c = start_child(ck::ck64(g_buf, kPages * kPage));
  *before = state(c);
  return c;
}

void set_args(ck_parasite_args* a, const ck::Parasite& p, std::vector<ck_parasite_seg> segs, uint32_t flags) {
  std::memset(a, 0, sizeof *a);
  a->magic = CK_PARASITE_MAGIC, a->version = CK_PARASITE_VERSION, a->flags = flags;
  a->pipe_fd = p.remote_pages(), a->bell_fd = p.remote_bell(), a->ack_fd = p.remote_ack();
  a->nsegs = static_cast<uint32_t>(segs.size());
  for (size_t i = 0; i < segs.size(); ++i) a->segs[i] = segs[i];
}

void put_args(pid_t c, const ck::Parasite& p, std::vector<ck_parasite_seg> segs) {
  static ck_parasite_args a;
  set_args(&a, p, std::move(segs), 0);
  ck::write_mem(c, p.args_addr(), &a, sizeof a);
}

// One run over three segments (pages 0..299, 350..699, 800..999: 850
// pages, four chunks, so slots are reused after acks), read as ck-memread
// reads it, from another thread while this one (the tracer) runs it.
void check_batch(pid_t c, ck::Parasite& p, uint32_t flags) {
  uint64_t base = reinterpret_cast<uint64_t>(g_buf);
  std::vector<std::pair<size_t, size_t>> ranges = {{0, 300}, {350, 350}, {800, 200}};
  static ck_parasite_args a;
  std::vector<ck_parasite_seg> segs;
  std::vector<size_t> pages;  // buffer page of each batch page
  for (auto [first, n] : ranges) {
    segs.push_back({base + first * kPage, n});
    for (size_t i = 0; i < n; ++i) pages.push_back(first + i);
  }
  set_args(&a, p, segs, flags);
  ck::write_mem(c, p.args_addr(), &a, sizeof a);
  // Expected runs: split at zero/data changes, segment borders, chunk borders.
  std::vector<std::pair<size_t, bool>> want;  // (first batch page, zero)
  for (size_t k = 0; k < pages.size(); ++k)
    if (k == 0 || k % CK_PARASITE_CHUNK_PAGES == 0 || pages[k] != pages[k - 1] + 1 ||
        page_has_data(pages[k]) != page_has_data(pages[k - 1]))
      want.push_back({k, !page_has_data(pages[k])});
  size_t data = 0;
  for (size_t i : pages) data += page_has_data(i);
  size_t nchunks = (pages.size() + CK_PARASITE_CHUNK_PAGES - 1) / CK_PARASITE_CHUNK_PAGES;
  std::atomic<size_t> got_runs{0}, bad{0};
  std::thread reader([&] {
    ck::Parasite::Ends e = p.ends();
    std::vector<unsigned char> buf(kPage * CK_PARASITE_CHUNK_PAGES);
    static ck_parasite_slot sl;
    size_t r_all = 0;
    for (size_t k = 0; k < nchunks; ++k) {
      char b;
      if (read(e.bell, &b, 1) != 1) return (void)++bad;
      uint64_t at = p.args_addr() + offsetof(ck_parasite_args, slots) + (k % CK_PARASITE_SLOTS) * sizeof sl;
      ck::read_mem(c, at, &sl, sizeof sl);
      if (sl.chunk != k) ++bad;
      for (uint32_t r = 0; r < sl.nruns; ++r, ++r_all) {
        const ck_parasite_run& run = sl.runs[r];
        if (r_all >= want.size() || run.page != want[r_all].first || (run.zero != 0) != want[r_all].second) {
          ++bad;
          continue;
        }
        if (run.zero) continue;
        size_t len = run.npages * kPage;
        if (ck::read_full(e.pages, buf.data(), len) != len) ++bad;
        const unsigned char* src = g_buf + pages[run.page] * kPage;
        if (std::memcmp(buf.data(), src, len) != 0) ++bad;
        if (ck::Ck64::from_state(run.a, run.b, len).digest() != ck::ck64(src, len)) ++bad;
      }
      if (k + CK_PARASITE_SLOTS < nchunks && write(e.ack, "a", 1) != 1) ++bad;
    }
    got_runs = r_all;
  });
  long n = -1;
  try {
    n = p.run();
  } catch (const std::exception& ex) {
    std::printf("#   run: %s\n", ex.what());
  }
  reader.join();
  CHECK_EQ(n, static_cast<long>(data * kPage));
  CHECK_EQ(bad.load(), 0u);
  CHECK_EQ(got_runs.load(), want.size());
  ck::read_mem(c, p.args_addr(), &a, offsetof(ck_parasite_args, slots));
  CHECK_EQ(a.result, n);
}

TEST(parasite_runs_leave_the_child_as_it_was) {
  State before;
  pid_t c = data_child(&before);
  {
    ck::Parasite p(c, c, ck::find_syscall_insn(c));
    CHECK(p.pipe_size() >= CK_PARASITE_CHUNK_PAGES * kPage);
    CHECK(maps(c) != before.maps);  // it is in there
    check_batch(c, p, 0);
    check_batch(c, p, __builtin_cpu_supports("avx2") ? CK_PARASITE_AVX2 : 0);
    check_batch(c, p, 0);  // the pipe was drained: it goes on
  }
  check_same(c, before);
}

TEST(parasite_fault_and_bad_args_leave_the_child_as_it_was) {
  State before;
  pid_t c = data_child(&before);
  {
    ck::Parasite p(c, c, ck::find_syscall_insn(c));
    put_args(c, p, {{reinterpret_cast<uint64_t>(g_buf), CK_PARASITE_MAX_PAGES + 1}});  // too many pages
    CHECK_EQ(p.run(), -CK_PARASITE_EBADARGS);
    put_args(c, p, {{4096, 1}});  // nothing mapped there
    CHECK_THROWS(p.run(), 1, "got signal 11");
    CHECK_THROWS(p.run(), 1, "failed before");
  }
  check_same(c, before);
}

TEST(parasite_stops_when_its_reader_goes) {
  State before;
  pid_t c = data_child(&before);
  {
    ck::Parasite p(c, c, ck::find_syscall_insn(c));
    put_args(c, p, {{reinterpret_cast<uint64_t>(g_buf), kPages}});
    // Nobody reads: the parasite fills the pipe with chunk 0 and waits
    // there, until the reader's connection goes.
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) == 0);
    std::thread gone([&] {
      usleep(200000);
      close(sv[1]);
    });
    CHECK_THROWS(p.run(sv[0]), 1, "went away");
    gone.join();
    close(sv[0]);
  }
  check_same(c, before);
}

}  // namespace

int main() { return run_unit_tests(); }
