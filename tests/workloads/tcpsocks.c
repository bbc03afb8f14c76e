/* TCP sockets in every state ck dumps, both ends of each connection in this
 * process, IPv4, IPv6 and v4-mapped, with queues in both directions, and a
 * check of each after restore.
 *   tcpsocks
 * Run it in a network namespace of its own with lo up (the test does).
 *   l4     listener 127.0.0.1:0, SO_REUSEADDR, backlog 5
 *   l6     listener [::]:0 dual-stack, SO_REUSEPORT, backlog 9
 *   unb    unbound socket with TCP_NODELAY;  bnd: bound to 127.0.0.1:0, IP_TOS 0x10
 *   c4/a4  established over IPv4: 3000 bytes c4->a4 and 1000 a4->c4 unread;
 *          c4 with NODELAY, keepalive 600/30/4, USER_TIMEOUT, LINGER,
 *          SO_SNDBUF, a socket filter, IP_TTL
 *   c6/a6  established over IPv6: 5000 bytes c6->a6, "ok6" a6->c6
 *   m/am   an IPv6 socket connected to ::ffff:127.0.0.1 (v4-mapped)
 *   zr/zs  zs sent until its peer's window closed: unsent data queued
 *   gr/gs  as zr/zs, then gs shut down: FIN-WAIT-1 with the FIN unsent
 *   f1/f2  f1 wrote and shut down: f1 FIN-WAIT-2, f2 CLOSE-WAIT with data+EOF
 *   h1/h2  h1 shut down, then h2 filled h1's window and shut down: LAST-ACK
 *   ks/kb  kb filled ks's window and shut down, then ks shut down: kb
 *          CLOSING, ks FIN-WAIT-2
 * On SIGUSR2: states, options, every byte of every queue, EOFs, then every
 * connection still talks and the listeners take new connections. */
#include "wl.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

static int l4, l6, unb, bnd, c4, a4, c6, a6, m, am, zr, zs, gr, gs, f1, f2, h1, h2, ks, kb;
static uint16_t p4, p6, pb;
static long nz, ng, nh, nk;

static void die(const char *what) { wl_fail("%s: %s", what, strerror(errno)); }

static void seti(int fd, int level, int name, int v, const char *what) {
  if (setsockopt(fd, level, name, &v, sizeof v) < 0) die(what);
}

static int geti(int fd, int level, int name) {
  int v = -12345;
  socklen_t len = sizeof v;
  if (getsockopt(fd, level, name, &v, &len) < 0) die("getsockopt");
  return v;
}

static int state(int fd) {
  struct tcp_info ti;
  socklen_t len = sizeof ti;
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0) die("TCP_INFO");
  return ti.tcpi_state;
}

static uint16_t port_of(int fd) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) die("getsockname");
  return ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port : ((struct sockaddr_in6 *)&ss)->sin6_port);
}

static int tcp(int family) {
  int fd = socket(family, SOCK_STREAM, 0);
  if (fd < 0) die("socket");
  return fd;
}

static void to4(int fd, uint16_t port) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) die("connect 127.0.0.1");
}

static void to6(int fd, const char *addr, uint16_t port) {
  struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(port)};
  inet_pton(AF_INET6, addr, &a.sin6_addr);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) die("connect IPv6");
}

static int acc(int l) {
  int fd = accept(l, NULL, NULL);
  if (fd < 0) die("accept");
  return fd;
}

static unsigned char pat(long i, int seed) { return (unsigned char)(i * 7 + seed); }

static void put_pat(int fd, long n, int seed) {
  unsigned char buf[4096];
  for (long off = 0; off < n;) {
    long k = n - off < (long)sizeof buf ? n - off : (long)sizeof buf;
    for (long i = 0; i < k; i++) buf[i] = pat(off + i, seed);
    ssize_t w = write(fd, buf, k);
    if (w < 0) die("write");
    off += w;
  }
}

/* Writes the pattern until the peer's window and our buffer are full. */
static long fill(int fd, int seed) {
  fcntl(fd, F_SETFL, O_NONBLOCK);
  long n = 0;
  unsigned char buf[1024];
  for (int idle = 0; idle < 20;) {
    for (int i = 0; i < (int)sizeof buf; i++) buf[i] = pat(n + i, seed);
    ssize_t w = write(fd, buf, sizeof buf);
    if (w > 0) {
      n += w;
      idle = 0;
    } else if (errno == EAGAIN) {
      usleep(10000);
      idle++;
    } else {
      die("write (fill)");
    }
  }
  fcntl(fd, F_SETFL, 0);
  return n;
}

static void put(int fd, const char *s) {
  if (write(fd, s, strlen(s)) != (ssize_t)strlen(s)) die("write");
}

/* Reads exactly n bytes of the pattern (a reset or an early EOF fails). */
static void expect_pat(int fd, long n, int seed, const char *what) {
  unsigned char buf[4096];
  for (long off = 0; off < n;) {
    long k = n - off < (long)sizeof buf ? n - off : (long)sizeof buf;
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 20000) != 1) wl_fail("%s: no data after %ld of %ld bytes", what, off, n);
    ssize_t r = read(fd, buf, k);
    if (r < 0) wl_fail("%s: read after %ld of %ld bytes: %s", what, off, n, strerror(errno));
    if (r == 0) wl_fail("%s: EOF after %ld of %ld bytes", what, off, n);
    for (long i = 0; i < r; i++)
      if (buf[i] != pat(off + i, seed)) wl_fail("%s: byte %ld is %u, not %u", what, off + i, buf[i], pat(off + i, seed));
    off += r;
  }
}

static void expect(int fd, const char *s, const char *what) {
  char buf[256];
  size_t n = strlen(s), got = 0;
  while (got < n) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 20000) != 1) wl_fail("%s: nothing to read", what);
    ssize_t r = read(fd, buf + got, n - got);
    if (r <= 0) wl_fail("%s: %s", what, r ? strerror(errno) : "EOF");
    got += r;
  }
  buf[n] = 0;
  if (strcmp(buf, s)) wl_fail("%s: read '%s', not '%s'", what, buf, s);
}

static void expect_eof(int fd, const char *what) {
  char c;
  struct pollfd p = {fd, POLLIN, 0};
  if (poll(&p, 1, 20000) != 1) wl_fail("%s: no EOF", what);
  ssize_t r = read(fd, &c, 1);
  if (r != 0) wl_fail("%s: %s instead of EOF", what, r < 0 ? strerror(errno) : "data");
}

static void talks(int a, int b, const char *what) {
  put(a, "ping");
  expect(b, "ping", what);
  put(b, "pong");
  expect(a, "pong", what);
}

static void expect_state(int fd, int want, const char *what) {
  int st = state(fd);
  if (st != want) wl_fail("%s: TCP state %d, not %d", what, st, want);
}

static void setup(void) {
  l4 = tcp(AF_INET);
  seti(l4, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR");
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (bind(l4, (struct sockaddr *)&a, sizeof a) < 0 || listen(l4, 5) < 0) die("l4");
  p4 = port_of(l4);
  l6 = tcp(AF_INET6);
  seti(l6, SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT");
  seti(l6, IPPROTO_IPV6, IPV6_V6ONLY, 0, "IPV6_V6ONLY");
  struct sockaddr_in6 a6_ = {.sin6_family = AF_INET6, .sin6_addr = in6addr_any};
  if (bind(l6, (struct sockaddr *)&a6_, sizeof a6_) < 0 || listen(l6, 9) < 0) die("l6");
  p6 = port_of(l6);
  unb = tcp(AF_INET);
  seti(unb, IPPROTO_TCP, TCP_NODELAY, 1, "TCP_NODELAY");
  bnd = tcp(AF_INET);
  seti(bnd, IPPROTO_IP, IP_TOS, 0x10, "IP_TOS");
  if (bind(bnd, (struct sockaddr *)&a, sizeof a) < 0) die("bind bnd");
  pb = port_of(bnd);

  c4 = tcp(AF_INET);
  seti(c4, SOL_SOCKET, SO_SNDBUF, 65536, "SO_SNDBUF");
  to4(c4, p4);
  a4 = acc(l4);
  seti(c4, IPPROTO_TCP, TCP_NODELAY, 1, "TCP_NODELAY");
  seti(c4, SOL_SOCKET, SO_KEEPALIVE, 1, "SO_KEEPALIVE");
  seti(c4, IPPROTO_TCP, TCP_KEEPIDLE, 600, "TCP_KEEPIDLE");
  seti(c4, IPPROTO_TCP, TCP_KEEPINTVL, 30, "TCP_KEEPINTVL");
  seti(c4, IPPROTO_TCP, TCP_KEEPCNT, 4, "TCP_KEEPCNT");
  seti(c4, IPPROTO_TCP, TCP_USER_TIMEOUT, 12345, "TCP_USER_TIMEOUT");
  seti(c4, IPPROTO_IP, IP_TTL, 33, "IP_TTL");
  struct linger lg = {1, 7};
  if (setsockopt(c4, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) < 0) die("SO_LINGER");
  struct sock_filter prog[] = {BPF_STMT(BPF_RET | BPF_K, 0xffffffff)};
  struct sock_fprog fp = {1, prog};
  if (setsockopt(c4, SOL_SOCKET, SO_ATTACH_FILTER, &fp, sizeof fp) < 0) die("SO_ATTACH_FILTER");
  put_pat(c4, 3000, 1);
  put_pat(a4, 1000, 2);

  c6 = tcp(AF_INET6);
  seti(c6, IPPROTO_IPV6, IPV6_TCLASS, 0x20, "IPV6_TCLASS");
  to6(c6, "::1", p6);
  a6 = acc(l6);
  put_pat(c6, 5000, 3);
  put(a6, "ok6");

  m = tcp(AF_INET6);
  to6(m, "::ffff:127.0.0.1", p4);
  am = acc(l4);
  put(m, "mapped");

  /* Small receive buffers (before connect: the window scale follows). */
  int *small[] = {&zr, &gr, &h1, &ks};
  int *big[] = {&zs, &gs, &h2, &kb};
  for (int i = 0; i < 4; i++) {
    *small[i] = tcp(AF_INET);
    seti(*small[i], SOL_SOCKET, SO_RCVBUF, 2048, "SO_RCVBUF");
    to4(*small[i], p4);
    *big[i] = acc(l4);
    seti(*big[i], SOL_SOCKET, SO_SNDBUF, 16384, "SO_SNDBUF");
  }
  nz = fill(zs, 4);
  ng = fill(gs, 5);
  if (shutdown(gs, SHUT_WR) < 0) die("shutdown gs");
  if (shutdown(h1, SHUT_WR) < 0) die("shutdown h1");
  usleep(50000);
  nh = fill(h2, 6);
  if (shutdown(h2, SHUT_WR) < 0) die("shutdown h2");
  nk = fill(kb, 7);
  if (shutdown(kb, SHUT_WR) < 0) die("shutdown kb");
  if (shutdown(ks, SHUT_WR) < 0) die("shutdown ks");

  f1 = tcp(AF_INET);
  to4(f1, p4);
  f2 = acc(l4);
  put(f1, "bye-f1");
  put(f2, "to-f1");
  if (shutdown(f1, SHUT_WR) < 0) die("shutdown f1");
  usleep(100000);
  struct {
    int fd, want;
    const char *name;
  } st[] = {{c4, TCP_ESTABLISHED, "c4"}, {gs, TCP_FIN_WAIT1, "gs"}, {f1, TCP_FIN_WAIT2, "f1"}, {f2, TCP_CLOSE_WAIT, "f2"},
            {h1, TCP_FIN_WAIT2, "h1"},   {h2, TCP_LAST_ACK, "h2"},  {kb, TCP_CLOSING, "kb"},   {ks, TCP_FIN_WAIT2, "ks"}};
  for (size_t i = 0; i < sizeof st / sizeof st[0]; i++) expect_state(st[i].fd, st[i].want, st[i].name);
  if (nz < 4096 || ng < 4096 || nh < 4096 || nk < 4096) wl_fail("windows closed too early: %ld %ld %ld %ld", nz, ng, nh, nk);
  wl_say("INFO p4=%u p6=%u nz=%ld ng=%ld nh=%ld nk=%ld", p4, p6, nz, ng, nh, nk);
}

static void check(void) {
  /* States first, before anything is read. */
  struct {
    int fd, want;
    const char *name;
  } st[] = {{l4, TCP_LISTEN, "l4"},       {l6, TCP_LISTEN, "l6"},       {unb, TCP_CLOSE, "unb"},      {bnd, TCP_CLOSE, "bnd"},
            {c4, TCP_ESTABLISHED, "c4"},  {a4, TCP_ESTABLISHED, "a4"},  {c6, TCP_ESTABLISHED, "c6"},  {a6, TCP_ESTABLISHED, "a6"},
            {m, TCP_ESTABLISHED, "m"},    {am, TCP_ESTABLISHED, "am"},  {zr, TCP_ESTABLISHED, "zr"},  {zs, TCP_ESTABLISHED, "zs"},
            {gr, TCP_ESTABLISHED, "gr"},  {gs, TCP_FIN_WAIT1, "gs"},    {f1, TCP_FIN_WAIT2, "f1"},    {f2, TCP_CLOSE_WAIT, "f2"},
            {h1, TCP_FIN_WAIT2, "h1"},    {h2, TCP_LAST_ACK, "h2"},     {kb, TCP_CLOSING, "kb"},      {ks, TCP_FIN_WAIT2, "ks"}};
  for (size_t i = 0; i < sizeof st / sizeof st[0]; i++) expect_state(st[i].fd, st[i].want, st[i].name);
  int nsd = 0;
  if (ioctl(zs, SIOCOUTQNSD, &nsd) < 0 || nsd <= 0) wl_fail("zs has no unsent data (%d)", nsd);
  /* Addresses and options. */
  if (port_of(l4) != p4 || port_of(l6) != p6 || port_of(bnd) != pb) wl_fail("a listening or bound port changed");
  if (geti(l4, SOL_SOCKET, SO_REUSEADDR) != 1) wl_fail("l4: SO_REUSEADDR off");
  if (geti(l6, SOL_SOCKET, SO_REUSEPORT) != 1) wl_fail("l6: SO_REUSEPORT off");
  if (geti(l6, IPPROTO_IPV6, IPV6_V6ONLY) != 0) wl_fail("l6: IPV6_V6ONLY on");
  if (geti(unb, IPPROTO_TCP, TCP_NODELAY) != 1) wl_fail("unb: TCP_NODELAY off");
  if (geti(bnd, IPPROTO_IP, IP_TOS) != 0x10) wl_fail("bnd: IP_TOS %#x", geti(bnd, IPPROTO_IP, IP_TOS));
  if (geti(c4, IPPROTO_TCP, TCP_NODELAY) != 1) wl_fail("c4: TCP_NODELAY off");
  if (geti(c4, SOL_SOCKET, SO_KEEPALIVE) != 1) wl_fail("c4: SO_KEEPALIVE off");
  if (geti(c4, IPPROTO_TCP, TCP_KEEPIDLE) != 600 || geti(c4, IPPROTO_TCP, TCP_KEEPINTVL) != 30 || geti(c4, IPPROTO_TCP, TCP_KEEPCNT) != 4)
    wl_fail("c4: keepalive timers %d/%d/%d", geti(c4, IPPROTO_TCP, TCP_KEEPIDLE), geti(c4, IPPROTO_TCP, TCP_KEEPINTVL),
            geti(c4, IPPROTO_TCP, TCP_KEEPCNT));
  if (geti(c4, IPPROTO_TCP, TCP_USER_TIMEOUT) != 12345) wl_fail("c4: TCP_USER_TIMEOUT %d", geti(c4, IPPROTO_TCP, TCP_USER_TIMEOUT));
  if (geti(c4, IPPROTO_IP, IP_TTL) != 33) wl_fail("c4: IP_TTL %d", geti(c4, IPPROTO_IP, IP_TTL));
  if (geti(c4, SOL_SOCKET, SO_SNDBUF) != 131072) wl_fail("c4: SO_SNDBUF %d", geti(c4, SOL_SOCKET, SO_SNDBUF));
  if (geti(c6, IPPROTO_IPV6, IPV6_TCLASS) != 0x20) wl_fail("c6: IPV6_TCLASS %#x", geti(c6, IPPROTO_IPV6, IPV6_TCLASS));
  struct linger lg;
  socklen_t len = sizeof lg;
  if (getsockopt(c4, SOL_SOCKET, SO_LINGER, &lg, &len) < 0 || !lg.l_onoff || lg.l_linger != 7) wl_fail("c4: SO_LINGER");
  len = 0;
  if (getsockopt(c4, SOL_SOCKET, SO_GET_FILTER, NULL, &len) < 0 || len != 1) wl_fail("c4: no socket filter (%u)", len);
  struct sockaddr_in6 pa;
  len = sizeof pa;
  char buf[64];
  if (getpeername(m, (struct sockaddr *)&pa, &len) < 0 || !inet_ntop(AF_INET6, &pa.sin6_addr, buf, sizeof buf) ||
      strcmp(buf, "::ffff:127.0.0.1") || ntohs(pa.sin6_port) != p4)
    wl_fail("m: peer is not [::ffff:127.0.0.1]:%u", p4);
  /* Every queue, byte by byte. */
  expect_pat(a4, 3000, 1, "a4 <- c4");
  expect_pat(c4, 1000, 2, "c4 <- a4");
  expect_pat(a6, 5000, 3, "a6 <- c6");
  expect(c6, "ok6", "c6 <- a6");
  expect(am, "mapped", "am <- m");
  expect_pat(zr, nz, 4, "zr <- zs");
  expect_pat(gr, ng, 5, "gr <- gs");
  expect_eof(gr, "gr after gs's FIN");
  expect(f2, "bye-f1", "f2 <- f1");
  expect_eof(f2, "f2 after f1's FIN");
  expect(f1, "to-f1", "f1 <- f2");
  expect_pat(h1, nh, 6, "h1 <- h2");
  expect_eof(h1, "h1 after h2's FIN");
  expect_pat(ks, nk, 7, "ks <- kb");
  expect_eof(ks, "ks after kb's FIN");
  expect_eof(kb, "kb after ks's FIN");
  /* Still talking. */
  talks(c4, a4, "c4/a4");
  talks(c6, a6, "c6/a6");
  talks(m, am, "m/am");
  talks(zr, zs, "zr/zs");
  put(f2, "after");
  expect(f1, "after", "f1 <- f2 after the restore");
  put(gr, "back");
  expect(gs, "back", "gs <- gr (half closed)");
  /* The listeners take new connections, IPv4 and IPv6 ones. */
  int n4 = tcp(AF_INET), n6 = tcp(AF_INET6), n46 = tcp(AF_INET);
  to4(n4, p4);
  int a = acc(l4);
  talks(n4, a, "new connection to l4");
  to6(n6, "::1", p6);
  int b = acc(l6);
  talks(n6, b, "new IPv6 connection to l6");
  to4(n46, p6);
  int c = acc(l6);
  talks(n46, c, "new IPv4 connection to the dual-stack l6");
  to4(unb, p4);
  int d = acc(l4);
  talks(unb, d, "the unbound socket, connected now");
  /* The closing ones end as they would have. */
  for (int i = 0; i < 200 && (state(gs) != TCP_FIN_WAIT2 || state(h2) != TCP_CLOSE || state(kb) != TCP_CLOSE); i++) usleep(10000);
  if (state(gs) != TCP_FIN_WAIT2) wl_fail("gs: state %d once its data was read, not FIN-WAIT-2", state(gs));
  if (state(h2) != TCP_CLOSE) wl_fail("h2: state %d once its FIN was read, not CLOSE", state(h2));
  if (state(kb) != TCP_CLOSE) wl_fail("kb: state %d once its FIN was read, not CLOSE", state(kb));
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  wl_init();
  setup();
  wl_ready();
  while (!wl_check_requested) pause();
  check();
  wl_pass();
}
