/* Every kind of file lock, held across a restore:
 *  - fd 30: an exclusive flock on DIR/a;
 *  - fd 31: POSIX locks on DIR/b: write on bytes 10-19, read from 100 to
 *    EOF; the child, through the same description, holds its own POSIX
 *    write lock on bytes 50-59;
 *  - fd 32: an OFD write lock on bytes 0-99 of DIR/c;
 *  - fd 33: a read lease on DIR/d.
 * On SIGUSR2 the parent checks each from the outside: a new description
 * cannot take the flock or the OFD lock, F_GETLK names the child as the
 * owner of bytes 50-59 and the child names the parent for 10-19 and
 * 100-EOF, F_GETLEASE says read; PASS or FAIL: why.  The child dies with
 * the parent.
 *
 * usage: locks DIR   (files a, b, c, d are made there)
 */
#include "wl.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/wait.h>

enum { F_FLOCK = 30, F_POSIX, F_OFD, F_LEASE };

static char dir[256];
static char buf[512];
static const char *in_dir(const char *name) {
  snprintf(buf, sizeof buf, "%s/%s", dir, name);
  return buf;
}

static void at(int fd, int target, const char *what) {
  if (fd < 0) wl_fail("setup %s: %s", what, strerror(errno));
  if (fd != target) {
    if (dup2(fd, target) != target) wl_fail("setup dup2 %s: %s", what, strerror(errno));
    close(fd);
  }
}

static int setlk(int fd, int cmd, short type, off_t start, off_t len) {
  struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
  return fcntl(fd, cmd, &fl);
}

/* Who holds bytes [start, start+len) against a write lock (F_GETLK): the
 * pid, 0 if nobody. */
static pid_t holder(int fd, off_t start, off_t len) {
  struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
  if (fcntl(fd, F_GETLK, &fl) < 0) wl_fail("F_GETLK: %s", strerror(errno));
  return fl.l_type == F_UNLCK ? 0 : fl.l_pid;
}

static int to_child[2], from_child[2];

static void child_main(pid_t parent) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(1);
  if (setlk(F_POSIX, F_SETLK, F_WRLCK, 50, 10) < 0) wl_fail("child lock: %s", strerror(errno));
  if (write(from_child[1], "r", 1) != 1) _exit(1);
  char c;
  while (read(to_child[0], &c, 1) == 1) {
    /* Report who holds the parent's ranges, seen from here. */
    char msg[64];
    int n = snprintf(msg, sizeof msg, "%d %d\n", (int)holder(F_POSIX, 10, 10), (int)holder(F_POSIX, 200, 1));
    if (write(from_child[1], msg, n) != n) _exit(1);
  }
  _exit(0);
}

int main(int argc, char **argv) {
  if (argc < 2) wl_fail("usage: locks DIR");
  snprintf(dir, sizeof dir, "%s", argv[1]);
  wl_init();
  at(open(in_dir("a"), O_CREAT | O_RDWR, 0600), F_FLOCK, "a");
  if (flock(F_FLOCK, LOCK_EX | LOCK_NB) < 0) wl_fail("flock: %s", strerror(errno));
  at(open(in_dir("b"), O_CREAT | O_RDWR, 0600), F_POSIX, "b");
  if (setlk(F_POSIX, F_SETLK, F_WRLCK, 10, 10) < 0 || setlk(F_POSIX, F_SETLK, F_RDLCK, 100, 0) < 0)
    wl_fail("posix locks: %s", strerror(errno));
  at(open(in_dir("c"), O_CREAT | O_RDWR, 0600), F_OFD, "c");
  if (setlk(F_OFD, F_OFD_SETLK, F_WRLCK, 0, 100) < 0) wl_fail("ofd lock: %s", strerror(errno));
  close(open(in_dir("d"), O_CREAT | O_WRONLY, 0600));
  at(open(in_dir("d"), O_RDONLY), F_LEASE, "d");
  if (fcntl(F_LEASE, F_SETLEASE, F_RDLCK) < 0) wl_fail("lease: %s", strerror(errno));
  if (pipe(to_child) < 0 || pipe(from_child) < 0) wl_fail("pipe");
  pid_t parent = getpid();
  pid_t child = fork();
  if (child == 0) child_main(parent);
  char c;
  if (read(from_child[0], &c, 1) != 1) wl_fail("the child did not start");
  wl_say("INFO child=%d", (int)child);
  wl_ready();
  while (!wl_check_requested) pause();

  int a = open(in_dir("a"), O_RDWR);
  if (flock(a, LOCK_EX | LOCK_NB) == 0 || errno != EWOULDBLOCK) wl_fail("the flock on a is not held");
  close(a);
  int c2 = open(in_dir("c"), O_RDWR);
  struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 100};
  if (fcntl(c2, F_OFD_GETLK, &fl) < 0 || fl.l_type != F_WRLCK || fl.l_pid != -1) wl_fail("the OFD lock on c is not held");
  if (setlk(c2, F_OFD_SETLK, F_RDLCK, 50, 1) == 0) wl_fail("a read lock inside the OFD lock was granted");
  if (setlk(c2, F_OFD_SETLK, F_RDLCK, 100, 1) < 0) wl_fail("past the OFD lock: %s", strerror(errno));
  close(c2);
  pid_t h = holder(F_POSIX, 50, 10);
  if (h != child) wl_fail("bytes 50-59 of b are held by %d, not the child %d", (int)h, (int)child);
  if (holder(F_POSIX, 30, 10) != 0) wl_fail("bytes 30-39 of b are locked");
  if (write(to_child[1], "q", 1) != 1) wl_fail("ask the child");
  char msg[64] = {0};
  if (read(from_child[0], msg, sizeof msg - 1) <= 0) wl_fail("the child did not answer");
  int p1 = 0, p2 = 0;
  if (sscanf(msg, "%d %d", &p1, &p2) != 2 || p1 != parent || p2 != parent)
    wl_fail("the child sees bytes 10-19 of b held by %d and byte 200 by %d, not the parent %d", p1, p2, (int)parent);
  int lease = fcntl(F_LEASE, F_GETLEASE);
  if (lease != F_RDLCK) wl_fail("the lease on d is %d, not F_RDLCK", lease);
  kill(child, SIGKILL);
  waitpid(child, NULL, 0);
  wl_pass();
}
