/* Four threads, each with its own __thread variables and a counter.
 *
 * Each worker i keeps in TLS: its index, a value derived from it, the
 * address of its own TLS block, its tid, and a private count that it
 * increments in lock-step with its slot in a global array.  The workers
 * check all of that on every iteration, so a restore that mixes up thread
 * registers (fs base), TLS contents or tids is caught.
 * Reports INFO tid<i>=TID tls<i>=ADDR for each; on SIGUSR2 the main thread
 * stops the workers, each reports its verdict, and main prints PASS/FAIL. */
#include "wl.h"

#include <pthread.h>
#include <sys/syscall.h>

#define NT 4

static __thread int tls_index = -1;
static __thread uint64_t tls_value;
static __thread uint64_t tls_count;
static __thread void *tls_self;
static __thread pid_t tls_tid;

static volatile uint64_t counts[NT];
static volatile int stop;
static volatile int started;
static char verdict[NT][160];
static pid_t tids[NT];
static void *tls_addrs[NT];

static uint64_t value_for(int i) { return 0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1); }

static void *worker(void *arg) {
  int i = (int)(intptr_t)arg;
  tls_index = i;
  tls_value = value_for(i);
  tls_self = (void *)&tls_index;
  tls_tid = (pid_t)syscall(SYS_gettid);
  tids[i] = tls_tid;
  tls_addrs[i] = tls_self;
  __atomic_add_fetch(&started, 1, __ATOMIC_SEQ_CST);
  const char *bad = NULL;
  while (!stop && !bad) {
    tls_count++;
    counts[i]++;
    if (tls_index != i) bad = "tls index changed";
    else if (tls_value != value_for(i)) bad = "tls value changed";
    else if (tls_self != (void *)&tls_index) bad = "tls block moved";
    else if (tls_count != counts[i]) bad = "tls count and global count differ";
    if ((tls_count & 0xffff) == 0) usleep(500);
  }
  if (!bad && tls_tid != (pid_t)syscall(SYS_gettid)) bad = "tid changed";
  if (!bad && tls_count == 0) bad = "never ran";
  snprintf(verdict[i], sizeof verdict[i], "%s", bad ? bad : "ok");
  return NULL;
}

int main(void) {
  wl_init();
  /* The workers leave SIGUSR2 to the main thread. */
  sigset_t usr2, old;
  sigemptyset(&usr2);
  sigaddset(&usr2, SIGUSR2);
  pthread_sigmask(SIG_BLOCK, &usr2, &old);
  pthread_t th[NT];
  for (int i = 0; i < NT; i++)
    if (pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i) != 0) wl_fail("pthread_create");
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  while (__atomic_load_n(&started, __ATOMIC_SEQ_CST) < NT) usleep(1000);
  for (int i = 0; i < NT; i++) wl_say("INFO tid%d=%d tls%d=%p", i, (int)tids[i], i, tls_addrs[i]);
  wl_ready();
  while (!wl_check_requested) usleep(1000);
  uint64_t seen[NT];
  for (int i = 0; i < NT; i++) seen[i] = counts[i];
  /* Each thread must count on; on a loaded machine one may wait long for
     a CPU, so give them up to 10 s, not a fixed slice. */
  for (int i = 0; i < NT; i++) {
    int waited = 0;
    while (__atomic_load_n(&counts[i], __ATOMIC_SEQ_CST) == seen[i] && waited < 10000) {
      usleep(1000);
      waited++;
    }
    if (__atomic_load_n(&counts[i], __ATOMIC_SEQ_CST) == seen[i]) wl_fail("thread %d is not running", i);
  }
  stop = 1;
  for (int i = 0; i < NT; i++) pthread_join(th[i], NULL);
  for (int i = 0; i < NT; i++)
    if (strcmp(verdict[i], "ok") != 0) wl_fail("thread %d: %s", i, verdict[i]);
  wl_pass();
}
