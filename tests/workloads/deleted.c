/* Files that lost their names, each checked after a restore:
 *  - big: a 32 MiB sparse deleted file (data at 0, at 16 MiB and in its
 *    last, partial page), owner 4321:8765, mode 0640, set times;
 *  - shared: a deleted file mapped MAP_SHARED with no fd left, by this
 *    process and its child (the child echoes what the parent writes into
 *    it, so both must map one inode);
 *  - withfd: a deleted file open and mapped MAP_SHARED: writes through the
 *    fd show in the mapping and back;
 *  - a memfd mapped shared and private (one private page written), mode
 *    0710, seals SHRINK|GROW;
 *  - a directory open and removed, the cwd removed, a file whose directory
 *    was removed too, a deleted FIFO with 100 bytes queued.
 * The child dies with the parent (PR_SET_PDEATHSIG, SIGKILL).
 * On SIGUSR2: every check, PASS or FAIL: why.
 *
 * usage: deleted DIR   (an empty scratch directory; everything made in it
 * is removed again before READY)
 */
#include "wl.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

enum { F_BIG = 30, F_WITHFD, F_MEMFD, F_RMDIR, F_UNDER, F_FIFO };
#define BIG_SIZE ((32 << 20) - 100)
#define FAR (16 << 20)
#define PG 4096
static const char under_text[] = "a file under a removed directory";

static char dir[256];
static char buf[512];

static const char *in_dir(const char *name) {
  snprintf(buf, sizeof buf, "%s/%s", dir, name);
  return buf;
}

static unsigned char pat(size_t i, unsigned salt) { return (unsigned char)((i * 13 + salt) ^ (i >> 9)); }

static void fill(unsigned char *p, size_t n, size_t at, unsigned salt) {
  for (size_t i = 0; i < n; i++) p[i] = pat(at + i, salt);
}
static int same(const unsigned char *p, size_t n, size_t at, unsigned salt) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != pat(at + i, salt)) return 0;
  return 1;
}

static void at(int fd, int target, const char *what) {
  if (fd < 0) wl_fail("setup %s: %s", what, strerror(errno));
  if (fd != target) {
    if (dup2(fd, target) != target) wl_fail("setup dup2 %s: %s", what, strerror(errno));
    close(fd);
  }
}

static void link_is(int fd, const char *want, const char *what) {
  char p[64], got[512];
  snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(p, got, sizeof got - 1);
  got[n < 0 ? 0 : n] = 0;
  if (strcmp(got, want) != 0) wl_fail("%s: fd %d names '%s', not '%s'", what, fd, got, want);
}

static volatile uint64_t *shared_map;  /* [0]: the parent's word, [1]: the child's echo */
static unsigned char *withfd_map, *memfd_map, *memfd_priv;

static void child_echo(void) {
  for (;;) {
    uint64_t v = shared_map[0];
    if (v != shared_map[1]) shared_map[1] = v;
    usleep(1000);
  }
}

static void setup(void) {
  unsigned char page[PG];
  /* big, sparse */
  at(open(in_dir("big"), O_CREAT | O_RDWR | O_TRUNC, 0600), F_BIG, "big");
  if (ftruncate(F_BIG, BIG_SIZE) < 0) wl_fail("ftruncate big: %s", strerror(errno));
  fill(page, PG, 0, 1);
  if (pwrite(F_BIG, page, PG, 0) != PG) wl_fail("write big");
  for (int k = 0; k < 2; k++) {
    fill(page, PG, FAR + k * PG, 1);
    if (pwrite(F_BIG, page, PG, FAR + k * PG) != PG) wl_fail("write big far");
  }
  size_t last = BIG_SIZE / PG * PG;
  fill(page, BIG_SIZE - last, last, 1);
  if (pwrite(F_BIG, page, BIG_SIZE - last, last) != (ssize_t)(BIG_SIZE - last)) wl_fail("write big tail");
  if (fchown(F_BIG, 4321, 8765) < 0 || fchmod(F_BIG, 0640) < 0) wl_fail("chown big: %s", strerror(errno));
  struct timespec ts[2] = {{1000000000, 0}, {1100000000, 77}};
  if (futimens(F_BIG, ts) < 0) wl_fail("futimens big");
  unlink(in_dir("big"));
  lseek(F_BIG, 12345, SEEK_SET);

  /* shared, no fd */
  int fd = open(in_dir("shared"), O_CREAT | O_RDWR | O_TRUNC, 0600);
  if (fd < 0 || ftruncate(fd, 4 * PG) < 0) wl_fail("shared: %s", strerror(errno));
  shared_map = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (shared_map == MAP_FAILED) wl_fail("mmap shared");
  close(fd);
  unlink(in_dir("shared"));
  fill((unsigned char *)shared_map + PG, 3 * PG, PG, 2);

  /* withfd */
  at(open(in_dir("withfd"), O_CREAT | O_RDWR | O_TRUNC, 0600), F_WITHFD, "withfd");
  if (ftruncate(F_WITHFD, 2 * PG) < 0) wl_fail("withfd truncate");
  withfd_map = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, F_WITHFD, 0);
  if (withfd_map == MAP_FAILED) wl_fail("mmap withfd");
  fill(withfd_map, 2 * PG, 0, 3);
  unlink(in_dir("withfd"));

  /* memfd: shared and private mappings, mode, seals */
  at(memfd_create("wl-deleted", MFD_ALLOW_SEALING), F_MEMFD, "memfd");
  if (ftruncate(F_MEMFD, 3 * PG) < 0) wl_fail("memfd truncate");
  memfd_map = mmap(NULL, 3 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, F_MEMFD, 0);
  if (memfd_map == MAP_FAILED) wl_fail("mmap memfd");
  fill(memfd_map, 3 * PG, 0, 4);
  memfd_priv = mmap(NULL, 3 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, F_MEMFD, 0);
  if (memfd_priv == MAP_FAILED) wl_fail("mmap memfd private");
  fill(memfd_priv + PG, PG, PG, 5); /* a private copy of page 1 */
  if (fchmod(F_MEMFD, 0710) < 0) wl_fail("chmod memfd");
  if (fcntl(F_MEMFD, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0) wl_fail("seal memfd");

  /* a removed directory, open; the cwd, removed; a file whose directory went too */
  if (mkdir(in_dir("rmd"), 0751) < 0) wl_fail("mkdir rmd");
  at(open(in_dir("rmd"), O_RDONLY | O_DIRECTORY), F_RMDIR, "rmd");
  if (rmdir(in_dir("rmd")) < 0) wl_fail("rmdir rmd");
  if (mkdir(in_dir("cwd"), 0700) < 0 || chdir(in_dir("cwd")) < 0 || rmdir(in_dir("cwd")) < 0) wl_fail("cwd: %s", strerror(errno));
  if (mkdir(in_dir("gone"), 0700) < 0) wl_fail("mkdir gone");
  at(open(in_dir("gone/f"), O_CREAT | O_RDWR, 0600), F_UNDER, "gone/f");
  if (write(F_UNDER, under_text, sizeof under_text) != sizeof under_text) wl_fail("write gone/f");
  unlink(in_dir("gone/f"));
  rmdir(in_dir("gone"));

  /* a deleted FIFO with data */
  if (mkfifo(in_dir("fifo"), 0600) < 0) wl_fail("mkfifo");
  at(open(in_dir("fifo"), O_RDWR | O_NONBLOCK), F_FIFO, "fifo");
  fill(page, 100, 0, 6);
  if (write(F_FIFO, page, 100) != 100) wl_fail("write fifo");
  unlink(in_dir("fifo"));
}

static pid_t child;

static void check(void) {
  struct stat st;
  unsigned char page[PG];
  char want[512];
  /* big: stat first (reading sets atime) */
  if (fstat(F_BIG, &st) < 0) wl_fail("fstat big");
  if (st.st_size != BIG_SIZE || st.st_nlink != 0 || (st.st_mode & 07777) != 0640 || st.st_uid != 4321 || st.st_gid != 8765)
    wl_fail("big: size %ld nlink %ld mode %o owner %u:%u", (long)st.st_size, (long)st.st_nlink, st.st_mode & 07777,
            st.st_uid, st.st_gid);
  if (st.st_mtim.tv_sec != 1100000000 || st.st_mtim.tv_nsec != 77 || st.st_atim.tv_sec != 1000000000)
    wl_fail("big: times %ld.%09ld / %ld", (long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec, (long)st.st_atim.tv_sec);
  if (st.st_blocks * 512 > 256 * 1024) wl_fail("big: %ld blocks: holes were filled", (long)st.st_blocks);
  if (lseek(F_BIG, 0, SEEK_CUR) != 12345) wl_fail("big: offset %ld", (long)lseek(F_BIG, 0, SEEK_CUR));
  if (lseek(F_BIG, 0, SEEK_HOLE) != PG || lseek(F_BIG, PG, SEEK_DATA) != FAR || lseek(F_BIG, FAR, SEEK_HOLE) != FAR + 2 * PG)
    wl_fail("big: holes moved (hole at %ld, data at %ld)", (long)lseek(F_BIG, 0, SEEK_HOLE), (long)lseek(F_BIG, PG, SEEK_DATA));
  lseek(F_BIG, 12345, SEEK_SET);  /* (SEEK_HOLE moved it) */
  size_t offs[] = {0, FAR, FAR + PG};
  for (int k = 0; k < 3; k++)
    if (pread(F_BIG, page, PG, offs[k]) != PG || !same(page, PG, offs[k], 1)) wl_fail("big: data at %zu", offs[k]);
  size_t last = BIG_SIZE / PG * PG;
  if (pread(F_BIG, page, PG, last) != (ssize_t)(BIG_SIZE - last) || !same(page, BIG_SIZE - last, last, 1)) wl_fail("big: tail");
  snprintf(want, sizeof want, "%s/big (deleted)", dir);
  link_is(F_BIG, want, "big");

  /* shared: the child sees what the parent writes, and its data is there */
  if (!same((unsigned char *)shared_map + PG, 3 * PG, PG, 2)) wl_fail("shared: data");
  uint64_t v = 0x5eed0000 + (uint64_t)getpid();
  shared_map[0] = v;
  for (int i = 0; i < 5000 && shared_map[1] != v; i++) usleep(1000);
  if (shared_map[1] != v) wl_fail("shared: the child does not see the parent's mapping (one inode?)");

  /* withfd: fd and mapping are one file */
  if (!same(withfd_map, 2 * PG, 0, 3)) wl_fail("withfd: data");
  if (pwrite(F_WITHFD, "fd->map", 7, 100) != 7 || memcmp(withfd_map + 100, "fd->map", 7) != 0) wl_fail("withfd: fd write not in the mapping");
  memcpy(withfd_map + 200, "map->fd", 7);
  char b7[8] = {0};
  if (pread(F_WITHFD, b7, 7, 200) != 7 || memcmp(b7, "map->fd", 7) != 0) wl_fail("withfd: mapping write not in the file");

  /* memfd */
  if (fstat(F_MEMFD, &st) < 0 || (st.st_mode & 07777) != 0710 || st.st_size != 3 * PG) wl_fail("memfd: mode %o size %ld", st.st_mode & 07777, (long)st.st_size);
  if (fcntl(F_MEMFD, F_GET_SEALS) != (F_SEAL_SHRINK | F_SEAL_GROW)) wl_fail("memfd: seals %#x", fcntl(F_MEMFD, F_GET_SEALS));
  link_is(F_MEMFD, "/memfd:wl-deleted (deleted)", "memfd");
  if (!same(memfd_map, 3 * PG, 0, 4)) wl_fail("memfd: shared data");
  if (!same(memfd_priv, PG, 0, 4) || !same(memfd_priv + PG, PG, PG, 5) || !same(memfd_priv + 2 * PG, PG, 2 * PG, 4))
    wl_fail("memfd: private mapping (its own page 1, the file's others)");
  if (pwrite(F_MEMFD, "fd->map", 7, 64) != 7 || memcmp(memfd_map + 64, "fd->map", 7) != 0) wl_fail("memfd: fd write not in the mapping");

  /* removed directory, cwd, file under a removed directory */
  if (fstat(F_RMDIR, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_nlink != 0 || (st.st_mode & 07777) != 0751)
    wl_fail("rmd: mode %o nlink %ld", st.st_mode & 07777, (long)st.st_nlink);
  snprintf(want, sizeof want, "%s/rmd (deleted)", dir);
  link_is(F_RMDIR, want, "rmd");
  char cwd[512];
  ssize_t n = readlink("/proc/self/cwd", cwd, sizeof cwd - 1);
  cwd[n < 0 ? 0 : n] = 0;
  snprintf(want, sizeof want, "%s/cwd (deleted)", dir);
  if (strcmp(cwd, want) != 0) wl_fail("cwd is '%s', not '%s'", cwd, want);
  if (stat(".", &st) < 0 || !S_ISDIR(st.st_mode) || st.st_nlink != 0) wl_fail("cwd: not a removed directory");
  snprintf(want, sizeof want, "%s/gone/f (deleted)", dir);
  link_is(F_UNDER, want, "gone/f");
  char t[64] = {0};
  if (pread(F_UNDER, t, sizeof t, 0) != sizeof under_text || strcmp(t, under_text) != 0) wl_fail("gone/f: contents");
  struct stat ds;
  if (stat(dir, &ds) < 0) wl_fail("scratch dir gone");
  snprintf(want, sizeof want, "%s/gone", dir);
  if (access(want, F_OK) == 0 || access(in_dir("big"), F_OK) == 0 || access(in_dir("rmd"), F_OK) == 0)
    wl_fail("the restore left a name behind in %s", dir);

  /* deleted FIFO */
  int q = -1;
  if (ioctl(F_FIFO, FIONREAD, &q) < 0 || q != 100) wl_fail("fifo: %d bytes queued", q);
  if (read(F_FIFO, page, PG) != 100 || !same(page, 100, 0, 6)) wl_fail("fifo: data");
  snprintf(want, sizeof want, "%s/fifo (deleted)", dir);
  link_is(F_FIFO, want, "fifo");
}

int main(int argc, char **argv) {
  if (argc < 2) wl_fail("usage: deleted DIR");
  snprintf(dir, sizeof dir, "%s", argv[1]);
  wl_init();
  setup();
  pid_t parent = getpid();
  child = fork();
  if (child == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* gone with the parent: restored too */
    if (getppid() != parent) _exit(1);
    child_echo();
  }
  wl_say("INFO child=%d", (int)child);
  wl_ready();
  while (!wl_check_requested) pause();
  check();
  kill(child, SIGKILL);
  waitpid(child, NULL, 0);
  wl_pass();
}
