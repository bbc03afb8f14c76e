// ck-crit's logic as a library: a frame source over a stream or an image set,
// the subcommands, and run(), the one call tools/ck-crit/main.cc makes.
//
// Rooms: crit_json.cc (decode, encode, the sources), crit_show.cc (show,
// info, sum), crit_model.cc (an image's records in memory, pages as runs),
// crit_explore.cc (x ps|fds|mems|rss|sk|cg), crit_mem.cc (mem, args, env),
// crit_diff.cc (diff).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "ck.pb.h"

namespace crit {

// Frames in stream order (header first, trailer not included) with their
// payloads, from stdin or from an image directory.
class Source {
 public:
  virtual ~Source() = default;
  virtual bool next(ck::pb::Frame* f) = 0;  // false after the trailer (verified)
  virtual const std::string& raw() const = 0;
  virtual uint64_t payload_left() const = 0;
  virtual void read_payload(void* dst, size_t len) = 0;
  virtual const ck::pb::Trailer& trailer() const = 0;
  // Checks the whole-stream checksum if not done on the way (images).
  virtual void verify() {}
};
// dir empty or "-": the stream on stdin (refused on a terminal).
std::unique_ptr<Source> open_source(const std::string& dir);
// The stream on fd (named so in messages).
std::unique_ptr<Source> stream_source(int fd, const std::string& name = "stdin");

// "rw-p" as /proc/PID/maps writes it.
std::string prot_str(uint32_t prot, uint32_t flags);

std::string base64(const void* p, size_t n);
// Strict: padding, alphabet, length; false on bad input.
bool unbase64(const std::string& in, std::string* out);

// ---- an image in memory, page contents left out (crit_model.cc) ----------

// A page run as the model keeps it.
struct Run {
  uint64_t addr = 0;    // address, or offset into the shared object / file
  uint32_t npages = 0;
  bool data = false;    // has a payload (else a zero run)
  bool dropped = false; // ck-anon dropped its payload (no data, not zeros)
  uint32_t round = 0;   // pre-dump round it came from (0: this image's own)
  uint64_t shmid = 0;
  uint32_t pid = 0;     // the process whose frames carried it
};
struct Task {
  uint32_t pid = 0;
  bool has_process = false;
  ck::pb::Process proc;
  std::vector<ck::pb::Thread> threads;
  std::vector<ck::pb::Fd> fds;
  bool has_mm = false;
  std::vector<ck::pb::Vma> vmas;
  std::vector<Run> runs;     // private memory (shmid 0), in stream order
  uint64_t file_pages = 0;   // pages of contents of deleted files and memfds
};
struct Model {
  ck::pb::Header header;
  std::vector<uint32_t> order;            // pids in the order the stream names them
  std::map<uint32_t, Task> tasks;
  std::map<uint32_t, ck::pb::FileDesc> files;   // by id
  std::map<uint32_t, ck::pb::Socket> socks;     // by FileDesc id
  std::map<uint64_t, std::vector<Run>> shared;  // shared objects' runs, by shmid
  std::vector<ck::pb::Cgroup> cgroups;
  std::vector<ck::pb::Note> notes;
  std::vector<ck::pb::NetLock> locks;
  uint64_t unknown = 0;                   // frames of kinds this ck does not know
  ck::pb::Trailer trailer;
  const Task* task(uint32_t pid) const;
};
// Reads the whole source (verified).  on_payload, if set, is called for
// every page run with payload (memory, shared objects and files alike),
// the source positioned at its first byte; what it leaves unread is skipped.
using PayloadHook = std::function<void(const ck::pb::Frame& f, Source& s)>;
Model load(Source& s, const PayloadHook& on_payload = nullptr);

// ---- subcommands -----------------------------------------------------------

int decode(Source& s);
int encode(int in_fd, int out_fd);
int info(Source& s);
int sum(Source& s, uint32_t pid, uint64_t addr, uint64_t len);

// Options of x, show --json and diff.
struct Filter {
  std::set<uint32_t> pids;   // empty: every process
  std::set<std::string> kinds;  // show --json: frame kinds (empty: all)
  bool json = false;
};
// show: text; --pid keeps those processes' sections.  show_json: every
// frame (payloads left out) for people and jq (crit_pretty.cc), filtered
// by pid and frame kind ("process", "thread", "mm", ...).
int show(Source& s, const Filter& f);
int show_json(Source& s, const Filter& f);
std::string frame_kind(const ck::pb::Frame& f);
// x WHAT: "ps", "fds", "mems", "rss", "sk", "cg" (crit_explore.cc).
int explore(Source& s, const std::string& what, const Filter& f);

// mem, args, env (crit_mem.cc).  mem: len bytes at addr of pid as a hexdump
// (or raw); args/env: argv or the environment read from the dumped memory
// between the mm fields arg_start..arg_end / env_start..env_end, one string
// a line (nul: as /proc/PID/cmdline has them, each ending in a NUL byte).
// pid 0: the image's root process.
int mem(Source& s, uint32_t pid, uint64_t addr, uint64_t len, bool raw);
int args(Source& s, uint32_t pid, bool env, bool nul);
// Bytes [addr, addr + len) of pid as the image holds them, in one pass;
// have[i]: byte i is covered by a page run (others read as zero).  With
// range kArgs / kEnv the range is the process's argv / environment, from
// its Process frame.  pid 0: the root.  Status 1 if pid is not in the
// image.  Holds len bytes (callers bound it: kMaxBytes).
struct Bytes {
  uint32_t pid = 0;
  uint64_t addr = 0, len = 0;
  std::string data;
  std::vector<bool> have;
  ck::pb::Process proc;
};
enum class Range { kGiven, kArgs, kEnv };
Bytes read_bytes(Source& s, uint32_t pid, Range range, uint64_t addr = 0, uint64_t len = 0);
constexpr uint64_t kMaxBytes = 256ull << 20;

// diff (crit_diff.cc).  Exit status 0: equal, 1: different (every
// difference printed on stdout), 2: trouble, 3: bad input.
struct DiffOptions {
  std::vector<std::string> ignore;  // more fields to leave out ("Thread.gpregs", "pages", ...)
  bool no_default_ignores = false;  // compare what the default ignores leave out too
  int max_lines = 0;                // 0: every difference
};
int diff(const std::string& a, const std::string& b, const DiffOptions& o);
// The fields diff leaves out by default, one per line with why.
std::string diff_default_ignores();

// One ck-crit invocation, as the command line names it.
struct Request {
  enum Command { kDecode, kEncode, kShow, kInfo, kSum, kKinds, kExplore, kMem, kArgs, kEnv, kDiff } command = kShow;
  std::string dir;  // empty or "-": the stream on stdin
  std::string dir2;  // diff: the second image
  uint32_t pid = 0;  // sum, mem, args, env (0: the root)
  uint64_t addr = 0, len = 0;  // sum, mem
  bool raw = false;  // mem
  bool nul = false;  // args, env
  bool markdown = false;  // kinds
  std::string what;  // x
  Filter filter;     // x
  DiffOptions diff;
};
// Runs it; the exit status (errors throw as ck's tools do).
int run(const Request& r);

}  // namespace crit
