/* holder KIND DIR: a process that holds one resource of the given kind
 * (the names of libcommon/kinds.h, `ck-crit kinds`), made in scratch
 * directory DIR, and on SIGUSR2 checks that the resource is still what it
 * made: after a restore (a supported kind) or after a dump that was refused
 * (a refused one, which must leave the process as it was).
 *
 * Kinds whose other end must be outside the dumped tree (external pipes and
 * FIFOs, a tracer) get a helper process that is not a descendant: forked
 * twice, it is reparented away.  It says "INFO outside=PID" and ends when
 * the holder does.  The cgroup v2 kind moves the holder into the cgroup
 * directory $CK_HOLDER_CGROUP (made by the test) whose path is
 * $CK_HOLDER_CGPATH.
 */
#include "wl.h"  /* first: _GNU_SOURCE */

#include <dirent.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/filter.h>
#include <linux/perf_event.h>
#include <linux/seccomp.h>
#include <linux/vm_sockets.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/fanotify.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/shm.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>


#ifndef MFD_HUGETLB
#define MFD_HUGETLB 4U
#endif

static const char *dir;
static char path[512];
static int fa = -1, fb = -1;      /* the resource's fds */
static char *mem;                 /* the resource's memory */
static size_t mem_len;
static pid_t other = -1;          /* a child in the tree */
static char text[4096];           /* what the check compares with */

#define SAY_FAIL(...) wl_fail(__VA_ARGS__)
#define NEED(cond, ...) do { if (!(cond)) wl_fail(__VA_ARGS__); } while (0)

static void at(const char *name) { snprintf(path, sizeof path, "%s/%s", dir, name); }

static void fill(char *p, size_t n, uint64_t seed) {
  for (size_t i = 0; i + 8 <= n; i += 8) {
    uint64_t r = wl_rand(&seed);
    memcpy(p + i, &r, 8);
  }
}
static int same(const char *p, size_t n, uint64_t seed) {
  char *q = malloc(n);
  fill(q, n, seed);
  int ok = memcmp(p, q, n) == 0;
  free(q);
  return ok;
}

static void read_exact(int fd, void *buf, size_t n, const char *what) {
  ssize_t r = read(fd, buf, n);
  NEED(r == (ssize_t)n, "%s: read %zd of %zu bytes (%s)", what, r, n, strerror(errno));
}

/* ---- a helper outside the tree ------------------------------------------- */

static pid_t holder_pid;
/* Runs f in a grandchild that the kernel reparents away from the holder;
 * returns once the grandchild said it is ready (a byte on a pipe). */
static void outside(void (*f)(int ready)) {
  int p[2];
  if (pipe(p)) SAY_FAIL("pipe: %s", strerror(errno));
  holder_pid = getpid();
  pid_t c = fork();
  if (c == 0) {
    if (fork() == 0) {
      close(p[0]);
      setsid();
      f(p[1]);
      _exit(0);
    }
    _exit(0);
  }
  waitpid(c, NULL, 0);
  close(p[1]);
  char b;
  NEED(read(p[0], &b, 1) == 1, "the outside helper did not start");
  close(p[0]);
}
static void outside_wait(void) {
  while (kill(holder_pid, 0) == 0 || errno != ESRCH) usleep(100000);
}
static void say_outside(int ready) {
  wl_say("INFO outside=%d", (int)getpid());
  if (write(ready, "r", 1) != 1) _exit(1);
  close(ready);
}

/* ---- fds --------------------------------------------------------------- */

static void file_setup(void) {
  at("file");
  fa = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  NEED(write(fa, "hello file", 10) == 10, "write");
  lseek(fa, 3, SEEK_SET);
}
static void file_check(void) {
  char b[16] = "";
  NEED(lseek(fa, 0, SEEK_CUR) == 3, "offset is %ld, not 3", (long)lseek(fa, 0, SEEK_CUR));
  NEED(pread(fa, b, 10, 0) == 10 && !memcmp(b, "hello file", 10), "contents '%s'", b);
}

static void deleted_setup(void) {
  at("deleted");
  fa = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  NEED(write(fa, "deleted data", 12) == 12, "write");
  unlink(path);
}
static void deleted_check(void) {
  char b[16] = "";
  struct stat st;
  NEED(fstat(fa, &st) == 0 && st.st_nlink == 0, "not deleted any more");
  NEED(pread(fa, b, 12, 0) == 12 && !memcmp(b, "deleted data", 12), "contents '%s'", b);
}

static struct stat dir_st;
static void dir_setup(void) {
  fa = open(dir, O_RDONLY | O_DIRECTORY);
  stat(dir, &dir_st);
}
static void dir_check(void) {
  struct stat st;
  NEED(fstat(fa, &st) == 0 && S_ISDIR(st.st_mode) && st.st_ino == dir_st.st_ino, "not the directory it opened");
}

static void dir_deleted_setup(void) {
  at("gone");
  mkdir(path, 0700);
  fa = open(path, O_RDONLY | O_DIRECTORY);
  NEED(rmdir(path) == 0, "rmdir: %s", strerror(errno));
}
static void dir_deleted_check(void) {
  struct stat st;
  NEED(fstat(fa, &st) == 0 && S_ISDIR(st.st_mode) && st.st_nlink == 0, "not the deleted directory");
}

static void pipe_setup(void) {
  int p[2];
  NEED(pipe(p) == 0, "pipe");
  fa = p[0], fb = p[1];
  NEED(write(fb, "in flight", 9) == 9, "write");
}
static void pipe_check(void) {
  char b[16] = "";
  read_exact(fa, b, 9, "pipe");
  NEED(!memcmp(b, "in flight", 9), "pipe gave '%s'", b);
  NEED(write(fb, "x", 1) == 1 && read(fa, b, 1) == 1 && b[0] == 'x', "pipe does not carry new bytes");
}

/* The holder writes into a pipe whose read end a process outside holds. */
static int ext_pipe[2];
static void ext_pipe_reader(int ready) {
  close(ext_pipe[1]);
  say_outside(ready);
  char b[64];
  while (read(ext_pipe[0], b, sizeof b) > 0) {
  }
}
static void pipe_external_setup(void) {
  NEED(pipe(ext_pipe) == 0, "pipe");
  outside(ext_pipe_reader);
  close(ext_pipe[0]);
  fb = ext_pipe[1];
}
static void pipe_external_check(void) { NEED(write(fb, "x", 1) == 1, "the pipe has no reader any more: %s", strerror(errno)); }

static void fifo_setup(void) {
  at("fifo");
  mkfifo(path, 0600);
  fa = open(path, O_RDWR);
  NEED(write(fa, "fifo data", 9) == 9, "write");
}
static void fifo_check(void) {
  char b[16] = "";
  read_exact(fa, b, 9, "fifo");
  NEED(!memcmp(b, "fifo data", 9), "fifo gave '%s'", b);
}

static void ext_fifo_holder(int ready) {
  int f = open(path, O_RDWR);
  say_outside(ready);
  outside_wait();
  close(f);
}
static void fifo_external_setup(void) {
  at("fifo");
  mkfifo(path, 0600);
  fa = open(path, O_RDWR);
  outside(ext_fifo_holder);
}
static void fifo_external_check(void) {
  char b;
  NEED(write(fa, "y", 1) == 1 && read(fa, &b, 1) == 1 && b == 'y', "fifo does not carry bytes");
}

static void device_setup(void) { fa = open("/dev/null", O_WRONLY); }
static void device_check(void) {
  struct stat st;
  NEED(fstat(fa, &st) == 0 && st.st_rdev == makedev(1, 3), "not /dev/null");
  NEED(write(fa, "x", 1) == 1, "write to /dev/null");
}

static void device_deleted_setup(void) {
  at("null");
  NEED(mknod(path, S_IFCHR | 0600, makedev(1, 3)) == 0, "mknod: %s", strerror(errno));
  fa = open(path, O_WRONLY);
  unlink(path);
}
static void device_deleted_check(void) { NEED(write(fa, "x", 1) == 1, "write to the deleted null"); }

static void device_other_setup(void) {
  fa = open("/dev/fuse", O_RDWR);
  NEED(fa >= 0, "open /dev/fuse: %s", strerror(errno));
}

static void tty_setup(void) {
  NEED(isatty(0), "stdin is not a terminal (run under a pty)");
  fa = 0;
}
static void tty_check(void) {
  NEED(isatty(0), "stdin is not a terminal any more");
}

static void ptmx_setup(void) {
  fa = posix_openpt(O_RDWR | O_NOCTTY);
  NEED(fa >= 0 && grantpt(fa) == 0 && unlockpt(fa) == 0, "posix_openpt: %s", strerror(errno));
  snprintf(text, sizeof text, "%s", ptsname(fa));
}
static void ptmx_check(void) { NEED(ptsname(fa) && !strcmp(ptsname(fa), text), "another pty"); }

static void eventfd_setup(void) { fa = eventfd(5, 0); }
static void eventfd_check(void) {
  uint64_t v = 0;
  read_exact(fa, &v, 8, "eventfd");
  NEED(v == 5, "eventfd count %llu", (unsigned long long)v);
}

static void epoll_setup(void) {
  fa = epoll_create1(0);
  fb = eventfd(1, 0);
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0x1234};
  epoll_ctl(fa, EPOLL_CTL_ADD, fb, &ev);
}
static void epoll_check(void) {
  struct epoll_event ev;
  NEED(epoll_wait(fa, &ev, 1, 1000) == 1 && ev.data.u64 == 0x1234, "epoll did not report its target");
}

static sigset_t sfd_mask;
static void signalfd_setup(void) {
  sigemptyset(&sfd_mask);
  sigaddset(&sfd_mask, SIGUSR1);
  sigprocmask(SIG_BLOCK, &sfd_mask, NULL);
  fa = signalfd(-1, &sfd_mask, 0);
}
static void signalfd_check(void) {
  struct signalfd_siginfo si;
  kill(getpid(), SIGUSR1);
  read_exact(fa, &si, sizeof si, "signalfd");
  NEED(si.ssi_signo == SIGUSR1, "signalfd gave signal %u", si.ssi_signo);
}

static void timerfd_setup(void) {
  fa = timerfd_create(CLOCK_MONOTONIC, 0);
  struct itimerspec its = {.it_value = {1000, 0}};
  timerfd_settime(fa, 0, &its, NULL);
}
static void timerfd_check(void) {
  struct itimerspec its;
  NEED(timerfd_gettime(fa, &its) == 0 && its.it_value.tv_sec > 0 && its.it_value.tv_sec < 1000, "timer not armed");
}

static void inotify_setup(void) {
  fa = inotify_init1(IN_NONBLOCK);
  NEED(inotify_add_watch(fa, dir, IN_CREATE) >= 0, "inotify_add_watch: %s", strerror(errno));
}
static void inotify_check(void) {
  at("created");
  close(open(path, O_CREAT | O_WRONLY, 0600));
  char b[4096];
  usleep(10000);
  ssize_t n = read(fa, b, sizeof b);
  NEED(n >= (ssize_t)sizeof(struct inotify_event) && (((struct inotify_event *)b)->mask & IN_CREATE), "no IN_CREATE event");
}

static void memfd_setup(void) {
  fa = memfd_create("holder", 0);
  NEED(write(fa, "memfd data", 10) == 10, "write");
}
static void memfd_check(void) {
  char b[16] = "";
  NEED(pread(fa, b, 10, 0) == 10 && !memcmp(b, "memfd data", 10), "memfd gave '%s'", b);
}

static void memfd_hugetlb_setup(void) {
  fa = memfd_create("holder-huge", MFD_HUGETLB);
  NEED(fa >= 0, "memfd_create(MFD_HUGETLB): %s", strerror(errno));
}
static void fd_open_check(void) { NEED(fcntl(fa, F_GETFD) >= 0, "fd %d is gone", fa); }

static void unix_setup(void) {
  int sv[2];
  NEED(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0, "socketpair");
  fa = sv[0], fb = sv[1];
  NEED(write(fa, "u", 1) == 1, "write");
}
static void unix_check(void) {
  char b = 0;
  NEED(read(fb, &b, 1) == 1 && b == 'u', "socketpair lost its byte");
}

static struct sockaddr_in bound;
static void tcp_setup(void) {
  fa = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t l = sizeof bound;
  NEED(bind(fa, (struct sockaddr *)&a, sizeof a) == 0 && listen(fa, 4) == 0, "bind/listen: %s", strerror(errno));
  getsockname(fa, (struct sockaddr *)&bound, &l);
}
static void tcp_check(void) {
  int c = socket(AF_INET, SOCK_STREAM, 0);
  NEED(connect(c, (struct sockaddr *)&bound, sizeof bound) == 0, "connect: %s", strerror(errno));
  int s = accept(fa, NULL, NULL);
  NEED(s >= 0, "accept: %s", strerror(errno));
  close(s), close(c);
}

static void udp_setup(void) {
  fa = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t l = sizeof bound;
  NEED(bind(fa, (struct sockaddr *)&a, sizeof a) == 0, "bind: %s", strerror(errno));
  getsockname(fa, (struct sockaddr *)&bound, &l);
}
static void udp_check(void) {
  char b = 0;
  NEED(sendto(fa, "d", 1, 0, (struct sockaddr *)&bound, sizeof bound) == 1 && recv(fa, &b, 1, 0) == 1 && b == 'd',
       "udp: %s", strerror(errno));
}

static int sock_type(int fd) {
  int t = -1;
  socklen_t l = sizeof t;
  getsockopt(fd, SOL_SOCKET, SO_TYPE, &t, &l);
  return t;
}
static int want_type;
static void socket_open(int family, int type, int proto) {
  fa = socket(family, type, proto);
  NEED(fa >= 0, "socket(%d, %d, %d): %s", family, type, proto, strerror(errno));
  want_type = type;
}
static void raw_setup(void) { socket_open(AF_INET, SOCK_RAW, IPPROTO_ICMP); }
static void netlink_setup(void) { socket_open(AF_NETLINK, SOCK_RAW, 0); }
static void packet_setup(void) { socket_open(AF_PACKET, SOCK_RAW, 0); }
static void vsock_setup(void) { socket_open(AF_VSOCK, SOCK_STREAM, 0); }
static void socket_check(void) { NEED(sock_type(fa) == want_type, "socket type %d", sock_type(fa)); }

static void pidfd_setup(void) {
  fa = (int)syscall(SYS_pidfd_open, getpid(), 0);
  NEED(fa >= 0, "pidfd_open: %s", strerror(errno));
}
static void pidfd_check(void) { NEED(syscall(SYS_pidfd_send_signal, fa, 0, NULL, 0) == 0, "pidfd: %s", strerror(errno)); }

static void io_uring_setup(void) {
  char params[120] = {0};
  fa = (int)syscall(SYS_io_uring_setup, 4, params);
  NEED(fa >= 0, "io_uring_setup: %s", strerror(errno));
}

static void fanotify_setup(void) {
  fa = fanotify_init(FAN_CLASS_NOTIF, O_RDONLY);
  NEED(fa >= 0, "fanotify_init: %s", strerror(errno));
}

static void userfaultfd_setup(void) {
  fa = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
  NEED(fa >= 0, "userfaultfd: %s", strerror(errno));
}

static void bpf_setup(void) {
  union bpf_attr a;
  memset(&a, 0, sizeof a);
  a.map_type = BPF_MAP_TYPE_ARRAY;
  a.key_size = 4;
  a.value_size = 8;
  a.max_entries = 1;
  fa = (int)syscall(SYS_bpf, BPF_MAP_CREATE, &a, sizeof a);
  NEED(fa >= 0, "bpf(BPF_MAP_CREATE): %s", strerror(errno));
}

static void perf_setup(void) {
  struct perf_event_attr a;
  memset(&a, 0, sizeof a);
  a.size = sizeof a;
  a.type = PERF_TYPE_SOFTWARE;
  a.config = PERF_COUNT_SW_TASK_CLOCK;
  a.exclude_kernel = 1;
  fa = (int)syscall(SYS_perf_event_open, &a, 0, -1, -1, 0);
  NEED(fa >= 0, "perf_event_open: %s", strerror(errno));
}

static void anon_other_setup(void) {
  fa = (int)syscall(SYS_fsopen, "tmpfs", 0);
  NEED(fa >= 0, "fsopen: %s", strerror(errno));
}

static void other_setup(void) {
  at("blk");
  NEED(mknod(path, S_IFBLK | 0600, makedev(7, 0)) == 0, "mknod: %s", strerror(errno));
  fa = open(path, O_RDONLY);
  NEED(fa >= 0, "open a block device: %s", strerror(errno));
}

/* ---- mappings ------------------------------------------------------------ */

static void anon_setup(void) {
  mem_len = 1 << 20;
  mem = mmap(NULL, mem_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  fill(mem, mem_len, 11);
}
static void mem_check(void) { NEED(same(mem, mem_len, 11), "memory changed"); }

static void heap_setup(void) {
  mem_len = 1 << 20;
  mem = sbrk((intptr_t)mem_len);
  NEED(mem != (void *)-1, "sbrk");
  fill(mem, mem_len, 11);
}

static char *stack_mem;
static void stack_setup(void) { /* the buffer is main's: see main() */ }
static void stack_check(void) { NEED(same(stack_mem, 65536, 11), "stack memory changed"); }

static void shared_anon_setup(void) {
  mem_len = 1 << 20;
  mem = mmap(NULL, mem_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  fill(mem, mem_len, 11);
}

static void make_file(const char *name, size_t n) {
  at(name);
  int f = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  char *b = malloc(n);
  fill(b, n, 22);
  NEED(write(f, b, n) == (ssize_t)n, "write");
  free(b);
  close(f);
}
static void file_private_setup(void) {
  make_file("private", 65536);
  int f = open(path, O_RDONLY);
  mem_len = 65536;
  mem = mmap(NULL, mem_len, PROT_READ | PROT_WRITE, MAP_PRIVATE, f, 0);
  close(f);
  memset(mem, 'c', 4096); /* a COW page of its own */
}
static void file_private_check(void) {
  char *want = malloc(mem_len);
  fill(want, mem_len, 22);
  for (int i = 0; i < 4096; i++) NEED(mem[i] == 'c', "the COW page changed");
  NEED(!memcmp(mem + 4096, want + 4096, mem_len - 4096), "the file's pages changed");
  free(want);
}

static void file_shared_setup(void) {
  make_file("shared", 65536);
  fa = open(path, O_RDWR);
  mem_len = 65536;
  mem = mmap(NULL, mem_len, PROT_READ | PROT_WRITE, MAP_SHARED, fa, 0);
  memcpy(mem, "written through the mapping", 27);
}
static void file_shared_check(void) {
  char b[32] = "";
  NEED(!memcmp(mem, "written through the mapping", 27), "the mapping lost its write");
  memcpy(mem + 100, "again", 5);
  NEED(pread(fa, b, 5, 100) == 5 && !memcmp(b, "again", 5), "the mapping is not the file's any more");
}

static void file_deleted_setup(void) {
  make_file("mapped-deleted", 65536);
  int f = open(path, O_RDWR);
  mem_len = 65536;
  mem = mmap(NULL, mem_len, PROT_READ | PROT_WRITE, MAP_SHARED, f, 0);
  close(f);
  unlink(path);
}
static void file_deleted_check(void) { NEED(same(mem, mem_len, 22), "the deleted file's pages changed"); }

static int in_maps(const char *name) {
  FILE *m = fopen("/proc/self/maps", "r");
  char line[512];
  int found = 0;
  while (m && fgets(line, sizeof line, m)) found |= strstr(line, name) != NULL;
  if (m) fclose(m);
  return found;
}
static void vdso_check(void) {
  struct timespec a, b;
  NEED(in_maps("[vdso]"), "no [vdso]");
  clock_gettime(CLOCK_MONOTONIC, &a);
  clock_gettime(CLOCK_MONOTONIC, &b);
  NEED(b.tv_sec > a.tv_sec || (b.tv_sec == a.tv_sec && b.tv_nsec >= a.tv_nsec), "the clock went back");
}
static void vsyscall_check(void) { NEED(in_maps("[vsyscall]"), "no [vsyscall]"); }
static void nothing(void) {}

static void sysv_setup(void) {
  int id = shmget(IPC_PRIVATE, 65536, IPC_CREAT | 0600);
  NEED(id >= 0, "shmget: %s", strerror(errno));
  mem = shmat(id, NULL, 0);
  shmctl(id, IPC_RMID, NULL); /* gone with the holder */
  mem_len = 65536;
  fill(mem, mem_len, 11);
}

static void vma_memfd_setup(void) {
  fa = memfd_create("holder-map", 0);
  mem_len = 65536;
  NEED(ftruncate(fa, (off_t)mem_len) == 0, "ftruncate");
  mem = mmap(NULL, mem_len, PROT_READ | PROT_WRITE, MAP_SHARED, fa, 0);
  fill(mem, mem_len, 11);
}

static void hugetlb_setup(void) {
  mem_len = 2 << 20;
  mem = mmap(NULL, mem_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
  NEED(mem != MAP_FAILED, "mmap(MAP_HUGETLB): %s (set vm.nr_hugepages)", strerror(errno));
  fill(mem, mem_len, 11);
}

static unsigned long aio_ctx;
static void aio_setup(void) { NEED(syscall(SYS_io_setup, 4, &aio_ctx) == 0, "io_setup: %s", strerror(errno)); }
static void aio_check(void) { NEED(in_maps("[aio]"), "no AIO ring"); }

/* ---- tasks --------------------------------------------------------------- */

static volatile uint64_t counters[3];
static void *count(void *arg) {
  volatile uint64_t *c = arg;
  for (;;) {
    ++*c;
    usleep(1000);
  }
  return NULL;
}
static int ntasks(void) {
  DIR *d = opendir("/proc/self/task");
  int n = 0;
  struct dirent *e;
  while (d && (e = readdir(d))) n += e->d_name[0] != '.';
  if (d) closedir(d);
  return n;
}
static void threads_setup(void) {
  pthread_t t;
  for (int i = 0; i < 3; i++) pthread_create(&t, NULL, count, (void *)&counters[i]);
  usleep(20000);
}
static void threads_check(void) {
  uint64_t before[3];
  for (int i = 0; i < 3; i++) before[i] = counters[i];
  usleep(100000);
  for (int i = 0; i < 3; i++) NEED(counters[i] > before[i], "thread %d stopped counting", i);
  NEED(ntasks() == 4, "not 4 threads");
}

static void zombie_setup(void) {
  other = fork();
  if (other == 0) _exit(7);
  usleep(20000);
}
static void zombie_check(void) {
  int st;
  NEED(waitpid(other, &st, 0) == other && WIFEXITED(st) && WEXITSTATUS(st) == 7, "the zombie lost its status");
}

static void *leader_gone_loop(void *arg) {
  (void)arg;
  while (!wl_check_requested) pause();
  wl_pass();
  return NULL;
}
static void leader_exited_setup(void) {}

static void seccomp_setup(void) {
  struct sock_filter f[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
  struct sock_fprog prog = {1, f};
  prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
  NEED(syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) == 0, "seccomp: %s", strerror(errno));
}

static void tracer(int ready) {
  if (ptrace(PTRACE_SEIZE, holder_pid, 0, 0) != 0) _exit(1);
  say_outside(ready);
  for (;;) {
    int st;
    pid_t w = waitpid(holder_pid, &st, __WALL);
    if (w < 0 || WIFEXITED(st) || WIFSIGNALED(st)) _exit(0);
    if (WIFSTOPPED(st)) {
      int sig = WSTOPSIG(st);
      if ((st >> 16) == PTRACE_EVENT_STOP) sig = 0;
      ptrace(PTRACE_CONT, holder_pid, 0, sig);
    }
  }
}
static void traced_setup(void) {
  outside(tracer);
  for (int i = 0; i < 500; i++) {
    char b[4096];
    int f = open("/proc/self/status", O_RDONLY);
    ssize_t n = read(f, b, sizeof b - 1);
    close(f);
    b[n > 0 ? n : 0] = 0;
    char *t = strstr(b, "TracerPid:");
    if (t && atoi(t + 10) > 0) return;
    usleep(10000);
  }
  SAY_FAIL("the tracer did not attach");
}

static void cgroup_lines(char *out, size_t n, int v2) {
  FILE *f = fopen("/proc/self/cgroup", "r");
  char line[512];
  out[0] = 0;
  while (f && fgets(line, sizeof line, f))
    if ((strncmp(line, "0::", 3) == 0) == v2) strncat(out, line, n - strlen(out) - 1);
  if (f) fclose(f);
}
static void cgroup_v2_setup(void) {
  const char *cg = getenv("CK_HOLDER_CGROUP");
  NEED(cg && getenv("CK_HOLDER_CGPATH"), "CK_HOLDER_CGROUP / CK_HOLDER_CGPATH not set");
  snprintf(path, sizeof path, "%s/cgroup.procs", cg);
  int f = open(path, O_WRONLY);
  NEED(f >= 0 && write(f, "0", 1) == 1, "unable to join '%s': %s", cg, strerror(errno));
  close(f);
}
static void cgroup_v2_check(void) {
  char now[4096], want[600];
  cgroup_lines(now, sizeof now, 1);
  snprintf(want, sizeof want, "0::%s\n", getenv("CK_HOLDER_CGPATH"));
  NEED(!strcmp(now, want), "in cgroup %s, not %s", now, want);
}
static void cgroup_v1_setup(void) { cgroup_lines(text, sizeof text, 0); }
static void cgroup_v1_check(void) {
  char now[4096];
  cgroup_lines(now, sizeof now, 0);
  NEED(!strcmp(now, text), "v1 cgroups changed");
}

/* A flock, a POSIX lock, an OFD lock and a read lease, each on its own
 * file; after the check another description cannot have any of them. */
static int fl_flock = -1, fl_posix = -1, fl_ofd = -1, fl_lease = -1;
static void lock_setup(void) {
  struct flock l = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 10, .l_len = 20};
  at("flock"), fl_flock = open(path, O_CREAT | O_RDWR, 0600);
  NEED(flock(fl_flock, LOCK_EX) == 0, "flock: %s", strerror(errno));
  at("posix"), fl_posix = open(path, O_CREAT | O_RDWR, 0600);
  NEED(fcntl(fl_posix, F_SETLK, &l) == 0, "F_SETLK: %s", strerror(errno));
  at("ofd"), fl_ofd = open(path, O_CREAT | O_RDWR, 0600);
  NEED(fcntl(fl_ofd, F_OFD_SETLK, &l) == 0, "F_OFD_SETLK: %s", strerror(errno));
  at("lease");
  close(open(path, O_CREAT | O_RDWR, 0600));
  fl_lease = open(path, O_RDONLY);
  NEED(fcntl(fl_lease, F_SETLEASE, F_RDLCK) == 0, "F_SETLEASE: %s", strerror(errno));
}
static void lock_check(void) {
  struct flock l = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 15, .l_len = 1};
  at("flock");
  int f = open(path, O_RDWR);
  NEED(flock(f, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK, "the flock is gone");
  close(f);
  at("ofd");
  f = open(path, O_RDWR);  /* a new description: the OFD lock conflicts with it */
  NEED(fcntl(f, F_OFD_GETLK, &l) == 0 && l.l_type == F_WRLCK && l.l_start == 10 && l.l_len == 20,
       "the OFD lock is gone");
  close(f);
  NEED(fcntl(fl_lease, F_GETLEASE) == F_RDLCK, "the lease is gone");
  /* POSIX locks are the process's: ask from a child */
  pid_t c = fork();
  if (c == 0) {
    struct flock q = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    _exit(fcntl(fl_posix, F_GETLK, &q) == 0 && q.l_type == F_WRLCK && q.l_pid == getppid() && q.l_start == 10 ? 0 : 1);
  }
  int st;
  NEED(waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0, "the POSIX lock is gone");
}

/* A child stopped by SIGSTOP: it must still be stopped, and continue. */
static void stopped_setup(void) {
  other = fork();
  if (other == 0) {
    for (;;) pause();
  }
  NEED(kill(other, SIGSTOP) == 0, "kill");
  int st;
  NEED(waitpid(other, &st, WUNTRACED) == other && WIFSTOPPED(st), "the child did not stop");
}
static char task_state_of(pid_t p) {
  char b[512], *r;
  snprintf(path, sizeof path, "/proc/%d/stat", (int)p);
  int f = open(path, O_RDONLY);
  ssize_t n = f < 0 ? -1 : read(f, b, sizeof b - 1);
  if (f >= 0) close(f);
  b[n > 0 ? n : 0] = 0;
  r = strrchr(b, ')');
  return r && r[1] ? r[2] : '?';
}
static void stopped_check(void) {
  NEED(task_state_of(other) == 'T', "the child is not stopped (state %c)", task_state_of(other));
  kill(other, SIGCONT);
  /* running (R) on its way back into pause() counts as not there yet */
  for (int i = 0; i < 500 && task_state_of(other) != 'S'; i++) usleep(10000);
  NEED(task_state_of(other) == 'S', "SIGCONT did not continue the child (state %c)", task_state_of(other));
  kill(other, SIGKILL);
  waitpid(other, NULL, 0);
}

/* Its own parent-death signal, with a handler that must not have run. */
static volatile sig_atomic_t pdeath_fired;
static void on_pdeath(int sig) { (void)sig; pdeath_fired = 1; }
static void pdeathsig_setup(void) {
  signal(SIGURG, on_pdeath);
  NEED(prctl(PR_SET_PDEATHSIG, SIGURG) == 0, "PR_SET_PDEATHSIG: %s", strerror(errno));
}
static void pdeathsig_check(void) {
  int sig = 0;
  NEED(prctl(PR_GET_PDEATHSIG, &sig) == 0 && sig == SIGURG, "the parent-death signal is %d, not SIGURG", sig);
  NEED(!pdeath_fired, "the parent-death signal fired");
}

/* Its cwd, removed. */
static void cwd_deleted_setup(void) {
  at("cwd");
  NEED(mkdir(path, 0750) == 0 && chdir(path) == 0 && rmdir(path) == 0, "cwd: %s", strerror(errno));
  NEED(stat(".", &dir_st) == 0, "stat");
}
static void cwd_deleted_check(void) {
  struct stat st;
  char link[600] = "";
  NEED(stat(".", &st) == 0 && S_ISDIR(st.st_mode) && st.st_nlink == 0 && (st.st_mode & 07777) == 0750,
       "the cwd is not the removed directory");
  NEED(readlink("/proc/self/cwd", link, sizeof link - 1) > 0 && strstr(link, "/cwd (deleted)"), "cwd is '%s'", link);
  at("cwd");
  NEED(access(path, F_OK) != 0, "the removed cwd has its name again");
}

/* A session leader (the test's setsid) with a controlling terminal: a pty
 * whose master a helper outside the tree holds. */
static int master_fd = -1;
static void pty_holder(int ready) {
  say_outside(ready);
  outside_wait();  /* keeps the master (inherited) until the holder ends */
}
static void session_leader_setup(void) {
  master_fd = posix_openpt(O_RDWR | O_NOCTTY);
  NEED(master_fd >= 0 && grantpt(master_fd) == 0 && unlockpt(master_fd) == 0, "posix_openpt: %s", strerror(errno));
  snprintf(text, sizeof text, "%s", ptsname(master_fd));
  outside(pty_holder);
  close(master_fd);
  fa = open(text, O_RDWR);  /* a session leader without a terminal: it becomes its controlling one */
  NEED(fa >= 0, "open '%s': %s", text, strerror(errno));
  NEED(tcgetsid(fa) == getpid(), "not the controlling terminal");
  close(fa);
  fa = -1;
}
static void session_leader_check(void) {
  int t = open("/dev/tty", O_RDWR);
  NEED(t >= 0, "no controlling terminal any more");
  NEED(tcgetsid(t) == getpid(), "not the session's terminal");
  close(t);
}

/* ---- the table ----------------------------------------------------------- */

static const struct {
  const char *kind;
  void (*setup)(void);
  void (*check)(void);
} modes[] = {
    {"fd.file", file_setup, file_check},
    {"fd.file.deleted", deleted_setup, deleted_check},
    {"fd.dir", dir_setup, dir_check},
    {"fd.dir.deleted", dir_deleted_setup, dir_deleted_check},
    {"fd.pipe", pipe_setup, pipe_check},
    {"fd.pipe.external", pipe_external_setup, pipe_external_check},
    {"fd.fifo", fifo_setup, fifo_check},
    {"fd.fifo.external", fifo_external_setup, fifo_external_check},
    {"fd.device", device_setup, device_check},
    {"fd.device.deleted", device_deleted_setup, device_deleted_check},
    {"fd.device.other", device_other_setup, fd_open_check},
    {"fd.tty", tty_setup, tty_check},
    {"fd.pty-master", ptmx_setup, ptmx_check},
    {"fd.eventfd", eventfd_setup, eventfd_check},
    {"fd.epoll", epoll_setup, epoll_check},
    {"fd.signalfd", signalfd_setup, signalfd_check},
    {"fd.timerfd", timerfd_setup, timerfd_check},
    {"fd.inotify", inotify_setup, inotify_check},
    {"fd.memfd", memfd_setup, memfd_check},
    {"fd.memfd.hugetlb", memfd_hugetlb_setup, fd_open_check},
    {"fd.socket.unix", unix_setup, unix_check},
    {"fd.socket.tcp", tcp_setup, tcp_check},
    {"fd.socket.udp", udp_setup, udp_check},
    {"fd.socket.inet-other", raw_setup, socket_check},
    {"fd.socket.netlink", netlink_setup, socket_check},
    {"fd.socket.packet", packet_setup, socket_check},
    {"fd.socket.other", vsock_setup, socket_check},
    {"fd.pidfd", pidfd_setup, pidfd_check},
    {"fd.io_uring", io_uring_setup, fd_open_check},
    {"fd.fanotify", fanotify_setup, fd_open_check},
    {"fd.userfaultfd", userfaultfd_setup, fd_open_check},
    {"fd.bpf", bpf_setup, fd_open_check},
    {"fd.perf_event", perf_setup, fd_open_check},
    {"fd.anon-other", anon_other_setup, fd_open_check},
    {"fd.other", other_setup, fd_open_check},
    {"fd.lock", lock_setup, lock_check},
    {"vma.anon", anon_setup, mem_check},
    {"vma.heap", heap_setup, mem_check},
    {"vma.stack", stack_setup, stack_check},
    {"vma.shared-anon", shared_anon_setup, mem_check},
    {"vma.file.private", file_private_setup, file_private_check},
    {"vma.file.shared", file_shared_setup, file_shared_check},
    {"vma.file.deleted", file_deleted_setup, file_deleted_check},
    {"vma.vdso", nothing, vdso_check},
    {"vma.vsyscall", nothing, vsyscall_check},
    {"vma.sysv-shm", sysv_setup, mem_check},
    {"vma.memfd", vma_memfd_setup, mem_check},
    {"vma.hugetlb", hugetlb_setup, mem_check},
    {"vma.aio", aio_setup, aio_check},
    {"task.threads", threads_setup, threads_check},
    {"task.zombie", zombie_setup, zombie_check},
    {"task.leader-exited", leader_exited_setup, NULL},
    {"task.seccomp", seccomp_setup, nothing},
    {"task.traced", traced_setup, nothing},
    {"task.cgroup.v2", cgroup_v2_setup, cgroup_v2_check},
    {"task.cgroup.v1", cgroup_v1_setup, cgroup_v1_check},
    {"task.stopped", stopped_setup, stopped_check},
    {"task.pdeathsig", pdeathsig_setup, pdeathsig_check},
    {"task.cwd.deleted", cwd_deleted_setup, cwd_deleted_check},
    {"task.session-leader", session_leader_setup, session_leader_check},
};

int main(int argc, char **argv) {
  if (argc < 2) {
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) printf("%s\n", modes[i].kind);
    return 0;
  }
  if (argc != 3) {
    fprintf(stderr, "usage: holder [KIND DIR]\n");
    return 2;
  }
  dir = argv[2];
  char stack_buf[65536];
  fill(stack_buf, sizeof stack_buf, 11);
  stack_mem = stack_buf;
  wl_init();
  for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
    if (strcmp(modes[i].kind, argv[1]) != 0) continue;
    modes[i].setup();
    wl_ready();
    if (!modes[i].check) { /* the main thread leaves; a thread waits for the check */
      pthread_t t;
      pthread_create(&t, NULL, leader_gone_loop, NULL);
      pthread_exit(NULL);
    }
    while (!wl_check_requested) pause();
    modes[i].check();
    (void)fb;
    wl_pass();
  }
  fprintf(stderr, "holder: no kind '%s'\n", argv[1]);
  return 2;
}
