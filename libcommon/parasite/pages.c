/* The page parasite: runs inside a frozen target, started by the tracer
 * (ck-freeze) at ck_parasite_entry with rdi = its ck_parasite_args and rsp
 * on a stack of its own, and ends in int3 (the tracer has SIGTRAP and the
 * fault signals at SIG_DFL and unblocked meanwhile, so the trap changes
 * nothing of the target's own).  It reads the target's pages in place
 * (nothing is copied out of the target), so it can tell zero pages and
 * compute each run's ck64 where the data is, then gives the non-zero runs
 * to a pipe with vmsplice: the pages go out by reference.  The protocol
 * with the reader is in parasite_abi.h.
 *
 * Freestanding: no libc, no relocations, no writable data of its own; the
 * only memory it writes is its args and its stack.  Built into a flat
 * binary (see the Makefile) and embedded in libck as ck_parasite_blob.
 * The lane arithmetic must stay exactly libcommon/ck64.cc's (tested by
 * tests/unit/parasite_test.cc against ck::Ck64). */
#include "parasite_abi.h"

#define PAGE 4096u
#define BLOCK 128u
#define NR_read 0
#define NR_write 1
#define NR_vmsplice 278

static const uint64_t kK1 = 0x9E3779B185EBCA87ULL;
static const uint64_t kK2 = 0xC2B2AE3D27D4EB4FULL;

typedef uint64_t v2u __attribute__((vector_size(16), may_alias));
typedef uint32_t v4w __attribute__((vector_size(16), may_alias));
typedef uint64_t v4u __attribute__((vector_size(32), may_alias));
typedef uint32_t v8w __attribute__((vector_size(32), may_alias));
typedef uint64_t v4u_u __attribute__((vector_size(32), aligned(8), may_alias)); /* lanes in the args: 8-aligned */

#define STEP(acc, w) ((acc) = (acc) + ((acc) << 1) + (w))
#define ROT32_2(w) ((v2u)__builtin_shuffle((v4w)(w), (v4w){1, 0, 3, 2}))
#define ROT32_4(w) ((v4u)__builtin_shuffle((v8w)(w), (v8w){1, 0, 3, 2, 5, 4, 7, 6}))

static long ck_parasite_main(struct ck_parasite_args* a) __attribute__((used));

__asm__(".section .text.entry,\"ax\",@progbits\n"
        ".globl ck_parasite_entry\n"
        "ck_parasite_entry:\n"
        "  call ck_parasite_main\n"
        "  int3\n"
        ".previous\n");

static long sys_vmsplice(int fd, const struct ck_parasite_iov* iov, unsigned long n, unsigned flags) {
  long ret;
  register long r10 __asm__("r10") = (long)flags;
  __asm__ volatile("syscall"
                   : "=a"(ret)
                   : "0"((long)NR_vmsplice), "D"((long)fd), "S"(iov), "d"(n), "r"(r10)
                   : "rcx", "r11", "memory");
  return ret;
}

/* One page into the lanes: 32 blocks of 16 words, word j to lane j. */
static void hash_page_v2(uint64_t* a, uint64_t* b, const unsigned char* p) {
  v2u A[8], B[8];
  for (int i = 0; i < 8; ++i) A[i] = (v2u){a[2 * i], a[2 * i + 1]}, B[i] = (v2u){b[2 * i], b[2 * i + 1]};
  for (const unsigned char* q = p; q < p + PAGE; q += BLOCK)
    for (int i = 0; i < 8; ++i) STEP(A[i], ((const v2u*)q)[i]);
  for (const unsigned char* q = p; q < p + PAGE; q += BLOCK)
    for (int i = 0; i < 8; ++i) STEP(B[i], ROT32_2(((const v2u*)q)[i]));
  for (int i = 0; i < 8; ++i) a[2 * i] = A[i][0], a[2 * i + 1] = A[i][1], b[2 * i] = B[i][0], b[2 * i + 1] = B[i][1];
}

__attribute__((target("avx2"))) static void hash_page_avx2(uint64_t* a, uint64_t* b, const unsigned char* p) {
  v4u a0 = *(const v4u_u*)a, a1 = *(const v4u_u*)(a + 4), a2 = *(const v4u_u*)(a + 8), a3 = *(const v4u_u*)(a + 12);
  v4u b0 = *(const v4u_u*)b, b1 = *(const v4u_u*)(b + 4), b2 = *(const v4u_u*)(b + 8), b3 = *(const v4u_u*)(b + 12);
  for (const unsigned char* q = p; q < p + PAGE; q += BLOCK) {
    const v4u* w = (const v4u*)q;
    v4u w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3];
    STEP(a0, w0), STEP(a1, w1), STEP(a2, w2), STEP(a3, w3);
    STEP(b0, ROT32_4(w0)), STEP(b1, ROT32_4(w1)), STEP(b2, ROT32_4(w2)), STEP(b3, ROT32_4(w3));
  }
  *(v4u_u*)a = a0, *(v4u_u*)(a + 4) = a1, *(v4u_u*)(a + 8) = a2, *(v4u_u*)(a + 12) = a3;
  *(v4u_u*)b = b0, *(v4u_u*)(b + 4) = b1, *(v4u_u*)(b + 8) = b2, *(v4u_u*)(b + 12) = b3;
}

static int page_is_zero(const unsigned char* p) {
  const v2u* v = (const v2u*)p;
  if (v[0][0] | v[0][1]) return 0; /* most pages with data say so at once */
  v2u acc = v[0];
  for (unsigned i = 1; i < PAGE / 16; ++i) acc |= v[i];
  return (acc[0] | acc[1]) == 0;
}

static void seed(struct ck_parasite_run* r) {
  for (unsigned i = 0; i < CK_PARASITE_LANES; ++i) {
    r->a[i] = kK1 * (2 * i + 1);
    r->b[i] = kK2 * (2 * i + 1);
  }
}

static long sys3(long nr, long a1, long a2, long a3) {
  long ret;
  __asm__ volatile("syscall" : "=a"(ret) : "0"(nr), "D"(a1), "S"(a2), "d"(a3) : "rcx", "r11", "memory");
  return ret;
}

/* Fills slot s with the runs of `n` pages starting at page `page` of the
 * batch, found at segment *seg, page *off of it (both moved on), and
 * a->iov with its non-zero runs; returns how many. */
static uint32_t scan_chunk(struct ck_parasite_args* a, struct ck_parasite_slot* s, uint32_t page, uint32_t n,
                           uint32_t* seg, uint64_t* off) {
  uint32_t nruns = 0, niov = 0;
  uint64_t spliced = 0;
  struct ck_parasite_run* cur = 0;
  for (uint32_t i = 0; i < n; ++i, ++page) {
    while (*off == a->segs[*seg].npages) ++*seg, *off = 0, cur = 0; /* runs never cross a segment */
    const unsigned char* p = (const unsigned char*)(a->segs[*seg].addr + *off * PAGE);
    ++*off;
    uint32_t zero = (uint32_t)page_is_zero(p);
    if (!cur || cur->zero != zero) {
      cur = &s->runs[nruns++];
      cur->page = page, cur->npages = 0, cur->zero = zero, cur->pad = 0;
      if (!zero) {
        seed(cur);
        a->iov[niov].base = (uint64_t)p, a->iov[niov].len = 0;
        ++niov;
      }
    }
    ++cur->npages;
    if (zero) continue;
    a->iov[niov - 1].len += PAGE;
    spliced += PAGE;
    if (a->flags & CK_PARASITE_AVX2)
      hash_page_avx2(cur->a, cur->b, p);
    else
      hash_page_v2(cur->a, cur->b, p);
  }
  s->nruns = nruns;
  s->spliced = spliced;
  return niov;
}

/* The chunk's non-zero runs, a->iov[0..niov), into the pipe. */
static long splice_chunk(struct ck_parasite_args* a, uint32_t niov) {
  long done = 0;
  struct ck_parasite_iov* v = a->iov;
  while (niov) {
    long n = sys_vmsplice(a->pipe_fd, v, niov, 0);
    if (n < 0) return n;
    if (n == 0) return -5; /* EIO: nothing moved */
    done += n;
    while (niov && (uint64_t)n >= v->len) n -= (long)v->len, ++v, --niov;
    if (niov) v->base += (uint64_t)n, v->len -= (uint64_t)n;
  }
  return done;
}

static long ck_parasite_main(struct ck_parasite_args* a) {
  if (a->magic != CK_PARASITE_MAGIC || a->version != CK_PARASITE_VERSION || a->nsegs > CK_PARASITE_MAX_SEGS)
    return a->result = -CK_PARASITE_EBADARGS;
  uint64_t total = 0;
  for (uint32_t s = 0; s < a->nsegs; ++s) total += a->segs[s].npages;
  if (total > CK_PARASITE_MAX_PAGES) return a->result = -CK_PARASITE_EBADARGS;

  uint32_t seg = 0;
  uint64_t off = 0;
  long spliced = 0;
  for (uint32_t k = 0, page = 0; page < total; ++k) {
    uint32_t n = total - page < CK_PARASITE_CHUNK_PAGES ? (uint32_t)(total - page) : CK_PARASITE_CHUNK_PAGES;
    struct ck_parasite_slot* s = &a->slots[k % CK_PARASITE_SLOTS];
    char b = 0;
    if (k >= CK_PARASITE_SLOTS) {
      long r = sys3(NR_read, a->ack_fd, (long)&b, 1);
      if (r != 1) return a->result = r < 0 ? r : -5;
    }
    s->chunk = k;
    uint32_t niov = scan_chunk(a, s, page, n, &seg, &off);
    b = (char)k;
    long r = sys3(NR_write, a->bell_fd, (long)&b, 1);
    if (r != 1) return a->result = r < 0 ? r : -5;
    long m = splice_chunk(a, niov);
    if (m < 0) return a->result = m;
    spliced += m;
    page += n;
  }
  return a->result = spliced;
}
