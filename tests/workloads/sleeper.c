/* A task asleep in a syscall when it is dumped: argv[1] is one of
 * nanosleep, read (an empty pipe), epoll (epoll_wait on an empty pipe),
 * futex (FUTEX_WAIT on a word nobody wakes).  The syscall must not return
 * before the check request: after restore it goes on sleeping as the kernel
 * would after a signal with no handler.  For nanosleep argv[2] seconds
 * (default 1000): with a short sleep the workload checks that the sleep
 * ended on time (not restarted from the beginning, not cut short). */
#include "wl.h"

#include <linux/futex.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <time.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "nanosleep";
  double secs = argc > 2 ? atof(argv[2]) : 1000;
  wl_init();
  int p[2];
  if (pipe(p)) wl_fail("pipe: %s", strerror(errno));
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 77};
  epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev);
  static uint32_t word;
  double t0 = now();
  wl_ready();
  long r;
  int err;
  if (!strcmp(mode, "nanosleep")) {
    struct timespec req = {(time_t)secs, (long)((secs - (time_t)secs) * 1e9)}, rem;
    r = nanosleep(&req, &rem);
    err = errno;
    double took = now() - t0;
    if (r == 0) {
      /* slept the whole time: it must have been about `secs`, not more */
      if (took < secs - 0.05) wl_fail("woke early: %.3f of %.3f s", took, secs);
      if (took > secs + 1.5) wl_fail("slept too long: %.3f of %.3f s (restarted from the start?)", took, secs);
      wl_say("INFO slept=%.3f", took);
      while (!wl_check_requested) pause();
      wl_pass();
    }
  } else if (!strcmp(mode, "read")) {
    char c;
    r = read(p[0], &c, 1);
    err = errno;
  } else if (!strcmp(mode, "epoll")) {
    /* epoll_wait is one of the calls the kernel never restarts: after a
     * stop (SIGSTOP, or a ptrace interrupt such as a dump) it fails with
     * EINTR even without a handler (signal(7)).  Like any real program,
     * go back to waiting. */
    struct epoll_event out;
    do {
      r = epoll_wait(ep, &out, 1, -1);
      err = errno;
    } while (r == -1 && err == EINTR && !wl_check_requested);
  } else if (!strcmp(mode, "futex")) {
    r = syscall(SYS_futex, &word, FUTEX_WAIT, 0, NULL, NULL, 0);
    err = errno;
  } else {
    wl_fail("unknown mode %s", mode);
  }
  if (r != -1 || err != EINTR) wl_fail("%s returned %ld (%s) instead of sleeping", mode, r, strerror(err));
  if (!wl_check_requested) wl_fail("%s was interrupted, but not by the check request", mode);
  wl_pass();
}
