// ck-uffd-serve: the lazy page server.  It owns the uffds ck-restore made
// (one per task, its anonymous memory registered MODE_MISSING) and fills
// them from a Source: every run through payload_to(), so a run is checked
// whole against its digest before its first page is placed.  The runs go
// in in image order, from an idle handler of the event loop, between the
// faults the uv_poll handles read; a fault waits for its page to come in
// that order (UFFDIO_COPY wakes it).  Once the source has no more runs,
// the server exits 0 and the pages the image did not hold read as zeros.
#include "uffd_serve.h"

#include <errno.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <uv.h>

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
  std::vector<char> buf;
  uint64_t faults = 0, runs = 0, pages = 0;
  bool progress = false;
  bool done = false;

  void copy(int fd, uint64_t addr, const char* p, uint64_t len) {
    uint64_t at = 0;
    if (uffd_copy(fd, addr, p, len, [](uint64_t, const char*) {}, &at)) return;  // a page already there: left
    // The task is gone (ESRCH) or the range is no longer registered
    // (unmapped, ENOENT): nothing to serve there.
    if (errno == ESRCH || errno == ENOENT) return;
    throw_errno(strf("UFFDIO_COPY at %#lx", (unsigned long)at));
  }

  // One run per call; false once the source is done.
  unsigned delay_us = 0;  // CK_UFFD_SERVE_DELAY_MS: tests slow the transfer down
  bool step() {
    if (delay_us) ::usleep(delay_us);
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
      if (progress) std::fprintf(stderr, "ck-uffd-serve: %lu pages in (%lu runs), %lu faults\n",
                                 (unsigned long)pages, (unsigned long)runs, (unsigned long)faults);
      return true;
    }
    return false;
  }
};

void on_fault(uv_poll_t* h, int status, int events) {
  Server* s = static_cast<Server*>(h->loop->data);
  int fd = -1;
  uv_fileno(reinterpret_cast<uv_handle_t*>(h), &fd);
  struct uffd_msg m[16];
  for (;;) {
    ssize_t n = ::read(fd, m, sizeof m);
    if (n <= 0) break;
    for (ssize_t i = 0; i < n / static_cast<ssize_t>(sizeof m[0]); ++i)
      if (m[i].event == UFFD_EVENT_PAGEFAULT) ++s->faults;
  }
}

void on_idle(uv_idle_t* h) {
  Server* s = static_cast<Server*>(h->loop->data);
  if (s->step()) return;
  s->done = true;
  uv_idle_stop(h);
  uv_stop(h->loop);
}

}  // namespace

int uffd_serve(const UffdServeOptions& o) {
  if (o.dir.empty()) usage_error("-D DIR is required");
  if (o.uffds.empty()) usage_error("no --uffd PID:FD given");
  Server s;
  s.progress = o.progress;
  if (const char* d = ::getenv("CK_UFFD_SERVE_DELAY_MS")) s.delay_us = static_cast<unsigned>(std::atoi(d)) * 1000u;
  for (auto& u : o.uffds) {
    size_t c = u.find(':');
    if (c == std::string::npos) usage_error("--uffd takes PID:FD, not '" + u + "'");
    s.uffd[static_cast<pid_t>(std::stol(u.substr(0, c)))] = std::stoi(u.substr(c + 1));
  }
  s.src = std::make_unique<ImageSource>(o.dir);
  uv_loop_t loop;
  uv_loop_init(&loop);
  loop.data = &s;
  for (auto& [pid, fd] : s.uffd) {
    auto* p = new uv_poll_t;
    if (uv_poll_init(&loop, p, fd) != 0) fail(strf("uffd %d of pid %d: not pollable", fd, pid));
    uv_poll_start(p, UV_READABLE, on_fault);
    s.polls.push_back(p);
  }
  uv_idle_init(&loop, &s.idle);
  uv_idle_start(&s.idle, on_idle);
  uv_run(&loop, UV_RUN_DEFAULT);
  for (auto* p : s.polls) uv_close(reinterpret_cast<uv_handle_t*>(p), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
  uv_close(reinterpret_cast<uv_handle_t*>(&s.idle), nullptr);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  LOG_INFO("all pages in: %lu pages in %lu runs, %lu faults", (unsigned long)s.pages, (unsigned long)s.runs,
           (unsigned long)s.faults);
  if (o.progress) std::fprintf(stderr, "ck-uffd-serve: done, %lu pages, %lu faults\n", (unsigned long)s.pages, (unsigned long)s.faults);
  return 0;
}

}  // namespace ck
