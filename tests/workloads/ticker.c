/* The demo's sample process: counts, prints "tick N" five times a second,
 * and keeps 16 MiB of data whose checksum it checks on SIGUSR2. */
#include "wl.h"

#include <time.h>

int main(void) {
  static uint64_t data[2 << 20];
  uint64_t s = 42;
  for (size_t i = 0; i < sizeof data / 8; i++) data[i] = wl_rand(&s);
  uint64_t sum = wl_fnv64(data, sizeof data);
  wl_init();
  wl_ready();
  for (unsigned long n = 1; !wl_check_requested; n++) {
    wl_say("tick %lu", n);
    struct timespec ts = {0, 200 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  if (wl_fnv64(data, sizeof data) != sum) wl_fail("data changed");
  wl_pass();
}
