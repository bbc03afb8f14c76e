/* Stopped tasks among running ones.  The parent runs; its children:
 *  A  stopped by SIGSTOP, with a SIGUSR1 sent after it stopped still
 *     pending (its handler must not run before SIGCONT);
 *  B  three threads, in a process group of its own, stopped by SIGTSTP
 *     (its main thread in read(2), the others in a loop);
 *  C  running (a counter in a loop): a sibling of the stopped ones;
 *  D  stopped by SIGSTOP while blocked in read(2) on a pipe.
 * The parent waits for each stop (WUNTRACED), prints "INFO a=A b=B c=C d=D"
 * and READY.  On SIGUSR2 it checks that A, B and D are stopped (T) and C
 * runs, that A's handler has not run, then continues them (SIGCONT, also
 * reported by waitpid WCONTINUED) and checks that A's handler ran once,
 * that every thread of B runs, that C's counter moves and that D reads
 * what is written to its pipe; PASS or FAIL: why.  The children die with
 * the parent.
 */
#include "wl.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>

static int report[2];  /* children -> parent: one letter per event */

static void die_with_parent(pid_t parent) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(1);
}

static void on_usr1(int sig) {
  (void)sig;
  ssize_t w = write(report[1], "u", 1);
  (void)w;
}

static volatile uint64_t b_ticks[2];
static void *b_thread(void *arg) {
  volatile uint64_t *t = arg;
  for (;;) {
    (*t)++;
    usleep(1000);
  }
  return NULL;
}

static volatile uint64_t *c_counter;

static char state_of(pid_t p) {
  char path[64], s[512];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)p);
  FILE *f = fopen(path, "r");
  if (!f) return '?';
  size_t n = fread(s, 1, sizeof s - 1, f);
  fclose(f);
  s[n] = 0;
  char *rp = strrchr(s, ')');
  return rp && rp[1] == ' ' ? rp[2] : '?';
}

/* The next letter from the children, or 0 after `ms` milliseconds. */
static char next_report(int ms) {
  for (int i = 0; i < ms; i++) {
    char c;
    if (read(report[0], &c, 1) == 1) return c;
    usleep(1000);
  }
  return 0;
}

int main(void) {
  wl_init();
  pid_t parent = getpid();
  if (pipe2(report, O_NONBLOCK) < 0) wl_fail("pipe");
  int d_pipe[2];
  if (pipe(d_pipe) < 0) wl_fail("pipe");
  c_counter = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

  pid_t a = fork();
  if (a == 0) {
    die_with_parent(parent);
    struct sigaction sa = {.sa_handler = on_usr1};
    sigaction(SIGUSR1, &sa, NULL);
    for (;;) pause();
  }
  int b_req[2];
  if (pipe(b_req) < 0) wl_fail("pipe");
  pid_t b = fork();
  if (b == 0) {
    die_with_parent(parent);
    setpgid(0, 0); /* a group with a parent outside it: SIGTSTP stops it */
    pthread_t t;
    for (int i = 0; i < 2; i++) pthread_create(&t, NULL, b_thread, (void *)&b_ticks[i]);
    close(b_req[1]);
    char ch;
    while (read(b_req[0], &ch, 1) == 1) { /* asked: do both threads run? */
      uint64_t t0 = b_ticks[0], t1 = b_ticks[1];
      usleep(50000);
      ssize_t w = write(report[1], b_ticks[0] != t0 && b_ticks[1] != t1 ? "b" : "x", 1);
      (void)w;
    }
    _exit(0);
  }
  close(b_req[0]);
  pid_t c = fork();
  if (c == 0) {
    die_with_parent(parent);
    for (;;) {
      (*c_counter)++;
      if ((*c_counter & 0xffff) == 0) usleep(100);
    }
  }
  pid_t d = fork();
  if (d == 0) {
    die_with_parent(parent);
    close(d_pipe[1]);
    char ch;
    while (read(d_pipe[0], &ch, 1) == 1) {
      ssize_t w = write(report[1], "d", 1);
      (void)w;
    }
    _exit(0);
  }
  close(d_pipe[0]);
  usleep(100000);  /* every child in its place: D in read(2), B's threads running */
  int st;
  kill(a, SIGSTOP);
  if (waitpid(a, &st, WUNTRACED) != a || !WIFSTOPPED(st)) wl_fail("A did not stop");
  kill(a, SIGUSR1); /* pending while A is stopped */
  kill(b, SIGTSTP);
  if (waitpid(b, &st, WUNTRACED) != b || !WIFSTOPPED(st) || WSTOPSIG(st) != SIGTSTP) wl_fail("B did not stop with SIGTSTP");
  kill(d, SIGSTOP);
  if (waitpid(d, &st, WUNTRACED) != d || !WIFSTOPPED(st)) wl_fail("D did not stop");
  wl_say("INFO a=%d b=%d c=%d d=%d", (int)a, (int)b, (int)c, (int)d);
  wl_ready();
  while (!wl_check_requested) pause();

  if (state_of(a) != 'T' || state_of(b) != 'T' || state_of(d) != 'T') wl_fail("A, B, D are %c %c %c, not stopped", state_of(a), state_of(b), state_of(d));
  char cs = state_of(c);
  if (cs != 'R' && cs != 'S') wl_fail("C is %c, not running", cs);
  uint64_t c0 = *c_counter;
  usleep(20000);
  if (*c_counter == c0) wl_fail("C's counter does not move");
  if (write(b_req[1], "q", 1) != 1) wl_fail("write B's pipe");
  if (next_report(200) != 0) wl_fail("a stopped child ran (A's handler, B or D)");

  kill(a, SIGCONT);
  if (waitpid(a, &st, WCONTINUED) != a || !WIFCONTINUED(st)) wl_fail("A was not reported continued");
  char r = next_report(5000);
  if (r != 'u') wl_fail("A's SIGUSR1 handler did not run after SIGCONT (got '%c')", r ? r : '0');
  if (next_report(100) != 0) wl_fail("A's handler ran twice");
  kill(-b, SIGCONT);
  if (waitpid(b, &st, WCONTINUED) != b || !WIFCONTINUED(st)) wl_fail("B was not reported continued");
  r = next_report(5000);
  if (r != 'b') wl_fail("B's threads do not all run after SIGCONT (got '%c')", r ? r : '0');
  kill(d, SIGCONT);
  if (write(d_pipe[1], "x", 1) != 1) wl_fail("write D's pipe");
  r = next_report(5000);
  if (r != 'd') wl_fail("D did not read its pipe after SIGCONT (got '%c')", r ? r : '0');
  kill(a, SIGKILL);
  kill(b, SIGKILL);
  kill(c, SIGKILL);
  kill(d, SIGKILL);
  while (wait(NULL) > 0) {
  }
  wl_pass();
}
