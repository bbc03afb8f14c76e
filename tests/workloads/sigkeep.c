/* Signal state a dump must not disturb: SIGTRAP blocked with a handler of
 * its own (a forced trap in the task would reset that handler and unblock
 * it), SIGSYS ignored, and SIGUSR1 caught and counted (one sent while the
 * task is frozen must still arrive once, after).  On SIGUSR2: checks all of
 * it, reports INFO usr1=N, PASS or FAIL. */
#include "wl.h"

static volatile sig_atomic_t traps, usr1;
static void on_trap(int sig) { (void)sig; traps++; }
static void on_usr1(int sig) { (void)sig; usr1++; }

int main(void) {
  wl_init();
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_trap;
  sigaction(SIGTRAP, &sa, NULL);
  sa.sa_handler = on_usr1;
  sigaction(SIGUSR1, &sa, NULL);
  signal(SIGSYS, SIG_IGN);
  sigset_t m;
  sigemptyset(&m);
  sigaddset(&m, SIGTRAP);
  sigprocmask(SIG_BLOCK, &m, NULL);
  wl_ready();
  while (!wl_check_requested) usleep(2000);
  sigset_t now;
  sigprocmask(SIG_BLOCK, NULL, &now);
  struct sigaction cur;
  sigaction(SIGTRAP, NULL, &cur);
  if (!sigismember(&now, SIGTRAP)) wl_fail("SIGTRAP is not blocked any more");
  if (cur.sa_handler != on_trap) wl_fail("the SIGTRAP handler was reset");
  sigaction(SIGSYS, NULL, &cur);
  if (cur.sa_handler != SIG_IGN) wl_fail("SIGSYS is not ignored any more");
  if (traps) wl_fail("%d SIGTRAPs arrived", (int)traps);
  wl_say("INFO usr1=%d", (int)usr1);
  wl_pass();
}
