/* An LD_PRELOAD shim for the fault matrix: memory allocation fails on
 * demand, in the one process that loaded it.
 *   CK_FAILMALLOC=N     the Nth allocation (malloc, calloc, realloc,
 *                       posix_memalign, aligned_alloc, memalign; counted
 *                       from 1) and every one after it fail with ENOMEM
 *   CK_FAILMALLOC=N:M   only M of them, from the Nth on (a passing shortage)
 *   CK_FAILMALLOC_REPORT=FILE   writes the number of allocations the
 *                       process made into FILE when it exits (the matrix
 *                       picks its points from it)
 * At load it removes itself from the environment (LD_PRELOAD and
 * CK_FAILMALLOC), so that what the process runs (ck-freeze's COMMAND)
 * allocates as usual.  Without CK_FAILMALLOC it does nothing. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static unsigned long fail_from, fail_count;  /* fail_from 0: never */
static unsigned long calls;
static char report[4096];

__attribute__((constructor)) static void failmalloc_init(void) {
  const char *s = getenv("CK_FAILMALLOC");
  if (s) {
    char *end;
    fail_from = strtoul(s, &end, 10);
    fail_count = *end == ':' ? strtoul(end + 1, NULL, 10) : (unsigned long)-1;
  }
  const char *r = getenv("CK_FAILMALLOC_REPORT");
  if (r && strlen(r) < sizeof report) strcpy(report, r);
  unsetenv("CK_FAILMALLOC_REPORT");
  unsetenv("CK_FAILMALLOC");
  unsetenv("LD_PRELOAD");
}

__attribute__((destructor)) static void failmalloc_report(void) {
  if (!report[0]) return;
  char buf[32];
  int len = snprintf(buf, sizeof buf, "%lu\n", calls);
  int fd = open(report, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return;
  if (write(fd, buf, (size_t)len) < 0) {
  }
  close(fd);
}

static int fail_now(void) {
  unsigned long n = __atomic_add_fetch(&calls, 1, __ATOMIC_RELAXED);
  if (fail_from && n >= fail_from && n - fail_from < fail_count) {
    errno = ENOMEM;
    return 1;
  }
  return 0;
}

void *malloc(size_t n) { return fail_now() ? NULL : __libc_malloc(n); }
void *calloc(size_t a, size_t b) { return fail_now() ? NULL : __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { return fail_now() ? NULL : __libc_realloc(p, n); }
void *memalign(size_t a, size_t n) { return fail_now() ? NULL : __libc_memalign(a, n); }
void *aligned_alloc(size_t a, size_t n) { return fail_now() ? NULL : __libc_memalign(a, n); }
int posix_memalign(void **out, size_t a, size_t n) {
  if (fail_now()) return ENOMEM;
  void *p = __libc_memalign(a, n);
  if (!p) return ENOMEM;
  *out = p;
  return 0;
}
