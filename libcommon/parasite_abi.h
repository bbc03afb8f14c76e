/* The page parasite's interface: what ck-memread writes into a frozen
 * target before the tracer runs the parasite there, and what it reads back.
 * Shared by C++ (libcommon) and the freestanding C of libcommon/parasite/.
 *
 * One run handles one batch: up to CK_PARASITE_MAX_PAGES pages (the size of
 * one full pipe), given as segments of the target's address space.  For
 * every page the parasite tells zero from non-zero; every maximal run of
 * non-zero pages gets its ck64 lane state (the state a fresh ck::Ck64 has
 * after being fed the run's bytes); then every non-zero run is vmspliced,
 * in order, into the pipe whose write end the target holds as pipe_fd.
 * Zero pages are not spliced. */
#ifndef CK_PARASITE_ABI_H
#define CK_PARASITE_ABI_H
#include <stdint.h>

#define CK_PARASITE_MAGIC 0x50676b43u /* "CkgP" */
#define CK_PARASITE_VERSION 1u
#define CK_PARASITE_MAX_PAGES 256u    /* 1 MiB: the biggest pipe an unprivileged F_SETPIPE_SZ gets */
#define CK_PARASITE_MAX_SEGS 256u
#define CK_PARASITE_LANES 16u
#define CK_PARASITE_AVX2 1u           /* flags: the CPU has AVX2 */

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

struct ck_parasite_iov {
  uint64_t base;
  uint64_t len;
};

struct ck_parasite_args {
  /* in */
  uint32_t magic;
  uint32_t version;
  int32_t pipe_fd;
  uint32_t flags;
  uint32_t nsegs;
  /* out */
  uint32_t nruns;
  int64_t spliced; /* bytes put into the pipe, or -errno */
  struct ck_parasite_seg segs[CK_PARASITE_MAX_SEGS];
  struct ck_parasite_run runs[CK_PARASITE_MAX_PAGES];
  struct ck_parasite_iov iov[CK_PARASITE_MAX_PAGES]; /* the parasite's own */
};

/* The parasite's last instruction is this syscall (none has this number:
 * it fails with ENOSYS); the tracer sees it at syscall entry, the result in
 * rdi.  Results: bytes spliced, or -errno; also in spliced. */
#define CK_PARASITE_DONE 1023
#define CK_PARASITE_EBADARGS 1000 /* -1000: magic, version or counts wrong */

#endif
