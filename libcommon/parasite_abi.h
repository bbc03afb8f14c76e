/* The page parasite's interface: what ck-memread writes into a frozen
 * target before the tracer starts the parasite there, and what it reads
 * back while the parasite runs.  Shared by C++ (libcommon) and the
 * freestanding C of libcommon/parasite/.
 *
 * One run handles one batch: up to CK_PARASITE_MAX_PAGES pages given as
 * segments of the target's address space, cut into chunks of
 * CK_PARASITE_CHUNK_PAGES pages (the last one shorter).  For each chunk k
 * the parasite
 *   1. waits, when k >= 2, for one byte on ack_fd (the reader is done with
 *      chunk k - 2, whose slot chunk k reuses);
 *   2. fills slot k % 2: every maximal run of zero or non-zero pages (never
 *      across a segment), and for a non-zero run the ck64 lane state a fresh
 *      ck::Ck64 has after being fed the run's bytes;
 *   3. writes one byte to bell_fd: the slot can be read;
 *   4. vmsplices the chunk's non-zero runs, in order, into pipe_fd (which
 *      holds one chunk: it waits for the reader to drain the chunk before).
 * It ends with int3, its result (bytes spliced, or -errno) in rax and in
 * result.  The reader acks chunk k only if k + 2 < the number of chunks,
 * so no byte is left on ack_fd for the next run. */
#ifndef CK_PARASITE_ABI_H
#define CK_PARASITE_ABI_H
#include <stdint.h>

#define CK_PARASITE_MAGIC 0x50676b43u /* "CkgP" */
#define CK_PARASITE_VERSION 2u
#define CK_PARASITE_CHUNK_PAGES 256u  /* 1 MiB: the biggest pipe an unprivileged F_SETPIPE_SZ gets */
#define CK_PARASITE_MAX_PAGES 16384u  /* 64 MiB per run */
#define CK_PARASITE_MAX_SEGS 4096u
#define CK_PARASITE_SLOTS 2u
#define CK_PARASITE_LANES 16u
#define CK_PARASITE_AVX2 1u           /* flags: the CPU has AVX2 */
#define CK_PARASITE_EBADARGS 1000     /* -1000: magic, version or counts wrong */

struct ck_parasite_seg {
  uint64_t addr;
  uint64_t npages;
};

struct ck_parasite_run {
  uint32_t page;   /* first page, counted over the batch's segments in order */
  uint32_t npages;
  uint32_t zero;   /* 1: every byte is zero; a[] and b[] unused */
  uint32_t pad;
  uint64_t a[CK_PARASITE_LANES];
  uint64_t b[CK_PARASITE_LANES];
};

struct ck_parasite_slot {
  uint32_t chunk;  /* which chunk the slot holds now */
  uint32_t nruns;
  uint64_t spliced; /* bytes of the chunk's non-zero runs */
  struct ck_parasite_run runs[CK_PARASITE_CHUNK_PAGES];
};

struct ck_parasite_iov {
  uint64_t base;
  uint64_t len;
};

struct ck_parasite_args {
  /* in */
  uint32_t magic;
  uint32_t version;
  int32_t pipe_fd;
  int32_t bell_fd;
  int32_t ack_fd;
  uint32_t flags;
  uint32_t nsegs;
  uint32_t pad;
  /* out */
  int64_t result;
  struct ck_parasite_slot slots[CK_PARASITE_SLOTS];
  struct ck_parasite_iov iov[CK_PARASITE_CHUNK_PAGES]; /* the parasite's own */
  struct ck_parasite_seg segs[CK_PARASITE_MAX_SEGS];   /* in: last, written as far as used */
};

#endif
