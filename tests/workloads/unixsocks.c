/* Unix sockets of every kind ck dumps, with queues in both directions, and
 * a check of each after restore.
 *   unixsocks DIR
 * DIR is a scratch directory for the socket files.  State built:
 *   st[2]  stream socketpair: 3 writes A->B (one carrying a pipe read end
 *          and a socket in flight, both closed here), 1 write B->A
 *   dg[2]  datagram pair: 3 datagrams A->B (boundaries kept), 1 B->A
 *   sq[2]  seqpacket pair: 2 records A->B
 *   listener bound to DIR/l.sock, backlog 7: one connection accepted
 *          (acc <-> cli1, with queued data both ways), one not accepted
 *          yet (cli2)
 *   ab     abstract datagram socket "@ck-unixsocks-PID", SO_PASSCRED on,
 *          2 datagrams from named (bound to DIR/n.sock) with credentials
 *   del    datagram socket bound to DIR/gone.sock, then the file removed
 *   half[2] stream pair: A shut down for writing after 5 bytes
 *   lone   stream pair whose other end was closed after writing 4 bytes
 *   plain  unbound datagram socket with SO_RCVBUF 65536, SO_RCVTIMEO 3.5 s
 * On SIGUSR2 every queue is read and compared, names and options checked,
 * the pending connection accepted, and every pair still talks. */
#include "wl.h"

#include <fcntl.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

static char dir[200];
static int st[2], dg[2], sq[2], lst, acc, cli1, cli2, ab, named, del, half[2], lone, plain;

static void die(const char *what) { wl_fail("%s: %s", what, strerror(errno)); }

static socklen_t addr(struct sockaddr_un *a, const char *path, int abstract) {
  memset(a, 0, sizeof *a);
  a->sun_family = AF_UNIX;
  if (abstract) {
    snprintf(a->sun_path + 1, sizeof a->sun_path - 1, "%s", path);
    return offsetof(struct sockaddr_un, sun_path) + 1 + strlen(path);
  }
  snprintf(a->sun_path, sizeof a->sun_path, "%s", path);
  return offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1;
}

static void put(int fd, const char *s) {
  if (write(fd, s, strlen(s)) != (ssize_t)strlen(s)) die("write");
}

static void send_fds(int fd, const char *s, int *fds, int n) {
  struct iovec iov = {(void *)s, strlen(s)};
  char ctl[CMSG_SPACE(sizeof(int) * 4)];
  struct msghdr mh = {0};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  mh.msg_control = ctl;
  mh.msg_controllen = CMSG_SPACE(sizeof(int) * n);
  struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * n);
  memcpy(CMSG_DATA(c), fds, sizeof(int) * n);
  if (sendmsg(fd, &mh, 0) < 0) die("sendmsg SCM_RIGHTS");
}

/* Reads one message (nonblocking); its fds into fds[], *nfds; its
 * credentials' pid into *pid (0: none). */
static ssize_t get(int fd, char *buf, size_t len, int *fds, int *nfds, pid_t *pid) {
  char ctl[CMSG_SPACE(sizeof(int) * 8) + CMSG_SPACE(sizeof(struct ucred))];
  struct iovec iov = {buf, len};
  struct msghdr mh = {0};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  mh.msg_control = ctl;
  mh.msg_controllen = sizeof ctl;
  ssize_t n = recvmsg(fd, &mh, MSG_DONTWAIT);
  if (n < 0 && errno == ENOTSOCK) mh.msg_controllen = 0, n = read(fd, buf, len);  /* a pipe in flight */
  if (nfds) *nfds = 0;
  if (pid) *pid = 0;
  if (n < 0) return n;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_type == SCM_RIGHTS && fds) {
      *nfds = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      memcpy(fds, CMSG_DATA(c), sizeof(int) * *nfds);
    }
    if (c->cmsg_type == SCM_CREDENTIALS && pid) {
      struct ucred uc;
      memcpy(&uc, CMSG_DATA(c), sizeof uc);
      *pid = uc.pid;
    }
  }
  buf[n] = 0;
  return n;
}

static void expect(int fd, const char *want, const char *what) {
  char buf[4096];
  ssize_t n = get(fd, buf, sizeof buf - 1, NULL, NULL, NULL);
  if (n < 0) wl_fail("%s: nothing to read (%s), wanted '%s'", what, strerror(errno), want);
  if (strcmp(buf, want) != 0) wl_fail("%s: read '%s', wanted '%s'", what, buf, want);
}

static void expect_empty(int fd, const char *what) {
  char buf[64];
  ssize_t n = get(fd, buf, sizeof buf - 1, NULL, NULL, NULL);
  if (n >= 0) wl_fail("%s: more queued than dumped: '%s' (%zd bytes)", what, buf, n);
}

static void talks(int a, int b, const char *what) {
  put(a, "ping");
  usleep(1000);
  expect(b, "ping", what);
}

static void name_is(int fd, const char *want, int abstract, const char *what) {
  struct sockaddr_un a;
  socklen_t len = sizeof a;
  if (getsockname(fd, (struct sockaddr *)&a, &len) < 0) die("getsockname");
  const char *got = abstract ? a.sun_path + 1 : a.sun_path;
  if ((abstract && a.sun_path[0] != 0) || strncmp(got, want, strlen(want)) != 0)
    wl_fail("%s: bound to '%s%s', wanted '%s%s'", what, a.sun_path[0] ? "" : "@", got, abstract ? "@" : "", want);
}

static void setup(void) {
  char path[300], abname[64];
  struct sockaddr_un a;
  int one = 1;
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, st) < 0) die("socketpair stream");
  put(st[0], "stream-1;");
  int p[2];
  if (pipe(p) < 0) die("pipe");
  put(p[1], "in the pipe");
  int inner[2];
  if (socketpair(AF_UNIX, SOCK_DGRAM, 0, inner) < 0) die("socketpair inner");
  put(inner[1], "inner dgram");
  int fl[2] = {p[0], inner[0]};
  send_fds(st[0], "stream-2-with-fds;", fl, 2);
  close(p[0]);
  close(p[1]);
  close(inner[0]);
  close(inner[1]);
  put(st[0], "stream-3;");
  put(st[1], "back-1;");

  if (socketpair(AF_UNIX, SOCK_DGRAM, 0, dg) < 0) die("socketpair dgram");
  put(dg[0], "d1");
  put(dg[0], "dgram-2");
  put(dg[0], "d3");
  put(dg[1], "dback");

  if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sq) < 0) die("socketpair seqpacket");
  put(sq[0], "rec-1");
  put(sq[0], "record-2");

  snprintf(path, sizeof path, "%s/l.sock", dir);
  unlink(path);
  lst = socket(AF_UNIX, SOCK_STREAM, 0);
  if (bind(lst, (struct sockaddr *)&a, addr(&a, path, 0)) < 0) die("bind l.sock");
  if (listen(lst, 7) < 0) die("listen");
  cli1 = socket(AF_UNIX, SOCK_STREAM, 0);
  if (connect(cli1, (struct sockaddr *)&a, addr(&a, path, 0)) < 0) die("connect cli1");
  acc = accept(lst, NULL, NULL);
  if (acc < 0) die("accept");
  cli2 = socket(AF_UNIX, SOCK_STREAM, 0);
  if (connect(cli2, (struct sockaddr *)&a, addr(&a, path, 0)) < 0) die("connect cli2");
  put(cli1, "to-server");
  put(acc, "to-client");

  snprintf(abname, sizeof abname, "ck-unixsocks-%d", (int)getpid());
  ab = socket(AF_UNIX, SOCK_DGRAM, 0);
  if (bind(ab, (struct sockaddr *)&a, addr(&a, abname, 1)) < 0) die("bind abstract");
  setsockopt(ab, SOL_SOCKET, SO_PASSCRED, &one, sizeof one);
  named = socket(AF_UNIX, SOCK_DGRAM, 0);
  snprintf(path, sizeof path, "%s/n.sock", dir);
  unlink(path);
  if (bind(named, (struct sockaddr *)&a, addr(&a, path, 0)) < 0) die("bind n.sock");
  for (int i = 0; i < 2; i++) {
    const char *m = i ? "from-named-2" : "from-named-1";
    if (sendto(named, m, strlen(m), 0, (struct sockaddr *)&a, addr(&a, abname, 1)) < 0) die("sendto abstract");
  }

  snprintf(path, sizeof path, "%s/gone.sock", dir);
  del = socket(AF_UNIX, SOCK_DGRAM, 0);
  if (bind(del, (struct sockaddr *)&a, addr(&a, path, 0)) < 0) die("bind gone.sock");
  unlink(path);

  if (socketpair(AF_UNIX, SOCK_STREAM, 0, half) < 0) die("socketpair half");
  put(half[0], "last!");
  shutdown(half[0], SHUT_WR);

  int lp[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, lp) < 0) die("socketpair lone");
  put(lp[1], "bye.");
  close(lp[1]);
  lone = lp[0];

  plain = socket(AF_UNIX, SOCK_DGRAM, 0);
  int rb = 65536;
  setsockopt(plain, SOL_SOCKET, SO_RCVBUF, &rb, sizeof rb);
  struct timeval tv = {3, 500000};
  setsockopt(plain, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

static void check(void) {
  char buf[4096], path[300];
  int fds[8], n;
  pid_t pid;
  /* stream: the three writes with their fds on the right one */
  /* (a stream read goes on through the skb that carries fds, then stops) */
  if (get(st[1], buf, sizeof buf - 1, fds, &n, NULL) < 0 || strcmp(buf, "stream-1;stream-2-with-fds;") || n != 2)
    wl_fail("stream A->B 1+2: '%s' with %d fds", buf, n);
  expect(fds[0], "in the pipe", "the pipe in flight");
  expect(fds[1], "inner dgram", "the socket in flight");
  expect(st[1], "stream-3;", "stream A->B 3");
  expect_empty(st[1], "stream A->B");
  expect(st[0], "back-1;", "stream B->A");
  expect_empty(st[0], "stream B->A");
  talks(st[0], st[1], "stream pair");
  /* datagrams and records keep their boundaries */
  expect(dg[1], "d1", "dgram 1");
  expect(dg[1], "dgram-2", "dgram 2");
  expect(dg[1], "d3", "dgram 3");
  expect_empty(dg[1], "dgram A->B");
  expect(dg[0], "dback", "dgram B->A");
  talks(dg[1], dg[0], "dgram pair");
  expect(sq[1], "rec-1", "seqpacket 1");
  expect(sq[1], "record-2", "seqpacket 2");
  expect_empty(sq[1], "seqpacket");
  talks(sq[0], sq[1], "seqpacket pair");
  /* the listener, its accepted connection and the one still waiting */
  snprintf(path, sizeof path, "%s/l.sock", dir);
  name_is(lst, path, 0, "listener");
  name_is(acc, path, 0, "accepted socket");
  expect(acc, "to-server", "accepted <- client");
  expect(cli1, "to-client", "client <- accepted");
  talks(cli1, acc, "accepted connection");
  fcntl(lst, F_SETFL, O_NONBLOCK);
  int a2 = accept4(lst, NULL, NULL, SOCK_NONBLOCK);
  if (a2 < 0) wl_fail("the connection not yet accepted is gone: %s", strerror(errno));
  talks(cli2, a2, "late accepted connection");
  if (accept4(lst, NULL, NULL, SOCK_NONBLOCK) >= 0) wl_fail("a connection more than dumped");
  int bl = 0;
  socklen_t len = sizeof bl;
  struct stat sb;
  if (stat(path, &sb) < 0 || !S_ISSOCK(sb.st_mode)) wl_fail("%s is not a socket file", path);
  (void)bl, (void)len;
  /* credentials of datagrams from a named sender */
  snprintf(buf, sizeof buf, "ck-unixsocks-%d", (int)getpid());
  name_is(ab, buf, 1, "abstract socket");
  for (int i = 0; i < 2; i++) {
    struct sockaddr_un from;
    socklen_t fl = sizeof from;
    char ctl[CMSG_SPACE(sizeof(struct ucred))];
    struct iovec iov = {buf, sizeof buf - 1};
    struct msghdr mh = {0};
    mh.msg_name = &from, mh.msg_namelen = fl, mh.msg_iov = &iov, mh.msg_iovlen = 1;
    mh.msg_control = ctl, mh.msg_controllen = sizeof ctl;
    ssize_t k = recvmsg(ab, &mh, MSG_DONTWAIT);
    if (k < 0) wl_fail("datagram %d from the named socket is gone", i + 1);
    buf[k] = 0;
    if (strcmp(buf, i ? "from-named-2" : "from-named-1")) wl_fail("datagram %d: '%s'", i + 1, buf);
    snprintf(path, sizeof path, "%s/n.sock", dir);
    if (strcmp(from.sun_path, path)) wl_fail("datagram %d comes from '%s', not '%s'", i + 1, from.sun_path, path);
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    struct ucred uc = {0};
    if (!c || c->cmsg_type != SCM_CREDENTIALS) wl_fail("datagram %d has no credentials", i + 1);
    memcpy(&uc, CMSG_DATA(c), sizeof uc);
    if (uc.pid != getpid() || uc.uid != getuid()) wl_fail("datagram %d: credentials pid %d uid %d", i + 1, uc.pid, uc.uid);
  }
  (void)pid;
  /* a name whose file was deleted */
  snprintf(path, sizeof path, "%s/gone.sock", dir);
  name_is(del, path, 0, "socket of a deleted name");
  if (access(path, F_OK) == 0) wl_fail("%s exists again", path);
  /* shutdown, and a peer that was closed */
  expect(half[1], "last!", "half-closed pair");
  if (read(half[1], buf, 1) != 0) wl_fail("half-closed pair: no EOF after the data");
  put(half[1], "still");
  expect(half[0], "still", "half-closed pair, other way");
  expect(lone, "bye.", "pair with a closed peer");
  if (read(lone, buf, 1) != 0) wl_fail("pair with a closed peer: no EOF after the data");
  /* options */
  int rb = 0;
  len = sizeof rb;
  getsockopt(plain, SOL_SOCKET, SO_RCVBUF, &rb, &len);
  if (rb != 131072) wl_fail("SO_RCVBUF is %d, not 131072", rb);
  struct timeval tv;
  len = sizeof tv;
  getsockopt(plain, SOL_SOCKET, SO_RCVTIMEO, &tv, &len);
  if (tv.tv_sec != 3 || tv.tv_usec != 500000) wl_fail("SO_RCVTIMEO is %ld.%06ld", (long)tv.tv_sec, (long)tv.tv_usec);
  int pc = 0;
  len = sizeof pc;
  getsockopt(ab, SOL_SOCKET, SO_PASSCRED, &pc, &len);
  if (!pc) wl_fail("SO_PASSCRED is off");
  len = sizeof pc;
  getsockopt(st[1], SOL_SOCKET, SO_PASSCRED, &pc, &len);
  if (pc) wl_fail("SO_PASSCRED is on where it was off (the dump's own flag left behind?)");
  len = sizeof pc;
  getsockopt(st[1], SOL_SOCKET, SO_PEEK_OFF, &pc, &len);
  if (pc != -1) wl_fail("SO_PEEK_OFF is %d (the dump's own offset left behind?)", pc);
}

int main(int argc, char **argv) {
  if (argc < 2) wl_fail("usage: unixsocks DIR");
  snprintf(dir, sizeof dir, "%s", argv[1]);
  wl_init();
  setup();
  wl_ready();
  while (!wl_check_requested) pause();
  check();
  wl_pass();
}
