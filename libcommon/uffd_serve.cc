// ck-uffd-serve: the lazy page server.  It owns the uffds ck-restore made
// (one per task, its anonymous memory registered MODE_MISSING) and fills
// them from a Source, every run checked whole against its digest before
// its first page is placed.  An image set is indexed first (every run's
// place in its pages file, no page data read): a fault is then served at
// once, the run that holds its page placed before anything else, the
// piece with the faulting page first; a page no run holds gets the zero
// page.  Between faults an idle handler of the event loop places the other
// runs in image order, so the tree stops faulting soon.  A source that
// cannot be indexed is placed in order only (a fault waits for its turn).
// Once every run is in, the server exits 0; the pages the image did not
// hold read as zeros.
#include "uffd_serve.h"

#include <errno.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>

#include "error.h"
#include "log.h"
#include "page_source.h"
#include "uffd.h"

CK_LOG_MODULE("uffd");

namespace ck {

namespace {

constexpr uint64_t kPg = 4096;

struct Server {
  std::unique_ptr<Source> src;
  std::map<pid_t, int> uffd;  // image pid -> uffd
  std::vector<uv_poll_t*> polls;
  uv_idle_t idle;
  uv_timer_t tick;
  std::vector<char> buf;
  uint64_t faults = 0, runs = 0, pages = 0, on_demand = 0, zero = 0;
  bool progress = false;
  bool done = false;
  unsigned delay_ms = 0;  // CK_UFFD_SERVE_DELAY_MS: tests slow the placement in order down

  // An indexed source: every run, whether it is in, where the idle
  // placement is, and per task the runs by address.
  bool indexed = false;
  std::vector<Source::RunAt> index;
  std::vector<bool> in;
  size_t next = 0;
  std::map<pid_t, std::map<uint64_t, size_t>> by_addr;

  void copy(int fd, uint64_t addr, const char* p, uint64_t len) {
    uint64_t at = 0;
    if (uffd_copy(fd, addr, p, len, [](uint64_t, const char*) {}, &at)) return;  // a page already there: left
    // The task is gone (ESRCH) or the range is no longer registered
    // (unmapped, ENOENT): nothing to serve there.
    if (errno == ESRCH || errno == ENOENT) return;
    throw_errno(strf("UFFDIO_COPY at %#lx", (unsigned long)at));
  }

  void report() {
    if (progress)
      std::fprintf(stderr, "ck-uffd-serve: %lu pages in (%lu runs, %lu on demand), %lu faults\n", (unsigned long)pages,
                   (unsigned long)runs, (unsigned long)on_demand, (unsigned long)faults);
  }

  // Run i of the index, checked whole; the piece holding addr goes first.
  void place(size_t i, uint64_t addr) {
    const Source::RunAt& r = index[i];
    auto it = uffd.find(static_cast<pid_t>(r.run.pid()));
    in[i] = true;
    if (it == uffd.end()) return;
    uint64_t len = uint64_t{r.run.npages()} * kPg;
    if (buf.size() < len) buf.resize(len);
    src->payload_at(r, buf.data());
    uint64_t off = 0, n = len;
    if (addr >= r.run.addr() && addr < r.run.addr() + len) {
      off = (addr - r.run.addr()) / Source::kPiece * Source::kPiece;
      n = std::min<uint64_t>(Source::kPiece, len - off);
    }
    copy(it->second, r.run.addr() + off, buf.data() + off, n);
    if (off + n < len) copy(it->second, r.run.addr() + off + n, buf.data() + off + n, len - off - n);
    if (off) copy(it->second, r.run.addr(), buf.data(), off);
    ++runs, pages += r.run.npages();
    report();
  }

  // A fault of task pid at addr: its run now, or the zero page.
  void fault(pid_t pid, int fd, uint64_t addr) {
    ++faults;
    addr &= ~(kPg - 1);
    if (!indexed) return;  // it waits for its run's turn
    auto& runs_of = by_addr[pid];
    auto it = runs_of.upper_bound(addr);
    if (it != runs_of.begin()) {
      --it;
      const pb::PageRun& run = index[it->second].run;
      if (addr < run.addr() + uint64_t{run.npages()} * kPg) {
        if (!in[it->second]) {
          ++on_demand;
          place(it->second, addr);
        } else {
          // Placed since the fault was queued: UFFDIO_COPY woke it.
          struct uffdio_range w = {addr, kPg};
          ::ioctl(fd, UFFDIO_WAKE, &w);
        }
        return;
      }
    }
    // No run holds the page: it reads as zeros.
    struct uffdio_zeropage z = {{addr, kPg}, 0, 0};
    if (::ioctl(fd, UFFDIO_ZEROPAGE, &z) != 0 && errno != EEXIST && errno != ESRCH && errno != ENOENT &&
        errno != EAGAIN)
      throw_errno(strf("UFFDIO_ZEROPAGE at %#lx", (unsigned long)addr));
    ++zero;
  }

  // One run per call; false once every run is in.
  bool step() {
    if (indexed) {
      while (next < index.size() && in[next]) ++next;
      if (next == index.size()) return false;
      place(next, 0);
      return true;
    }
    pb::Frame f;
    while (src->next(&f)) {
      if (!f.has_pages()) continue;
      const pb::PageRun& run = f.pages();
      if (!run.has_payload() || run.file() || run.shmid()) continue;
      auto it = uffd.find(static_cast<pid_t>(run.pid()));
      if (it == uffd.end()) continue;
      uint64_t len = uint64_t{run.npages()} * kPg;
      if (buf.size() < len) buf.resize(len);
      src->payload_to(buf.data());  // checked whole before any page is placed
      copy(it->second, run.addr(), buf.data(), len);
      ++runs, pages += run.npages();
      report();
      return true;
    }
    return false;
  }
};

struct Poll {
  uv_poll_t h;
  pid_t pid;
  int fd;
};

void on_fault(uv_poll_t* h, int status, int events) {
  Server* s = static_cast<Server*>(h->loop->data);
  Poll* p = reinterpret_cast<Poll*>(h);
  struct uffd_msg m[16];
  for (;;) {
    ssize_t n = ::read(p->fd, m, sizeof m);
    if (n <= 0) break;
    for (ssize_t i = 0; i < n / static_cast<ssize_t>(sizeof m[0]); ++i)
      if (m[i].event == UFFD_EVENT_PAGEFAULT) s->fault(p->pid, p->fd, m[i].arg.pagefault.address);
  }
}

// One run per call of the idle handler, or with CK_UFFD_SERVE_DELAY_MS per
// tick of a timer (faults are served at once in between); once every run
// is in, the loop stops.
template <typename Handle>
void place_next(Handle* h, int (*stop)(Handle*)) {
  Server* s = static_cast<Server*>(h->loop->data);
  if (s->step()) return;
  s->done = true;
  stop(h);
  uv_stop(h->loop);
}
void on_idle(uv_idle_t* h) { place_next(h, uv_idle_stop); }
void on_tick(uv_timer_t* h) { place_next(h, uv_timer_stop); }

}  // namespace

int uffd_serve(const UffdServeOptions& o) {
  if (o.dir.empty()) usage_error("-D DIR is required");
  if (o.uffds.empty()) usage_error("no --uffd PID:FD given");
  Server s;
  s.progress = o.progress;
  if (const char* d = ::getenv("CK_UFFD_SERVE_DELAY_MS")) s.delay_ms = static_cast<unsigned>(std::atoi(d));
  for (auto& u : o.uffds) {
    size_t c = u.find(':');
    if (c == std::string::npos) usage_error("--uffd takes PID:FD, not '" + u + "'");
    s.uffd[static_cast<pid_t>(std::stol(u.substr(0, c)))] = std::stoi(u.substr(c + 1));
  }
  s.src = std::make_unique<ImageSource>(o.dir);
  if (s.src->index_runs(&s.index)) {
    s.indexed = true;
    s.in.assign(s.index.size(), false);
    for (size_t i = 0; i < s.index.size(); ++i) s.by_addr[static_cast<pid_t>(s.index[i].run.pid())][s.index[i].run.addr()] = i;
  }
  uv_loop_t loop;
  uv_loop_init(&loop);
  loop.data = &s;
  for (auto& [pid, fd] : s.uffd) {
    auto* p = new Poll;
    p->pid = pid, p->fd = fd;
    if (uv_poll_init(&loop, &p->h, fd) != 0) fail(strf("uffd %d of pid %d: not pollable", fd, pid));
    uv_poll_start(&p->h, UV_READABLE, on_fault);
    s.polls.push_back(&p->h);
  }
  uv_idle_init(&loop, &s.idle);
  uv_timer_init(&loop, &s.tick);
  if (s.delay_ms)
    uv_timer_start(&s.tick, on_tick, s.delay_ms, s.delay_ms);
  else
    uv_idle_start(&s.idle, on_idle);
  uv_run(&loop, UV_RUN_DEFAULT);
  for (auto* p : s.polls) uv_close(reinterpret_cast<uv_handle_t*>(p), [](uv_handle_t* h) { delete reinterpret_cast<Poll*>(h); });
  uv_close(reinterpret_cast<uv_handle_t*>(&s.idle), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&s.tick), nullptr);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  LOG_INFO("all pages in: %lu pages in %lu runs (%lu on demand), %lu faults, %lu zero pages", (unsigned long)s.pages,
           (unsigned long)s.runs, (unsigned long)s.on_demand, (unsigned long)s.faults, (unsigned long)s.zero);
  if (o.progress)
    std::fprintf(stderr, "ck-uffd-serve: done, %lu pages, %lu faults, %lu runs on demand, %lu zero pages\n",
                 (unsigned long)s.pages, (unsigned long)s.faults, (unsigned long)s.on_demand, (unsigned long)s.zero);
  return 0;
}

}  // namespace ck
