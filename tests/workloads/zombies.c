/* A parent with two children it has not waited for (zombies) and one that
 * runs: A exited with status 42, B was killed by SIGTERM, C pauses.  The
 * parent counts the SIGCHLDs it gets (2 by the time it is READY; one child
 * dies at a time, so none is merged with another).
 *     INFO zombies=A,B alive=C
 * On SIGUSR2 it checks that no SIGCHLD came since, that A and B are still
 * there to be waited for with their statuses, and that C still runs; then
 * it kills and reaps C.  PASS or FAIL. */
#include "wl.h"

#include <sys/wait.h>

static volatile sig_atomic_t chld;

static void on_chld(int sig) {
  (void)sig;
  chld++;
}

static void wait_chld(int n) {
  while (chld < n) usleep(1000);
}

int main(void) {
  wl_init();
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_chld;
  sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
  sigaction(SIGCHLD, &sa, NULL);
  pid_t a = fork();
  if (a == 0) _exit(42);
  wait_chld(1);
  pid_t b = fork();
  if (b == 0) {
    for (;;) pause();
  }
  kill(b, SIGTERM);
  wait_chld(2);
  pid_t c = fork();
  if (c == 0) {
    for (;;) pause();
  }
  wl_ready();
  wl_say("INFO zombies=%d,%d alive=%d", (int)a, (int)b, (int)c);
  while (!wl_check_requested) pause();
  if (chld != 2) wl_fail("%d SIGCHLDs, not 2", (int)chld);
  int st;
  if (waitpid(a, &st, WNOHANG) != a || !WIFEXITED(st) || WEXITSTATUS(st) != 42) wl_fail("child %d: status %#x, not exit 42", (int)a, st);
  if (waitpid(b, &st, WNOHANG) != b || !WIFSIGNALED(st) || WTERMSIG(st) != SIGTERM)
    wl_fail("child %d: status %#x, not killed by SIGTERM", (int)b, st);
  if (waitpid(c, &st, WNOHANG) != 0) wl_fail("child %d is gone", (int)c);
  kill(c, SIGKILL);
  if (waitpid(c, &st, 0) != c || !WIFSIGNALED(st)) wl_fail("child %d: status %#x after SIGKILL", (int)c, st);
  wl_pass();
}
