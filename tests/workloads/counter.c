/* A counter loop with 64 MiB (or argv[1] MiB) of pseudo-random data.
 * Reports the FNV-1a checksum of the data region and its address; on
 * SIGUSR2 checks the data against its seed and that the counter moved on. */
#include "wl.h"

#include <sys/mman.h>

int main(int argc, char **argv) {
  size_t mib = argc > 1 ? strtoul(argv[1], NULL, 0) : 64;
  size_t len = mib << 20;
  wl_init();
  uint64_t *data = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (data == MAP_FAILED) wl_fail("mmap: %s", strerror(errno));
  uint64_t seed = 0x1234567 ^ (uint64_t)getpid();
  uint64_t s = seed;
  for (size_t i = 0; i < len / 8; i++) data[i] = wl_rand(&s);
  uint64_t sum = wl_fnv64(data, len);
  wl_say("INFO data=%#lx len=%zu fnv=%#lx", (unsigned long)data, len, (unsigned long)sum);
  volatile uint64_t counter = 0;
  wl_ready();
  while (!wl_check_requested) {
    counter++;
    if ((counter & 0xfffff) == 0) usleep(1000);
  }
  uint64_t at_check = counter;
  s = seed;
  for (size_t i = 0; i < len / 8; i++)
    if (data[i] != wl_rand(&s)) wl_fail("data word %zu changed", i);
  if (wl_fnv64(data, len) != sum) wl_fail("checksum changed");
  if (at_check == 0) wl_fail("counter never moved");
  wl_say("INFO counter=%lu", (unsigned long)at_check);
  wl_pass();
}
