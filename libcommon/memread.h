// ck-memread's engine: memory layout and page contents of processes, read
// from outside through process_vm_readv (or /proc/PID/mem) into one bounded,
// reused buffer and written out as PageRun frames straight from it.
//
// What carries contents: private anonymous memory (incl. heap and stack),
// the modified (COW) pages of private file mappings, and shared memory
// objects (shared anonymous, SysV shm, memfd), the latter once per object
// however many VMAs of however many processes map it.  Present pages are
// found with the PAGEMAP_SCAN ioctl (Linux 6.7+) or, failing that, by
// reading /proc/PID/pagemap.  Unpopulated pages are skipped; present pages
// that hold only zeros become zero runs without payload.
#pragma once
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "fd.h"
#include "parasite_abi.h"
#include "stream.h"

namespace ck {
class TracerClient;

struct MemreadOptions {
  pid_t pid = 0;                   // 0: pipeline mode (stdin is a stream)
  bool tree = false;               // with pid: every descendant too
  size_t buffer_bytes = 4u << 20;  // the one page buffer
  bool no_parasite = false;        // never ask the tracer (ck-freeze) for the page parasite
  // Pre-dump rounds (see round.h).
  bool track = false;              // arm write tracking, copy everything (round 1)
  bool dirty = false;              // copy what was written since the round named by since
  std::string since;               // a round id or number (empty: the newest known stored)
  bool untrack = false;            // end tracking of pid (stop the holders)
  std::string state_dir;           // tracking state (default: track_state_dir(""))
  std::string stats_file;          // append one "round=... pages=..." line per run
};

// The whole tool: returns the exit status or throws Error.
int run_memread(const MemreadOptions& o, int in_fd, int out_fd);

// pid and every descendant (through /proc/PID/task/*/children), parents first.
std::vector<pid_t> list_tree(pid_t root);

// Identity of a shared memory object mapped by v ((dev << 48) ^ ino, never 0).
uint64_t shm_object_id(const pb::Vma& v);

// True if every byte of the 4 KiB page p is zero (stops at the first
// non-zero word).
bool page_is_zero(const void* p);

// What a pre-dump round copies of one process (the round decides, MemReader
// reads): per VMA of its layout, every present page (0) or only the pages
// of `copy` (1); the ranges of `whole`, inside those VMAs, which the round
// carries whole (older rounds count for nothing there); and `gone`, pages
// written since and given back (nothing of their own now: "fresh" too).
struct PagePlan {
  std::vector<uint8_t> only;
  std::vector<std::pair<uint64_t, uint64_t>> copy;   // sorted, disjoint
  std::vector<std::pair<uint64_t, uint64_t>> whole;  // sorted, disjoint, inside copy
  std::vector<std::pair<uint64_t, uint64_t>> gone;   // sorted, disjoint
};

struct MemStats {
  uint64_t vmas = 0;
  uint64_t dirty_vmas = 0;    // VMAs of which only written pages were copied
  uint64_t runs = 0;          // payload runs
  uint64_t zero_runs = 0;
  uint64_t pages = 0;         // pages sent with payload
  uint64_t zero_pages = 0;    // present pages that were all zeros
  uint64_t gone_pages = 0;    // dirty rounds: pages of tracked VMAs holding nothing of their own now
  uint64_t unreadable = 0;    // present pages neither read path could read
  uint64_t objects = 0;       // shared objects dumped
  uint64_t in_place = 0;      // batches sent through the page parasite
};

class MemReader {
 public:
  MemReader(StreamWriter& w, size_t buffer_bytes);
  ~MemReader();
  MemReader(const MemReader&) = delete;
  MemReader& operator=(const MemReader&) = delete;
  // Writes, for each pid in order, a MemLayout frame and its PageRun frames.
  // Shared objects are dumped with the first VMA (in pid order, then address
  // order) that maps them.
  void dump(const std::vector<pid_t>& pids);
  const MemStats& stats() const { return stats_; }
  // Tests: skip PAGEMAP_SCAN and read /proc/PID/pagemap instead.
  void use_pagemap_file() { scan_ioctl_ = false; }

  // Pre-dump rounds.  Every PageRun carries `round`; with incremental, each
  // MemLayout is followed by a Note (stage "ck-memread") naming the ranges
  // whose every page this round carries ("fresh PID START-END ..."): a
  // reader of an image chain takes nothing from older rounds there.
  void set_round(uint32_t round, bool incremental) {
    round_ = round;
    incremental_ = incremental;
  }
  // Called once with every pid and its layout (which it may annotate)
  // before any is dumped; returns one plan per pid.  Without a planner every
  // VMA is copied whole.
  using Planner =
      std::function<std::vector<PagePlan>(const std::vector<pid_t>&, std::vector<std::vector<pb::Vma>>&)>;
  void set_planner(Planner p) { planner_ = std::move(p); }
  // Under a tracer (ck-freeze), page data goes out without a copy: the
  // tracer runs the page parasite in the target, which vmsplices the pages
  // into a pipe that is spliced to the output (see parasite.h, tracer.h).
  // Without one, or where the parasite cannot go, process_vm_readv.
  void use_tracer(TracerClient* t);

 private:
  struct Segment {        // one piece of the buffer
    uint64_t remote;      // address in the target
    uint64_t label;       // PageRun.addr (address, or offset into the object)
    uint64_t shmid;
    size_t off, len;      // in the buffer
    bool in_place;        // sent by reference through the parasite, not read into the buffer
  };
  struct Session {        // the page parasite in pid_, through the tracer
    uint64_t args = 0;
    int remote[3] = {-1, -1, -1};  // its pages, bell and ack fds, in the target
    ScopedFd pages, bell, ack;     // ours; pages valid: the parasite is in
    uint64_t copy_lo = 0, copy_hi = 0;  // pages copied even so (the rseq area's)
  };
  static constexpr size_t kParasiteBatch = size_t{CK_PARASITE_MAX_PAGES} * 4096;
  struct Object {
    ScopedFd fd;          // the object through /proc/PID/map_files (if it opened)
    pid_t owner = 0;
    uint64_t start = 0;   // owner VMA's start
  };

  void dump_process(pid_t pid, std::vector<pb::Vma>& vmas, const PagePlan& plan);
  // Finds present pages of [start, end) and queues them; anon_only skips
  // file-backed (page cache) pages.
  void scan(uint64_t start, uint64_t end, bool anon_only, uint64_t label_base, uint64_t shmid);
  // Adds to gone_ the pages of tracked VMA v that hold nothing of their own
  // now (anonymous: unpopulated; private file: not a COW copy).
  void scan_gone(const pb::Vma& v);
  // Writes gone_ as "fresh" Notes for pid (older rounds count for nothing
  // there; this round carries every page there is of them) and clears it;
  // count: they are pages given back (MemStats::gone_pages).
  void emit_gone(pid_t pid, bool count = true);
  void scan_pagemap_file(uint64_t start, uint64_t end, bool anon_only, uint64_t label_base, uint64_t shmid);
  void queue(uint64_t remote, uint64_t len, uint64_t label, uint64_t shmid);
  void flush();
  // The batch through the parasite; false if it is one for the buffer.
  // Whatever the parasite could not send goes to the buffer.
  bool flush_in_place();
  bool in_place_now() const;  // the next range queued goes through the parasite
  bool open_session();
  // One parasite run over the batch, its chunks emitted as they come;
  // returns the pages emitted.  A failure that leaves the stream whole
  // (between runs) goes to *failure; anything else throws.
  size_t run_parasite(std::string* failure);
  void end_session();
  void read_slow(const Segment& s);  // /proc/PID/mem, page by page if need be
  void dump_object(const pb::Vma& v, Object& obj);
  void emit(const char* data, uint64_t label, uint64_t npages, uint64_t shmid);
  int mem_fd();

  StreamWriter& w_;
  char* buf_;
  size_t cap_;
  std::vector<Segment> segs_;
  size_t used_ = 0;
  bool split_ = true;  // the next queued range starts a new segment (a new VMA)
  bool by_ref_ok_ = true;  // the VMA being scanned may go by reference (readable, private)
  bool force_copy_ = false;
  TracerClient* tracer_ = nullptr;
  Session sess_;
  std::vector<char> slot_;  // one parasite slot, read back
  std::vector<uint8_t> bad_;  // per buffer page: unreadable
  pid_t pid_ = 0;
  ScopedFd pagemap_, mem_;
  bool scan_ioctl_ = true;
  std::map<uint64_t, Object> objects_;
  std::vector<std::pair<uint64_t, uint64_t>> gone_;  // [start, end) of this process
  MemStats stats_;
  uint32_t round_ = 0;
  bool incremental_ = false;
  Planner planner_;
};

}  // namespace ck
