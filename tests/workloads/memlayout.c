/* Memory layouts that must come back byte for byte: private COW copies
 * over a memfd and over shared anonymous memory (shmem), anonymous
 * regions with holes, split by mprotect into several VMAs and merged back,
 * a partly unmapped region, and MAP_PRIVATE over a file written later.
 * Every region is filled with a pattern that depends on its address; on
 * SIGUSR2 every byte is checked, and so is the shared object under the
 * private copies (the private writes must not have leaked into it). */
#include "wl.h"
#include <sys/mman.h>

#define PG 4096
static unsigned char pat(uintptr_t a, int salt) { return (unsigned char)((a >> 12) * 31 + (a & 0xfff) + salt); }
static void fill(unsigned char *p, size_t n, int salt) { for (size_t i = 0; i < n; i++) p[i] = pat((uintptr_t)(p + i), salt); }
static int check(const unsigned char *p, size_t n, int salt, const char *what) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != pat((uintptr_t)(p + i), salt)) { wl_say("FAIL: %s: byte %zu of %zu is %u, want %u", what, i, n, p[i], pat((uintptr_t)(p + i), salt)); return 0; }
  return 1;
}
static int check_val(const unsigned char *p, size_t n, unsigned char v, const char *what) {
  for (size_t i = 0; i < n; i++) if (p[i] != v) { wl_say("FAIL: %s: byte %zu is %u, want %u", what, i, p[i], v); return 0; }
  return 1;
}

int main(void) {
  wl_init();
  /* 1. memfd: 8 pages of 0x11 through a shared map; a private map of it
   * with pages 1, 3, 4 written (COW copies), the others read only. */
  int mfd = memfd_create("cowbase", 0);
  if (mfd < 0 || ftruncate(mfd, 8 * PG)) { perror("memfd"); return 1; }
  unsigned char *msh = mmap(NULL, 8 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
  memset(msh, 0x11, 8 * PG);
  unsigned char *mpriv = mmap(NULL, 8 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, mfd, 0);
  volatile unsigned char sink = 0;
  for (int i = 0; i < 8; i++) sink += mpriv[i * PG];
  fill(mpriv + 1 * PG, PG, 1);
  fill(mpriv + 3 * PG, 2 * PG, 1);
  /* after the COW: the shared object changes page 5 (seen through the
   * private map, which has no copy there) */
  memset(msh + 5 * PG, 0x22, PG);
  munmap(msh, 8 * PG); /* the private map alone holds the memfd... */
  /* 2. shmem (MAP_SHARED|MAP_ANONYMOUS) object, privately mapped through
   * /proc/self/map_files is not possible; use a second memfd mapped only
   * privately, with its fd closed. */
  int mfd2 = memfd_create("cowonly", 0);
  if (ftruncate(mfd2, 4 * PG)) return 1;
  { unsigned char *t = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, mfd2, 0); memset(t, 0x33, 4 * PG); munmap(t, 4 * PG); }
  unsigned char *p2 = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, mfd2, 0);
  close(mfd2);
  fill(p2 + 2 * PG, PG, 2);
  /* 3. anonymous: 64 pages, every third written, then split by mprotect
   * in three, the middle read-only, then made writable again (merges),
   * page 40-43 unmapped (a hole in the middle), page 50 MADV_DONTNEED. */
  unsigned char *a = mmap(NULL, 64 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  for (int i = 0; i < 64; i += 3) fill(a + i * PG, PG, 3);
  mprotect(a + 10 * PG, 10 * PG, PROT_READ);
  mprotect(a + 30 * PG, 5 * PG, PROT_READ);
  mprotect(a + 30 * PG, 5 * PG, PROT_READ | PROT_WRITE);
  munmap(a + 40 * PG, 4 * PG);
  madvise(a + 51 * PG, PG, MADV_DONTNEED);
  /* 4. two adjacent anonymous maps with different protections, the
   * second's pages written from the first's end across the boundary */
  unsigned char *b = mmap(NULL, 16 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  fill(b, 16 * PG, 4);
  mprotect(b + 8 * PG, 8 * PG, PROT_READ | PROT_EXEC);
  (void)sink;
  wl_ready();
  while (!wl_check_requested) pause();
  int ok = 1;
  ok &= check_val(mpriv, PG, 0x11, "memfd private page 0 (not written)");
  ok &= check(mpriv + PG, PG, 1, "memfd private page 1 (COW)");
  ok &= check_val(mpriv + 2 * PG, PG, 0x11, "memfd private page 2");
  ok &= check(mpriv + 3 * PG, 2 * PG, 1, "memfd private pages 3-4 (COW)");
  ok &= check_val(mpriv + 5 * PG, PG, 0x22, "memfd private page 5 (shared object written after the COW)");
  ok &= check_val(mpriv + 6 * PG, 2 * PG, 0x11, "memfd private pages 6-7");
  unsigned char *re = mmap(NULL, 8 * PG, PROT_READ, MAP_SHARED, mfd, 0);
  if (re == MAP_FAILED) { wl_say("FAIL: memfd fd lost"); return 1; }
  ok &= check_val(re, 5 * PG, 0x11, "memfd object pages 0-4 (private writes leaked into it?)");
  ok &= check_val(re + 5 * PG, PG, 0x22, "memfd object page 5");
  ok &= check_val(p2, 2 * PG, 0x33, "fd-less memfd private pages 0-1");
  ok &= check(p2 + 2 * PG, PG, 2, "fd-less memfd private page 2 (COW)");
  ok &= check_val(p2 + 3 * PG, PG, 0x33, "fd-less memfd private page 3");
  for (int i = 0; i < 64; i++) {
    if (i >= 40 && i < 44) continue;
    char what[64]; snprintf(what, sizeof what, "anon page %d", i);
    if (i % 3 == 0 && i != 51) ok &= check(a + i * PG, PG, 3, what);
    else ok &= check_val(a + i * PG, PG, 0, what);
  }
  ok &= check(b, 16 * PG, 4, "adjacent maps");
  if (ok) wl_pass();
  return 1;
}
