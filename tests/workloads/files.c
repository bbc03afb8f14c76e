/* One fd of every kind ck dumps and restores, at fixed numbers (20..35):
 * a pipe with 3000 bytes in flight, a semaphore eventfd at 42, an epoll on
 * the pipe and the eventfd with distinct data, a timerfd armed for 100 s
 * (5 s interval, cloexec), a signalfd for SIGUSR1, inotify watching /tmp
 * (wd 1) and the scratch directory (wd 3, wd 2 removed), a 1 MiB memfd with
 * seals at offset 4096, a deleted file with contents, a file opened O_APPEND,
 * a file at offset 1234 and a dup of it, /dev/null, a FIFO with 100 bytes,
 * the scratch directory.  On SIGUSR2 it checks all of them (PASS/FAIL);
 * it must also pass when never dumped.
 *
 * usage: files [SCRATCH_DIR]   (default: a new directory under /tmp,
 * removed at exit; a given one is left, minus the files made here)
 */
#include "wl.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/timerfd.h>

enum {
  F_NULL = 20, F_PIPE_R, F_PIPE_W, F_EVENTFD, F_EPOLL, F_TIMERFD, F_SIGNALFD, F_INOTIFY, F_MEMFD,
  F_DELETED, F_APPEND, F_OFFSET, F_OFFSET_DUP, F_FIFO_R, F_FIFO_W, F_DIR, F_LAST
};
#define PIPE_BYTES 3000
#define FIFO_BYTES 100
#define MEMFD_BYTES (1 << 20)
static const char deleted_text[] = "contents of a deleted file";

static char dir[256];
static int own_dir;
static char path_buf[320];

static const char *in_dir(const char *name) {
  snprintf(path_buf, sizeof path_buf, "%s/%s", dir, name);
  return path_buf;
}

static unsigned char pat(size_t i, unsigned salt) { return (unsigned char)((i * 7 + salt) ^ (i >> 8)); }

static void cleanup(void) {
  const char *names[] = {"fifo", "append", "offset", "watched"};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) unlink(in_dir(names[i]));
  if (own_dir) rmdir(dir);
}

static void at(int fd, int target, const char *what) {
  if (fd < 0) wl_fail("setup %s: %s", what, strerror(errno));
  if (fd != target) {
    if (dup2(fd, target) != target) wl_fail("setup dup2 %s: %s", what, strerror(errno));
    close(fd);
  }
}

static void setup(void) {
  at(open("/dev/null", O_RDWR), F_NULL, "/dev/null");
  int pp[2];
  if (pipe(pp) < 0) wl_fail("pipe: %s", strerror(errno));
  at(pp[0], F_PIPE_R, "pipe");
  at(pp[1], F_PIPE_W, "pipe");
  char data[PIPE_BYTES];
  for (size_t i = 0; i < sizeof data; i++) data[i] = (char)pat(i, 1);
  if (write(F_PIPE_W, data, sizeof data) != sizeof data) wl_fail("pipe write");
  at(eventfd(42, EFD_SEMAPHORE | EFD_NONBLOCK), F_EVENTFD, "eventfd");
  at(epoll_create1(0), F_EPOLL, "epoll");
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0x1111};
  if (epoll_ctl(F_EPOLL, EPOLL_CTL_ADD, F_PIPE_R, &ev) < 0) wl_fail("epoll_ctl: %s", strerror(errno));
  ev.data.u64 = 0x2222;
  if (epoll_ctl(F_EPOLL, EPOLL_CTL_ADD, F_EVENTFD, &ev) < 0) wl_fail("epoll_ctl: %s", strerror(errno));
  at(timerfd_create(CLOCK_MONOTONIC, 0), F_TIMERFD, "timerfd");
  fcntl(F_TIMERFD, F_SETFD, FD_CLOEXEC);
  struct itimerspec its = {{5, 0}, {100, 0}};
  if (timerfd_settime(F_TIMERFD, 0, &its, NULL) < 0) wl_fail("timerfd_settime: %s", strerror(errno));
  sigset_t ss;
  sigemptyset(&ss);
  sigaddset(&ss, SIGUSR1);
  sigprocmask(SIG_BLOCK, &ss, NULL);
  at(signalfd(-1, &ss, SFD_NONBLOCK), F_SIGNALFD, "signalfd");
  at(inotify_init1(0), F_INOTIFY, "inotify");
  if (inotify_add_watch(F_INOTIFY, "/tmp", IN_CREATE) != 1) wl_fail("inotify watch /tmp is not wd 1");
  close(open(in_dir("watched"), O_CREAT | O_WRONLY, 0600));
  if (inotify_add_watch(F_INOTIFY, in_dir("watched"), IN_MODIFY) != 2) wl_fail("inotify watch is not wd 2");
  if (inotify_add_watch(F_INOTIFY, dir, IN_CREATE | IN_DELETE) != 3) wl_fail("inotify watch is not wd 3");
  inotify_rm_watch(F_INOTIFY, 2);
  at(memfd_create("ck-wl-files", MFD_ALLOW_SEALING), F_MEMFD, "memfd");
  char *m = malloc(MEMFD_BYTES);
  for (size_t i = 0; i < MEMFD_BYTES; i++) m[i] = (char)pat(i, 3);
  if (write(F_MEMFD, m, MEMFD_BYTES) != MEMFD_BYTES) wl_fail("memfd write");
  free(m);
  fcntl(F_MEMFD, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW);
  lseek(F_MEMFD, 4096, SEEK_SET);
  at(open(in_dir("deleted"), O_CREAT | O_RDWR, 0640), F_DELETED, "deleted");
  if (write(F_DELETED, deleted_text, sizeof deleted_text) != sizeof deleted_text) wl_fail("deleted write");
  unlink(in_dir("deleted"));
  lseek(F_DELETED, 5, SEEK_SET);
  at(open(in_dir("append"), O_CREAT | O_TRUNC | O_WRONLY | O_APPEND, 0600), F_APPEND, "append");
  if (write(F_APPEND, "hello\n", 6) != 6) wl_fail("append write");
  at(open(in_dir("offset"), O_CREAT | O_TRUNC | O_RDWR, 0600), F_OFFSET, "offset");
  char x[4000];
  memset(x, 'x', sizeof x);
  if (write(F_OFFSET, x, sizeof x) != sizeof x) wl_fail("offset write");
  lseek(F_OFFSET, 1234, SEEK_SET);
  dup2(F_OFFSET, F_OFFSET_DUP);
  unlink(in_dir("fifo"));
  if (mkfifo(in_dir("fifo"), 0600) < 0) wl_fail("mkfifo: %s", strerror(errno));
  at(open(in_dir("fifo"), O_RDONLY | O_NONBLOCK), F_FIFO_R, "fifo");
  at(open(in_dir("fifo"), O_WRONLY), F_FIFO_W, "fifo");
  char f[FIFO_BYTES];
  for (size_t i = 0; i < sizeof f; i++) f[i] = (char)pat(i, 5);
  if (write(F_FIFO_W, f, sizeof f) != sizeof f) wl_fail("fifo write");
  at(open(dir, O_RDONLY | O_DIRECTORY), F_DIR, "dir");
}

#define CHECK(cond, ...) \
  do {                   \
    if (!(cond)) {       \
      cleanup();         \
      wl_fail(__VA_ARGS__); \
    }                    \
  } while (0)

static void verify(void) {
  struct stat st;
  for (int fd = F_NULL; fd < F_LAST; fd++) CHECK(fcntl(fd, F_GETFD) >= 0, "fd %d is not open", fd);
  CHECK(fstat(F_NULL, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3), "/dev/null is not 1:3");
  CHECK((fcntl(F_NULL, F_GETFL) & O_ACCMODE) == O_RDWR, "/dev/null is not O_RDWR");
  int q = -1;
  ioctl(F_PIPE_R, FIONREAD, &q);
  CHECK(q == PIPE_BYTES, "pipe holds %d bytes, want %d", q, PIPE_BYTES);
  CHECK((fcntl(F_PIPE_W, F_GETFL) & O_ACCMODE) == O_WRONLY, "pipe write end is not O_WRONLY");
  struct epoll_event evs[8];
  int n = epoll_wait(F_EPOLL, evs, 8, 0);
  uint64_t seen = 0;
  for (int i = 0; i < n; i++) seen |= evs[i].data.u64;
  CHECK(n == 2 && seen == (0x1111 | 0x2222), "epoll_wait gave %d events (data or %#lx)", n, (unsigned long)seen);
  char buf[PIPE_BYTES + 10];
  CHECK(read(F_PIPE_R, buf, sizeof buf) == PIPE_BYTES, "pipe read");
  for (size_t i = 0; i < PIPE_BYTES; i++) CHECK((unsigned char)buf[i] == pat(i, 1), "pipe byte %zu differs", i);
  uint64_t v = 0;
  CHECK(read(F_EVENTFD, &v, 8) == 8 && v == 1, "eventfd is not a semaphore with a count");
  for (int i = 0; i < 41; i++) CHECK(read(F_EVENTFD, &v, 8) == 8, "eventfd count was %d, want 42", i + 1);
  CHECK(read(F_EVENTFD, &v, 8) < 0 && errno == EAGAIN, "eventfd count above 42 or blocking");
  struct itimerspec its;
  CHECK(timerfd_gettime(F_TIMERFD, &its) == 0, "timerfd_gettime: %s", strerror(errno));
  CHECK(its.it_value.tv_sec > 0 && its.it_value.tv_sec <= 100 && its.it_interval.tv_sec == 5 && its.it_interval.tv_nsec == 0,
        "timerfd has %ld s left, interval %ld s", (long)its.it_value.tv_sec, (long)its.it_interval.tv_sec);
  CHECK(fcntl(F_TIMERFD, F_GETFD) == FD_CLOEXEC && fcntl(F_PIPE_R, F_GETFD) == 0, "cloexec flags differ");
  raise(SIGUSR1);
  struct signalfd_siginfo si;
  CHECK(read(F_SIGNALFD, &si, sizeof si) == sizeof si && si.ssi_signo == SIGUSR1, "signalfd did not report SIGUSR1");
  CHECK(fcntl(F_SIGNALFD, F_GETFL) & O_NONBLOCK, "signalfd is not O_NONBLOCK");
  CHECK(inotify_add_watch(F_INOTIFY, "/tmp", IN_CREATE) == 1, "inotify /tmp is not wd 1");
  CHECK(inotify_add_watch(F_INOTIFY, dir, IN_CREATE | IN_DELETE) == 3, "inotify scratch dir is not wd 3");
  char link[256] = {0};
  snprintf(buf, sizeof buf, "/proc/self/fd/%d", F_MEMFD);
  CHECK(readlink(buf, link, sizeof link - 1) > 0 && strcmp(link, "/memfd:ck-wl-files (deleted)") == 0, "memfd is '%s'", link);
  CHECK(lseek(F_MEMFD, 0, SEEK_CUR) == 4096, "memfd offset");
  CHECK(fcntl(F_MEMFD, F_GET_SEALS) == (F_SEAL_SHRINK | F_SEAL_GROW), "memfd seals %#x", fcntl(F_MEMFD, F_GET_SEALS));
  char *m = malloc(MEMFD_BYTES + 1);
  CHECK(pread(F_MEMFD, m, MEMFD_BYTES + 1, 0) == MEMFD_BYTES, "memfd size");
  for (size_t i = 0; i < MEMFD_BYTES; i++) CHECK((unsigned char)m[i] == pat(i, 3), "memfd byte %zu differs", i);
  free(m);
  char d[64] = {0};
  CHECK(fstat(F_DELETED, &st) == 0 && st.st_nlink == 0 && (st.st_mode & 0777) == 0640, "deleted file: nlink or mode");
  CHECK(pread(F_DELETED, d, sizeof d, 0) == sizeof deleted_text && memcmp(d, deleted_text, sizeof deleted_text) == 0,
        "deleted file contents");
  CHECK(lseek(F_DELETED, 0, SEEK_CUR) == 5, "deleted file offset");
  int fl = fcntl(F_APPEND, F_GETFL);
  CHECK((fl & O_APPEND) && (fl & O_ACCMODE) == O_WRONLY, "append file flags %#o", fl);
  lseek(F_APPEND, 0, SEEK_SET);
  CHECK(write(F_APPEND, "world\n", 6) == 6, "append write");
  int r = open(in_dir("append"), O_RDONLY);
  char a[32] = {0};
  CHECK(r >= 0 && read(r, a, sizeof a) == 12 && memcmp(a, "hello\nworld\n", 12) == 0, "append file holds '%s'", a);
  close(r);
  CHECK(lseek(F_OFFSET, 0, SEEK_CUR) == 1234, "offset is not 1234");
  lseek(F_OFFSET_DUP, 2000, SEEK_SET);
  CHECK(lseek(F_OFFSET, 0, SEEK_CUR) == 2000, "dup does not share the offset");
  CHECK((fcntl(F_FIFO_R, F_GETFL) & (O_ACCMODE | O_NONBLOCK)) == (O_RDONLY | O_NONBLOCK), "fifo read end flags");
  CHECK((fcntl(F_FIFO_W, F_GETFL) & (O_ACCMODE | O_NONBLOCK)) == O_WRONLY, "fifo write end flags");
  char f[FIFO_BYTES + 10];
  CHECK(read(F_FIFO_R, f, sizeof f) == FIFO_BYTES, "fifo read");
  for (size_t i = 0; i < FIFO_BYTES; i++) CHECK((unsigned char)f[i] == pat(i, 5), "fifo byte %zu differs", i);
  struct stat sd;
  CHECK(fstat(F_DIR, &st) == 0 && stat(dir, &sd) == 0 && st.st_ino == sd.st_ino, "directory fd");
}

int main(int argc, char **argv) {
  wl_init();
  if (argc > 1) {
    snprintf(dir, sizeof dir, "%s", argv[1]);
  } else {
    snprintf(dir, sizeof dir, "/tmp/ck-wl-files-XXXXXX");
    if (!mkdtemp(dir)) wl_fail("mkdtemp: %s", strerror(errno));
    own_dir = 1;
  }
  sigset_t usr2, old;
  sigemptyset(&usr2);
  sigaddset(&usr2, SIGUSR2);
  sigprocmask(SIG_BLOCK, &usr2, &old);
  setup();
  wl_ready();
  sigaddset(&old, SIGUSR1); /* the signalfd's signal stays blocked */
  while (!wl_check_requested) sigsuspend(&old);
  verify();
  cleanup();
  wl_pass();
}
