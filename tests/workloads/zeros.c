/* Like counter, but N MiB (argv[1], default 64) that are mostly zeros: every
 * page is populated (written), and one page in 64 holds a non-zero byte.
 * Reports INFO data=ADDR len=LEN fnv=SUM nonzero=PAGES; on SIGUSR2 checks
 * that the region is unchanged and the counter moved. */
#include "wl.h"

#include <sys/mman.h>

int main(int argc, char **argv) {
  size_t mib = argc > 1 ? strtoul(argv[1], NULL, 0) : 64;
  size_t len = mib << 20, pages = len / 4096;
  wl_init();
  unsigned char *data = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (data == MAP_FAILED) wl_fail("mmap: %s", strerror(errno));
  madvise(data, len, MADV_NOHUGEPAGE); /* one real 4 KiB page per page, not the zero page */
  for (size_t p = 0; p < pages; p++) data[p * 4096 + 100] = 0; /* populate */
  size_t nonzero = 0;
  for (size_t p = 0; p < pages; p += 64) {
    data[p * 4096 + (p % 4000)] = (unsigned char)(p / 64 % 255 + 1);
    nonzero++;
  }
  uint64_t sum = wl_fnv64(data, len);
  wl_say("INFO data=%#lx len=%zu fnv=%#lx nonzero=%zu", (unsigned long)data, len, (unsigned long)sum, nonzero);
  volatile uint64_t counter = 0;
  wl_ready();
  while (!wl_check_requested) {
    counter++;
    if ((counter & 0xfffff) == 0) usleep(1000);
  }
  for (size_t p = 0; p < pages; p++)
    for (size_t i = 0; i < 4096; i++) {
      unsigned char want = (p % 64 == 0 && i == p % 4000) ? (unsigned char)(p / 64 % 255 + 1) : 0;
      if (data[p * 4096 + i] != want) wl_fail("byte %zu of page %zu changed", i, p);
    }
  if (wl_fnv64(data, len) != sum) wl_fail("checksum changed");
  if (counter == 0) wl_fail("counter never moved");
  wl_pass();
}
