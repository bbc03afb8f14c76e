/* writer: keeps writing whole pages of an N MiB buffer at a known rate; each
 * page tells which write it saw last, so after a restore the workload can
 * check that every page holds exactly the last write made to it.
 *
 *   writer [-m MIB] [-r PAGES_PER_SEC] [-a fork|exec|remap|drop] [-f FILE]
 *
 * Write k (k = 0, 1, 2, ...) goes to page (k * STEP) mod N (STEP odd, so the
 * first N writes fill every page once) and stores k in the page's header,
 * the page index next, and a pattern of (page, k) in the rest; `done` counts
 * the writes made.  The check (SIGUSR2) needs nothing but `done`: the last
 * write to page p is the largest k < done with page(k) == p, and a page that
 * holds an older or newer write, or a torn one, fails.
 * SIGUSR1 does the -a action once: fork (the child keeps writing its own copy
 * and prints "CHILD <pid>"), exec (the program runs itself again, same pid,
 * starts over and prints READY again), remap (the buffer moves to a new
 * address with mremap, and a new mapping is made and written), drop (pages
 * are given back with MADV_DONTNEED: see below).
 * Besides the buffer, two regions nothing writes after READY: "drop", 4 MiB
 * of anonymous memory aligned to 2 MiB, page i full of drop_word(i); and,
 * with -f FILE, a private mapping of FILE (created: 64 pages, page i full
 * of file_word(i)) whose every page was written (COW) with cow_word(i).  The
 * drop action gives back pages 512-1023 of "drop" (a whole page table's
 * worth), pages 100-115, then reads page 105; and pages 8-23 of the file
 * mapping, then reads page 10.  The check wants dropped anonymous pages to
 * read zero, dropped file pages to hold the file's contents, every other
 * page what was written to it.
 * Prints "INFO addr=0x... pages=N" and "READY pid"; "WROTE k" on SIGUSR1 too.
 */
#include "wl.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <time.h>

#define STEP 40503ULL

static volatile sig_atomic_t usr1;
static void on_usr1(int s) {
  (void)s;
  usr1 = 1;
}

static uint64_t npages;
static unsigned char *buf;
static volatile uint64_t done;
static unsigned char *extra; /* remap: a new mapping, page i holds i ^ 0x5a */
static size_t extra_len;
#define DROP_PAGES 1024
#define FILE_PAGES 64
static uint64_t *drop;     /* DROP_PAGES pages */
static uint64_t *fmap;     /* FILE_PAGES pages, MAP_PRIVATE of -f FILE */
static volatile int dropped;

static uint64_t drop_word(uint64_t i) { return 0xD50D000000000000ULL | (i + 1); }
static uint64_t file_word(uint64_t i) { return 0xF11E000000000000ULL | (i + 1); }
static uint64_t cow_word(uint64_t i) { return 0xC0C0000000000000ULL | (i + 1); }
static int drop_gone(uint64_t i) { return dropped && (i >= 512 || (i >= 100 && i < 116)); }
static int file_gone(uint64_t i) { return dropped && i >= 8 && i < 24; }

static void setup_regions(const char *file) {
  unsigned char *m = mmap(NULL, (DROP_PAGES + 512) * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) wl_fail("mmap: %s", strerror(errno));
  drop = (uint64_t *)(((uintptr_t)m + (2 << 20) - 1) & ~(uintptr_t)((2 << 20) - 1));
  for (uint64_t i = 0; i < DROP_PAGES * 512; i++) drop[i] = drop_word(i / 512);
  if (!file) return;
  int fd = open(file, O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) wl_fail("open %s: %s", file, strerror(errno));
  uint64_t page[512];
  for (uint64_t i = 0; i < FILE_PAGES; i++) {
    for (int j = 0; j < 512; j++) page[j] = file_word(i);
    if (write(fd, page, sizeof page) != sizeof page) wl_fail("write %s: %s", file, strerror(errno));
  }
  fmap = mmap(NULL, FILE_PAGES * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  if (fmap == MAP_FAILED) wl_fail("mmap %s: %s", file, strerror(errno));
  close(fd);
  for (uint64_t i = 0; i < FILE_PAGES * 512; i++) fmap[i] = cow_word(i / 512);
}

static void drop_pages(void) {
  dropped = 1;
  if (madvise(drop + 512 * 512, 512 * 4096, MADV_DONTNEED) || madvise(drop + 100 * 512, 16 * 4096, MADV_DONTNEED))
    wl_fail("madvise: %s", strerror(errno));
  if (*(volatile uint64_t *)(drop + 105 * 512)) wl_fail("page 105 not zero after MADV_DONTNEED");
  if (fmap) {
    if (madvise(fmap + 8 * 512, 16 * 4096, MADV_DONTNEED)) wl_fail("madvise: %s", strerror(errno));
    if (*(volatile uint64_t *)(fmap + 10 * 512) != file_word(10)) wl_fail("file page 10 did not revert");
  }
}

static uint64_t check_regions(void) {
  uint64_t bad = 0;
  for (uint64_t i = 0; i < DROP_PAGES; i++) {
    uint64_t want = drop_gone(i) ? 0 : drop_word(i);
    for (int j = 0; j < 512; j++)
      if (drop[i * 512 + j] != want) {
        if (bad++ < 5) wl_say("INFO bad drop page %lu: %#lx, want %#lx", (unsigned long)i,
                              (unsigned long)drop[i * 512 + j], (unsigned long)want);
        break;
      }
  }
  for (uint64_t i = 0; fmap && i < FILE_PAGES; i++) {
    uint64_t want = file_gone(i) ? file_word(i) : cow_word(i);
    for (int j = 0; j < 512; j++)
      if (fmap[i * 512 + j] != want) {
        if (bad++ < 5) wl_say("INFO bad file page %lu: %#lx, want %#lx", (unsigned long)i,
                              (unsigned long)fmap[i * 512 + j], (unsigned long)want);
        break;
      }
  }
  return bad;
}

static uint64_t pattern(uint64_t p, uint64_t k, uint64_t w) {
  return (k * 0x9E3779B97F4A7C15ULL) ^ (p << 20) ^ w;
}

static void write_one(uint64_t k) {
  uint64_t p = (k * STEP) % npages;
  uint64_t *w = (uint64_t *)(buf + p * 4096);
  for (uint64_t i = 2; i < 512; i++) w[i] = pattern(p, k, i);
  w[1] = p;
  w[0] = k;
}

static int check(void) {
  /* first[p]: the first k that writes page p (k < npages). */
  uint64_t *first = malloc(npages * sizeof *first);
  if (!first) return 0;
  for (uint64_t k = 0; k < npages; k++) first[(k * STEP) % npages] = k;
  uint64_t d = done, bad = 0;
  for (uint64_t p = 0; p < npages; p++) {
    const uint64_t *w = (const uint64_t *)(buf + p * 4096);
    uint64_t k0 = first[p];
    if (d <= k0) {
      for (uint64_t i = 0; i < 512; i++)
        if (w[i]) {
          if (bad++ < 5) wl_say("INFO bad page %lu: never written, not zero", (unsigned long)p);
          break;
        }
      continue;
    }
    uint64_t want = k0 + (d - 1 - k0) / npages * npages;
    int ok = w[0] == want && w[1] == p;
    for (uint64_t i = 2; ok && i < 512; i++) ok = w[i] == pattern(p, want, i);
    if (!ok && bad++ < 5)
      wl_say("INFO bad page %lu: holds write %lu, want %lu", (unsigned long)p, (unsigned long)w[0],
             (unsigned long)want);
  }
  free(first);
  bad += check_regions();
  for (size_t i = 0; extra && i < extra_len / 4096; i++)
    if (extra[i * 4096] != (unsigned char)(i ^ 0x5a) && bad++ < 5) wl_say("INFO bad extra page %zu", i);
  wl_say("INFO checked pid=%d pages=%lu writes=%lu bad=%lu", (int)getpid(), (unsigned long)npages, (unsigned long)d,
         (unsigned long)bad);
  return bad == 0;
}

int main(int argc, char **argv) {
  uint64_t mib = 64, rate = 1000;
  const char *action = "", *file = NULL;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "-m")) mib = strtoull(argv[i + 1], NULL, 0);
    else if (!strcmp(argv[i], "-r")) rate = strtoull(argv[i + 1], NULL, 0);
    else if (!strcmp(argv[i], "-a")) action = argv[i + 1];
    else if (!strcmp(argv[i], "-f")) file = argv[i + 1];
  }
  wl_init();
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr1;
  sigaction(SIGUSR1, &sa, NULL);
  npages = mib * 256;
  buf = mmap(NULL, npages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (buf == MAP_FAILED) return 1;
  setup_regions(file);
  for (uint64_t k = 0; k < npages; k++) {
    write_one(k);
    done = k + 1;
  }
  wl_say("INFO addr=%p pages=%lu", (void *)buf, (unsigned long)npages);
  wl_ready();
  /* rate pages per second, in steps of 1 ms */
  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  uint64_t base = done;
  for (;;) {
    if (wl_check_requested) {
      if (check()) wl_pass();
      wl_fail("pages do not hold their last writes");
    }
    if (usr1) {
      usr1 = 0;
      if (!strcmp(action, "fork")) {
        pid_t c = fork();
        if (c == 0) {
          wl_say("CHILD %d", (int)getpid());
        } else {
          wl_say("FORKED %d", (int)c);
        }
      } else if (!strcmp(action, "exec")) {
        char m[32], r[32];
        snprintf(m, sizeof m, "%lu", (unsigned long)mib);
        snprintf(r, sizeof r, "%lu", (unsigned long)rate);
        char *args[] = {argv[0], "-m", m, "-r", r, NULL};
        execv("/proc/self/exe", args);
        wl_fail("exec: %s", strerror(errno));
      } else if (!strcmp(action, "remap")) {
        /* Move the buffer (reserve a new place first so it really moves). */
        void *to = mmap(NULL, npages * 4096 + (2 << 20), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (to == MAP_FAILED) return 1;
        void *nb = mremap(buf, npages * 4096, npages * 4096, MREMAP_MAYMOVE | MREMAP_FIXED, (char *)to + (1 << 20));
        if (nb == MAP_FAILED) {
          wl_fail("mremap: %s", strerror(errno));
        }
        buf = nb;
        extra_len = 64 * 4096;
        extra = mmap(NULL, extra_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        for (size_t i = 0; i < extra_len / 4096; i++) extra[i * 4096] = (unsigned char)(i ^ 0x5a);
        wl_say("REMAPPED addr=%p", (void *)buf);
      } else if (!strcmp(action, "drop")) {
        drop_pages();
        wl_say("DROPPED");
      }
      wl_say("WROTE %lu", (unsigned long)done);
    }
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double el = (now.tv_sec - t0.tv_sec) + (now.tv_nsec - t0.tv_nsec) / 1e9;
    uint64_t target = base + (uint64_t)(el * (double)rate);
    while (done < target && !wl_check_requested && !usr1) {
      write_one(done);
      done = done + 1;
    }
    struct timespec ms = {0, 1000000};
    nanosleep(&ms, NULL);
  }
}
