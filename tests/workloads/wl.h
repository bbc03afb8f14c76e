/* Workload harness shared by the test programs in tests/workloads/.
 *
 * Protocol with the test harness (tests/bats/helpers.bash):
 *  - the workload sets up its state, then prints "READY <pid>" on stdout
 *    (the harness redirects stdout to a file and waits for that line);
 *  - on SIGUSR2 it checks its own state (after a restore, that is the
 *    point) and prints "PASS" or "FAIL: why", then exits 0 or 1;
 *  - extra lines ("INFO key=value") report facts the harness compares
 *    with the image, such as checksums of its memory.
 * Output goes through write(2) on fd 1, unbuffered, so nothing sits in a
 * stdio buffer across a dump.
 */
#ifndef CK_WL_H
#define CK_WL_H
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t wl_check_requested;

static void wl_on_usr2(int sig) {
  (void)sig;
  wl_check_requested = 1;
}

static void wl_say(const char *fmt, ...) __attribute__((format(printf, 1, 2), unused));
static void wl_say(const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if (n > (int)sizeof buf - 2) n = sizeof buf - 2;
  buf[n++] = '\n';
  ssize_t w = write(1, buf, n);
  (void)w;
}

/* Installs the SIGUSR2 handler (no SA_RESTART: a blocked syscall returns
 * EINTR so the workload can notice the request). */
__attribute__((unused)) static void wl_init(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = wl_on_usr2;
  sigaction(SIGUSR2, &sa, NULL);
}

__attribute__((unused)) static void wl_ready(void) { wl_say("READY %d", (int)getpid()); }

__attribute__((unused)) static void wl_pass(void) {
  wl_say("PASS");
  exit(0);
}

static void wl_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn, unused));
static void wl_fail(const char *fmt, ...) {
  char buf[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  wl_say("FAIL: %s", buf);
  exit(1);
}

/* FNV-1a 64 over a byte range: ck-crit sum computes the same. */
__attribute__((unused)) static uint64_t wl_fnv64(const void *p, size_t n) {
  const unsigned char *c = (const unsigned char *)p;
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < n; i++) {
    h ^= c[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

/* xorshift64*: deterministic "random" content that a check can regenerate. */
__attribute__((unused)) static uint64_t wl_rand(uint64_t *s) {
  uint64_t x = *s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * 0x2545F4914F6CDD1DULL;
}

#endif
