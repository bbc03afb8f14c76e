/* The page parasite: runs inside a frozen target, started by the tracer
 * (ck-freeze) at ck_parasite_entry with rdi = its ck_parasite_args and rsp
 * on a stack of its own.  It ends in a syscall that does not exist
 * (CK_PARASITE_DONE, result in rdi), where the tracer, which runs it under
 * PTRACE_SYSCALL, takes over again: no trap instruction, so no forced
 * SIGTRAP that would reset a target's own SIGTRAP disposition.  It reads the target's pages in
 * place (nothing is copied out of the target), so it can tell zero pages
 * and compute each run's ck64 where the data is, then gives the non-zero
 * runs to a pipe with vmsplice: the pages go out by reference.
 *
 * Freestanding: no libc, no relocations, no writable data of its own; the
 * only memory it writes is its args and its stack.  Built into a flat
 * binary (see the Makefile) and embedded in libck as ck_parasite_blob.
 * The lane arithmetic must stay exactly libcommon/ck64.cc's (tested by
 * tests/unit/parasite_test.cc against ck::Ck64). */
#include "parasite_abi.h"

#define PAGE 4096u
#define BLOCK 128u
#define SPLICE_F_NONBLOCK 2u
#define NR_vmsplice 278
#define CK_STR2(x) #x
#define CK_STR(x) CK_STR2(x)

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
        "  mov %rax, %rdi\n"
        "  mov $" CK_STR(CK_PARASITE_DONE) ", %eax\n"
        "  syscall\n"
        "  ud2\n"
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

static long ck_parasite_main(struct ck_parasite_args* a) {
  if (a->magic != CK_PARASITE_MAGIC || a->version != CK_PARASITE_VERSION || a->nsegs > CK_PARASITE_MAX_SEGS)
    return a->spliced = -CK_PARASITE_EBADARGS;
  uint64_t total = 0;
  for (uint32_t s = 0; s < a->nsegs; ++s) total += a->segs[s].npages;
  if (total > CK_PARASITE_MAX_PAGES) return a->spliced = -CK_PARASITE_EBADARGS;

  /* Runs: a->iov[r].base holds run r's first address meanwhile. */
  uint32_t nruns = 0, page = 0;
  for (uint32_t s = 0; s < a->nsegs; ++s) {
    struct ck_parasite_run* cur = 0;
    for (uint64_t i = 0; i < a->segs[s].npages; ++i, ++page) {
      const unsigned char* p = (const unsigned char*)(a->segs[s].addr + i * PAGE);
      uint32_t zero = (uint32_t)page_is_zero(p);
      if (!cur || cur->zero != zero) {
        cur = &a->runs[nruns];
        a->iov[nruns].base = (uint64_t)p;
        ++nruns;
        cur->page = page, cur->npages = 0, cur->zero = zero, cur->pad = 0;
        if (!zero) seed(cur);
      }
      ++cur->npages;
      if (zero) continue;
      if (a->flags & CK_PARASITE_AVX2)
        hash_page_avx2(cur->a, cur->b, p);
      else
        hash_page_v2(cur->a, cur->b, p);
    }
  }
  a->nruns = nruns;

  uint32_t niov = 0;
  for (uint32_t r = 0; r < nruns; ++r) {
    if (a->runs[r].zero) continue;
    a->iov[niov].base = a->iov[r].base;
    a->iov[niov].len = (uint64_t)a->runs[r].npages * PAGE;
    ++niov;
  }
  long done = 0;
  struct ck_parasite_iov* v = a->iov;
  while (niov) {
    long n = sys_vmsplice(a->pipe_fd, v, niov, SPLICE_F_NONBLOCK);
    if (n < 0) return a->spliced = n;
    if (n == 0) return a->spliced = -11; /* EAGAIN: the pipe is not empty */
    done += n;
    while (niov && (uint64_t)n >= v->len) n -= (long)v->len, ++v, --niov;
    if (niov) v->base += (uint64_t)n, v->len -= (uint64_t)n;
  }
  return a->spliced = done;
}
