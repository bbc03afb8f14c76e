/* A tree of three processes (parent -> child -> grandchild) that share
 * a MAP_SHARED|MAP_ANONYMOUS region and a pipe with data in flight.
 *
 * Each process writes its own slot of the shared region and a private
 * region of its own, all with deterministic pseudo-random data.  The parent
 * wrote PIPE_BYTES into the pipe before forking; nobody reads them until the
 * check.  Once all three are set up, each prints
 *   INFO role=R pid=P shared=ADDR shared_len=L shared_fnv=X priv=ADDR priv_len=L priv_fnv=Y
 * and the parent prints READY.
 * On SIGUSR2 the parent forwards the signal to the child, which forwards it
 * to the grandchild; each checks its memory (and the grandchild the pipe
 * data), prints "INFO check role=R ok" or "INFO check role=R failed: why",
 * and exits 0 or 1.  The parent prints PASS only if its own check and both
 * descendants passed (it collects the child's status, which includes the
 * grandchild's).  Children die with their parent (PR_SET_PDEATHSIG). */
#include "wl.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#define SLOT (256 << 10)
#define PRIV (256 << 10)
#define PIPE_BYTES 3000

struct ctl {
  volatile int ready;
  volatile int reported;
};

static struct ctl *ctl;
static unsigned char *slots; /* 3 * SLOT, shared */
static unsigned char *priv;  /* PRIV, private to each process */
static int pfd[2];
static uint64_t shared_fnv, priv_fnv;

static void fill(unsigned char *p, size_t n, uint64_t seed) {
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = wl_rand(&seed);
    memcpy(p + i, &v, 8);
  }
}

static const char *check_fill(const unsigned char *p, size_t n, uint64_t seed) {
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = wl_rand(&seed);
    if (memcmp(p + i, &v, 8) != 0) return "data changed";
  }
  return NULL;
}

static unsigned char pipe_byte(int i) { return (unsigned char)(i * 13 + 5); }

/* Returns NULL if this process's state is intact, else why not. */
static const char *check_self(int role) {
  static char why[128];
  const char *bad;
  if ((bad = check_fill(slots + role * SLOT, SLOT, 0xabc0 + role))) return "own shared slot changed";
  if (wl_fnv64(slots, 3 * SLOT) != shared_fnv) return "shared region checksum changed";
  if ((bad = check_fill(priv, PRIV, 0xdef0 + role))) return "private region changed";
  if (wl_fnv64(priv, PRIV) != priv_fnv) return "private checksum changed";
  if (ctl->ready != 3 || ctl->reported != 3) return "control counters changed";
  if (role == 2) {
    unsigned char buf[PIPE_BYTES + 1];
    size_t got = 0;
    fcntl(pfd[0], F_SETFL, O_NONBLOCK);
    while (got < sizeof buf) {
      ssize_t n = read(pfd[0], buf + got, sizeof buf - got);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      got += (size_t)n;
    }
    if (got != PIPE_BYTES) {
      snprintf(why, sizeof why, "pipe held %zu bytes, not %d", got, PIPE_BYTES);
      return why;
    }
    for (int i = 0; i < PIPE_BYTES; i++)
      if (buf[i] != pipe_byte(i)) return "pipe data changed";
  }
  return NULL;
}

static void run(void) {
  int role = 0;
  pid_t kid = 0;
  for (;;) {
    fill(slots + role * SLOT, SLOT, 0xabc0 + role);
    fill(priv, PRIV, 0xdef0 + role);
    if (role == 2) break;
    pid_t parent = getpid();
    kid = fork();
    if (kid < 0) wl_fail("fork: %s", strerror(errno));
    if (kid > 0) break;
    /* the new process: one level down */
    role++;
    kid = 0;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
  }
  __atomic_add_fetch(&ctl->ready, 1, __ATOMIC_SEQ_CST);
  while (__atomic_load_n(&ctl->ready, __ATOMIC_SEQ_CST) < 3) usleep(1000);
  shared_fnv = wl_fnv64(slots, 3 * SLOT);
  priv_fnv = wl_fnv64(priv, PRIV);
  wl_say("INFO role=%d pid=%d shared=%#lx shared_len=%d shared_fnv=%#lx priv=%#lx priv_len=%d priv_fnv=%#lx", role,
         (int)getpid(), (unsigned long)slots, 3 * SLOT, (unsigned long)shared_fnv, (unsigned long)priv, PRIV,
         (unsigned long)priv_fnv);
  __atomic_add_fetch(&ctl->reported, 1, __ATOMIC_SEQ_CST);
  if (role == 0) {
    while (__atomic_load_n(&ctl->reported, __ATOMIC_SEQ_CST) < 3) usleep(1000);
    wl_ready();
  }
  while (!wl_check_requested) usleep(1000);
  if (kid) kill(kid, SIGUSR2);
  const char *bad = check_self(role);
  if (bad)
    wl_say("INFO check role=%d failed: %s", role, bad);
  else
    wl_say("INFO check role=%d ok", role);
  int kid_ok = 1;
  if (kid) {
    int st;
    while (waitpid(kid, &st, 0) < 0 && errno == EINTR) {
    }
    kid_ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
  }
  if (role > 0) _exit(bad || !kid_ok ? 1 : 0);
  if (bad) wl_fail("parent: %s", bad);
  if (!kid_ok) wl_fail("a descendant failed its check");
  wl_pass();
}

int main(void) {
  wl_init();
  ctl = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  slots = mmap(NULL, 3 * SLOT, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  priv = mmap(NULL, PRIV, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (ctl == MAP_FAILED || slots == MAP_FAILED || priv == MAP_FAILED) wl_fail("mmap: %s", strerror(errno));
  if (pipe(pfd) != 0) wl_fail("pipe: %s", strerror(errno));
  unsigned char buf[PIPE_BYTES];
  for (int i = 0; i < PIPE_BYTES; i++) buf[i] = pipe_byte(i);
  if (write(pfd[1], buf, sizeof buf) != (ssize_t)sizeof buf) wl_fail("pipe write");
  run();
  return 0;
}
