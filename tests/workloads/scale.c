/* N of one resource, for the scale figures of make bench (tests/bench/criu.sh).
 *
 * usage: scale KIND N
 *   procs    the root and N-1 children, each holding a value made from its
 *            index; on SIGUSR2 the root signals every child, each checks its
 *            value and exits 0 or 1, and the root checks every exit status
 *   threads  the main thread and N-1 others, each holding a value in TLS,
 *            checked by each when main asks on SIGUSR2
 *   fds      N more fds (from 100 up), each /dev/null opened anew, with
 *            FD_CLOEXEC on every odd one; checked: open, /dev/null, flags
 *   vmas     N one-page anonymous mappings, each with its own value, read-only
 *            and read-write in turn so that no two merge; checked: the values,
 *            and that /proc/self/maps still holds at least N entries
 * Prints READY when set up; on SIGUSR2 prints PASS or FAIL (wl.h protocol). */
#include "wl.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>

static uint64_t value_for(long i) { return 0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1) ^ 0x5bd1e995; }

static long n;

/* procs */
static void child_main(long i) {
  volatile uint64_t v = value_for(i);
  while (!wl_check_requested) pause();
  exit(v == value_for(i) ? 0 : 1);
}

static void run_procs(void) {
  pid_t *kids = calloc((size_t)n, sizeof *kids);
  for (long i = 1; i < n; i++) {
    pid_t p = fork();
    if (p < 0) wl_fail("fork: %s", strerror(errno));
    if (p == 0) child_main(i);
    kids[i] = p;
  }
  wl_ready();
  while (!wl_check_requested) pause();
  for (long i = 1; i < n; i++)
    if (kill(kids[i], SIGUSR2) != 0) wl_fail("child %ld (pid %d): %s", i, (int)kids[i], strerror(errno));
  for (long i = 1; i < n; i++) {
    int st;
    if (waitpid(kids[i], &st, 0) != kids[i]) wl_fail("waitpid %d: %s", (int)kids[i], strerror(errno));
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) wl_fail("child %ld failed its check (status %#x)", i, st);
  }
  wl_pass();
}

/* threads */
static __thread uint64_t tls_value;
static volatile int stop_threads;
static volatile long bad_threads;
static volatile long started_threads;

static void *thread_main(void *arg) {
  long i = (long)arg;
  tls_value = value_for(i);
  __atomic_add_fetch(&started_threads, 1, __ATOMIC_SEQ_CST);
  while (!stop_threads) usleep(100000);
  if (tls_value != value_for(i)) __atomic_add_fetch(&bad_threads, 1, __ATOMIC_SEQ_CST);
  return NULL;
}

static void run_threads(void) {
  pthread_t *t = calloc((size_t)n, sizeof *t);
  sigset_t usr2;
  sigemptyset(&usr2);
  sigaddset(&usr2, SIGUSR2);
  pthread_sigmask(SIG_BLOCK, &usr2, NULL);  // SIGUSR2 goes to main
  pthread_attr_t a;
  pthread_attr_init(&a);
  pthread_attr_setstacksize(&a, 64 << 10);
  for (long i = 1; i < n; i++)
    if ((errno = pthread_create(&t[i], &a, thread_main, (void *)i)) != 0) wl_fail("pthread_create: %s", strerror(errno));
  pthread_sigmask(SIG_UNBLOCK, &usr2, NULL);
  while (__atomic_load_n(&started_threads, __ATOMIC_SEQ_CST) < n - 1) usleep(1000);
  tls_value = value_for(0);
  wl_ready();
  while (!wl_check_requested) pause();
  stop_threads = 1;
  for (long i = 1; i < n; i++) pthread_join(t[i], NULL);
  if (bad_threads) wl_fail("%ld threads lost their TLS value", bad_threads);
  if (tls_value != value_for(0)) wl_fail("main thread lost its TLS value");
  wl_pass();
}

/* fds */
static void run_fds(void) {
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur < (rlim_t)n + 200) {
    rl.rlim_cur = (rlim_t)n + 200;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) wl_fail("setrlimit NOFILE %ld: %s", n + 200, strerror(errno));
  }
  for (long i = 0; i < n; i++) {
    int fd = open("/dev/null", O_RDWR | ((i & 1) ? O_CLOEXEC : 0));
    if (fd < 0) wl_fail("open /dev/null: %s", strerror(errno));
    if (dup2(fd, (int)(100 + i)) < 0) wl_fail("dup2 %ld: %s", 100 + i, strerror(errno));
    if ((i & 1) && fcntl((int)(100 + i), F_SETFD, FD_CLOEXEC) != 0) wl_fail("F_SETFD: %s", strerror(errno));
    close(fd);
  }
  wl_ready();
  while (!wl_check_requested) pause();
  for (long i = 0; i < n; i++) {
    int fd = (int)(100 + i);
    struct stat st;
    if (fstat(fd, &st) != 0) wl_fail("fd %d: %s", fd, strerror(errno));
    if (!S_ISCHR(st.st_mode) || st.st_rdev != makedev(1, 3)) wl_fail("fd %d is not /dev/null", fd);
    int fl = fcntl(fd, F_GETFD);
    if (fl < 0 || !!(fl & FD_CLOEXEC) != (int)(i & 1)) wl_fail("fd %d: FD_CLOEXEC %d", fd, fl);
  }
  wl_pass();
}

/* vmas */
static void run_vmas(void) {
  long pg = sysconf(_SC_PAGESIZE);
  char **at = calloc((size_t)n, sizeof *at);
  // One reservation, then a page in turn read-only and read-write: no merging.
  char *base = mmap(NULL, (size_t)(n * pg), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) wl_fail("mmap: %s", strerror(errno));
  for (long i = 0; i < n; i++) {
    at[i] = base + i * pg;
    *(uint64_t *)at[i] = value_for(i);
  }
  for (long i = 0; i < n; i += 2)
    if (mprotect(at[i], (size_t)pg, PROT_READ) != 0) wl_fail("mprotect: %s", strerror(errno));
  wl_ready();
  while (!wl_check_requested) pause();
  for (long i = 0; i < n; i++)
    if (*(uint64_t *)at[i] != value_for(i)) wl_fail("vma %ld lost its value", i);
  FILE *m = fopen("/proc/self/maps", "r");
  long lines = 0;
  int c;
  while (m && (c = fgetc(m)) != EOF) lines += c == '\n';
  if (m) fclose(m);
  if (lines < n) wl_fail("%ld mappings, want at least %ld", lines, n);
  wl_pass();
}

int main(int argc, char **argv) {
  if (argc != 3 || (n = strtol(argv[2], NULL, 10)) < 1) {
    fprintf(stderr, "usage: scale procs|threads|fds|vmas N\n");
    return 3;
  }
  wl_init();
  if (!strcmp(argv[1], "procs")) run_procs();
  else if (!strcmp(argv[1], "threads")) run_threads();
  else if (!strcmp(argv[1], "fds")) run_fds();
  else if (!strcmp(argv[1], "vmas")) run_vmas();
  fprintf(stderr, "scale: unknown kind '%s'\n", argv[1]);
  return 3;
}
