/* A tree of 10 processes: the root forks 9 children, each with 256 KiB of
 * its own pseudo-random data (seeded by its index) and asleep in a loop.
 * Prints READY once every child is set up.  On SIGUSR2 the root checks its
 * own data, sends SIGUSR2 to every child (each checks its data and exits 0,
 * or 1 with a message), and passes when all 9 exited 0 and are still its
 * children.  Used by tests/bench/restore.sh (the 10-process restore time). */
#include "wl.h"

#include <sys/mman.h>
#include <sys/wait.h>

#define KIDS 9
#define LEN (256 << 10)

static uint64_t *fill(int idx) {
  uint64_t *p = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) wl_fail("mmap: %s", strerror(errno));
  uint64_t s = 0xabcdef12345ULL + (uint64_t)idx;
  for (size_t i = 0; i < LEN / 8; i++) p[i] = wl_rand(&s);
  return p;
}

static int check(const uint64_t *p, int idx) {
  uint64_t s = 0xabcdef12345ULL + (uint64_t)idx;
  for (size_t i = 0; i < LEN / 8; i++)
    if (p[i] != wl_rand(&s)) return 0;
  return 1;
}

int main(void) {
  wl_init();
  int ready[2];
  if (pipe(ready) != 0) wl_fail("pipe: %s", strerror(errno));
  pid_t kids[KIDS];
  for (int k = 0; k < KIDS; k++) {
    kids[k] = fork();
    if (kids[k] < 0) wl_fail("fork: %s", strerror(errno));
    if (kids[k] == 0) {
      close(ready[0]);
      uint64_t *mine = fill(k + 1);
      if (write(ready[1], "r", 1) != 1) _exit(2);
      close(ready[1]);
      while (!wl_check_requested) usleep(20000);
      if (!check(mine, k + 1)) wl_fail("child %d: data changed", k + 1);
      _exit(0);
    }
  }
  close(ready[1]);
  for (int k = 0; k < KIDS; k++) {
    char c;
    if (read(ready[0], &c, 1) != 1) wl_fail("a child died before it was ready");
  }
  close(ready[0]);
  uint64_t *mine = fill(0);
  wl_ready();
  while (!wl_check_requested) usleep(20000);
  if (!check(mine, 0)) wl_fail("root: data changed");
  for (int k = 0; k < KIDS; k++)
    if (kill(kids[k], SIGUSR2) != 0) wl_fail("child %d (pid %d): %s", k + 1, (int)kids[k], strerror(errno));
  for (int k = 0; k < KIDS; k++) {
    int st;
    if (waitpid(kids[k], &st, 0) != kids[k]) wl_fail("child %d (pid %d) is not ours: %s", k + 1, (int)kids[k], strerror(errno));
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) wl_fail("child %d (pid %d) failed its check (status %#x)", k + 1, (int)kids[k], st);
  }
  wl_pass();
}
