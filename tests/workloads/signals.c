/* Signal and timer state across a restore: a handler running on a
 * sigaltstack, a blocked pending SIGUSR1, a queued SIGRTMIN with a value,
 * the blocked mask, an itimer and a POSIX timer with a given id, and
 * clock_gettime through the vDSO agreeing with the syscall. */
#include "wl.h"

#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>

static char altstack[64 * 1024];
static volatile sig_atomic_t usr1_runs;
static volatile uintptr_t usr1_frame;

static void on_usr1(int sig) {
  (void)sig;
  int local;
  usr1_frame = (uintptr_t)&local;
  usr1_runs++;
}

int main(void) {
  wl_init();
  stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack};
  if (sigaltstack(&ss, NULL)) wl_fail("sigaltstack: %s", strerror(errno));
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr1;
  sa.sa_flags = SA_ONSTACK | SA_RESTART;
  sigaction(SIGUSR1, &sa, NULL);
  sigset_t block;
  sigemptyset(&block);
  sigaddset(&block, SIGUSR1);
  sigaddset(&block, SIGRTMIN);
  sigaddset(&block, SIGRTMIN + 1);
  sigprocmask(SIG_BLOCK, &block, NULL);
  raise(SIGUSR1);
  union sigval v = {.sival_int = 1234};
  sigqueue(getpid(), SIGRTMIN, v);

  struct itimerval it = {{0, 0}, {1000, 0}};
  setitimer(ITIMER_REAL, &it, NULL);
  timer_t tm;
  struct sigevent sev;
  memset(&sev, 0, sizeof sev);
  sev.sigev_notify = SIGEV_SIGNAL;
  sev.sigev_signo = SIGRTMIN + 1;
  timer_create(CLOCK_MONOTONIC, &sev, &tm); /* a second one, so the id is not just 0 */
  timer_t tm2;
  if (timer_create(CLOCK_MONOTONIC, &sev, &tm2)) wl_fail("timer_create: %s", strerror(errno));
  timer_delete(tm);
  struct itimerspec its = {{7, 0}, {500, 0}};
  timer_settime(tm2, 0, &its, NULL);
  wl_say("INFO timer=%ld", (long)(intptr_t)tm2);
  wl_ready();
  while (!wl_check_requested) pause();

  sigset_t pend, cur;
  sigpending(&pend);
  if (!sigismember(&pend, SIGUSR1)) wl_fail("SIGUSR1 is no longer pending");
  if (!sigismember(&pend, SIGRTMIN)) wl_fail("SIGRTMIN is no longer pending");
  sigprocmask(SIG_BLOCK, NULL, &cur);
  if (!sigismember(&cur, SIGUSR1) || !sigismember(&cur, SIGRTMIN + 1)) wl_fail("blocked mask changed");
  struct itimerval rem;
  getitimer(ITIMER_REAL, &rem);
  if (rem.it_value.tv_sec < 900 || rem.it_value.tv_sec > 1000) wl_fail("itimer has %ld s left", (long)rem.it_value.tv_sec);
  struct itimerspec trem;
  if (timer_gettime(tm2, &trem)) wl_fail("timer %ld is gone: %s", (long)(intptr_t)tm2, strerror(errno));
  if (trem.it_value.tv_sec < 400 || trem.it_value.tv_sec > 500 || trem.it_interval.tv_sec != 7)
    wl_fail("POSIX timer has %ld s left, interval %ld", (long)trem.it_value.tv_sec, (long)trem.it_interval.tv_sec);
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a); /* the vDSO */
  syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &b);
  double d = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
  if (d < 0 || d > 0.05) wl_fail("vDSO clock is off by %.6f s", d);
  sigset_t u1;
  sigemptyset(&u1);
  sigaddset(&u1, SIGUSR1);
  sigprocmask(SIG_UNBLOCK, &u1, NULL);
  if (usr1_runs != 1) wl_fail("SIGUSR1 handler ran %d times", (int)usr1_runs);
  if (usr1_frame < (uintptr_t)altstack || usr1_frame >= (uintptr_t)altstack + sizeof altstack)
    wl_fail("handler did not run on the alternate stack");
  siginfo_t si;
  sigset_t rt;
  sigemptyset(&rt);
  sigaddset(&rt, SIGRTMIN);
  struct timespec zero = {0, 0};
  if (sigtimedwait(&rt, &si, &zero) != SIGRTMIN) wl_fail("queued SIGRTMIN lost");
  if (si.si_value.sival_int != 1234) wl_fail("SIGRTMIN value %d", si.si_value.sival_int);
  wl_pass();
}
