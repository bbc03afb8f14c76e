// ck-memread end to end inside one test binary, and a small reader of its
// streams for the bats tests.
//
// With no arguments (tests/run-all): a TAP self-test that forks a child with
// known memory (private anonymous pages, present zero pages, unpopulated
// pages, a PROT_NONE region, shared anonymous memory, a memfd mapped twice,
// a private file mapping with one COW page), dumps it and checks the image.
//
// With arguments, reads a stream file:
//   memread_check maps FILE PID             the layout of PID, in maps format
//   memread_check sum FILE PID ADDR LEN     FNV-1a of [ADDR, ADDR+LEN) of PID as the image holds it
//   memread_check bytes FILE PID ADDR LEN   those bytes in hex
//   memread_check shm FILE                  one line per shared object
//   memread_check procs FILE                the pids of the Process frames
//   memread_check runs FILE                 one line per page run with payload:
//                                           PID ADDR NPAGES STREAM_OFFSET PAGES_OFFSET ROUND
//                                           (where its payload starts in FILE, and in
//                                           the pages.img of an image put from FILE)
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "error.h"
#include "fd.h"
#include "memread.h"
#include "stream.h"
#include "test.h"
#include "vma.h"

using namespace ck;

namespace {

struct Run {
  pb::PageRun r;
  std::string data;  // empty for zero runs
};
struct Dump {
  pb::Header header;
  std::vector<pb::Frame> frames;  // everything but pages
  std::vector<uint32_t> procs;
  std::map<uint32_t, std::vector<pb::Vma>> mm;
  std::vector<Run> runs;
};

Dump load(const std::string& path) {
  ScopedFd fd(::open(path.c_str(), O_RDONLY));
  if (!fd.valid()) throw_errno("unable to open '" + path + "'");
  StreamReader r(fd.get(), path);
  Dump d;
  d.header = r.header();
  pb::Frame f;
  while (r.next(&f)) {
    if (f.has_pages()) {
      Run run{f.pages(), {}};
      if (run.r.has_payload()) {
        run.data.resize(size_t{run.r.npages()} * kPageSize);
        r.read_payload(run.data.data(), run.data.size());
      }
      d.runs.push_back(std::move(run));
      continue;
    }
    if (f.has_process()) d.procs.push_back(f.process().pid());
    if (f.has_mm()) d.mm[f.mm().pid()].assign(f.mm().vmas().begin(), f.mm().vmas().end());
    d.frames.push_back(f);
  }
  return d;
}

// Copies the part of [src_addr, src_addr+src.size()) inside [addr, addr+out.size()).
void overlay(std::string& out, uint64_t addr, uint64_t src_addr, const std::string& src, uint64_t n) {
  uint64_t lo = std::max(addr, src_addr), hi = std::min(addr + out.size(), src_addr + n);
  if (lo >= hi) return;
  if (src.empty())
    std::memset(&out[lo - addr], 0, hi - lo);
  else
    std::memcpy(&out[lo - addr], &src[lo - src_addr], hi - lo);
}

// The bytes of [addr, addr+len) of pid as the image holds them.
std::string bytes_at(const Dump& d, uint32_t pid, uint64_t addr, uint64_t len) {
  std::string out(len, '\0');
  auto it = d.mm.find(pid);
  if (it == d.mm.end()) return out;
  for (const auto& run : d.runs) {  // shared objects first
    if (!run.r.shmid()) continue;
    uint64_t n = uint64_t{run.r.npages()} * kPageSize;
    for (const auto& v : it->second)
      if (v.shmid() == run.r.shmid()) {
        // object offset o is at address v.start + (o - v.pgoff)
        uint64_t at = v.start() + run.r.addr() - v.pgoff();
        uint64_t lo = std::max(at, v.start()), hi = std::min(at + n, v.end());
        if (lo >= hi) continue;
        std::string part = run.data.empty() ? std::string() : run.data.substr(lo - at, hi - lo);
        overlay(out, addr, lo, part, hi - lo);
      }
  }
  for (const auto& run : d.runs)
    if (!run.r.shmid() && run.r.pid() == pid)
      overlay(out, addr, run.r.addr(), run.data, uint64_t{run.r.npages()} * kPageSize);
  return out;
}

uint64_t fnv64(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

std::vector<const Run*> runs_in(const Dump& d, uint32_t pid, uint64_t start, uint64_t end) {
  std::vector<const Run*> out;
  for (const auto& r : d.runs)
    if (!r.r.shmid() && r.r.pid() == pid && r.r.addr() >= start && r.r.addr() < end) out.push_back(&r);
  return out;
}

// ---- the self-test -------------------------------------------------------

constexpr size_t P = 4096;

struct Child {
  pid_t pid = 0;
  char* anon = nullptr;     // 64 pages
  char* pnone = nullptr;    // 4 pages, PROT_NONE after filling
  char* shared = nullptr;   // 16 pages MAP_SHARED|MAP_ANONYMOUS
  char* memfd1 = nullptr;   // the same memfd, twice
  char* memfd2 = nullptr;
  char* filemap = nullptr;  // 4 pages MAP_PRIVATE of a file, page 2 written
  std::string file;
  ~Child() {
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
    if (!file.empty()) unlink(file.c_str());
    if (anon) munmap(anon, 64 * P);
    if (pnone) munmap(pnone, 4 * P);
    if (shared) munmap(shared, 16 * P);
    if (memfd1) munmap(memfd1, 8 * P);
    if (memfd2) munmap(memfd2, 4 * P);
    if (filemap) munmap(filemap, 4 * P);
  }
};

char pattern(size_t page, size_t i) { return static_cast<char>(page * 31 + i * 7 + 1) | 1; }

void start_child(Child& c) {
  c.anon = static_cast<char*>(mmap(nullptr, 64 * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  c.pnone = static_cast<char*>(mmap(nullptr, 4 * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  c.shared = static_cast<char*>(mmap(nullptr, 16 * P, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  int mfd = memfd_create("ck-test", 0);
  if (mfd < 0 || ftruncate(mfd, 8 * P) != 0) abort();
  std::string page(P, 'M');
  for (int i = 0; i < 8; ++i)
    if (pwrite(mfd, page.data(), P, i * P) != static_cast<ssize_t>(P)) abort();
  c.memfd1 = static_cast<char*>(mmap(nullptr, 8 * P, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0));
  c.memfd2 = static_cast<char*>(mmap(nullptr, 4 * P, PROT_READ, MAP_SHARED, mfd, 4 * P));
  close(mfd);
  char tmpl[] = "/tmp/ck-memread-test.XXXXXX";
  int ffd = mkstemp(tmpl);
  c.file = tmpl;
  std::string fpage(P, 'F');
  for (int i = 0; i < 4; ++i)
    if (write(ffd, fpage.data(), P) != static_cast<ssize_t>(P)) abort();
  c.filemap = static_cast<char*>(mmap(nullptr, 4 * P, PROT_READ | PROT_WRITE, MAP_PRIVATE, ffd, 0));
  close(ffd);
  if (c.anon == MAP_FAILED || c.pnone == MAP_FAILED || c.shared == MAP_FAILED || c.memfd1 == MAP_FAILED ||
      c.memfd2 == MAP_FAILED || c.filemap == MAP_FAILED)
    abort();
  int ready[2];
  if (pipe(ready) != 0) abort();
  c.pid = fork();
  if (c.pid == 0) {
    for (size_t pg = 0; pg < 64; ++pg) {
      if (pg >= 15 && pg < 32) continue;  // unpopulated
      for (size_t i = 0; i < P; ++i) c.anon[pg * P + i] = (pg >= 10 && pg < 15) ? 0 : pattern(pg, i);
    }
    for (size_t i = 0; i < 4 * P; ++i) c.pnone[i] = pattern(100 + i / P, i % P);
    mprotect(c.pnone, 4 * P, PROT_NONE);
    for (size_t i = 0; i < 8 * P; ++i) c.shared[i] = pattern(200 + i / P, i % P);
    volatile char sink = 0;
    for (size_t i = 0; i < 4 * P; i += P) sink += c.filemap[i];  // page cache pages, present
    (void)sink;
    std::memset(c.filemap + 2 * P, 'W', P);                      // one COW page
    if (write(ready[1], "r", 1) != 1) _exit(1);
    for (;;) pause();
  }
  close(ready[1]);
  char b;
  if (read(ready[0], &b, 1) != 1) abort();
  close(ready[0]);
}

std::string tmpfile_path() {
  char tmpl[] = "/tmp/ck-memread-stream.XXXXXX";
  int fd = mkstemp(tmpl);
  close(fd);
  return tmpl;
}

Dump dump_child(pid_t pid, bool pagemap_file, size_t buf = 4u << 20) {
  std::string path = tmpfile_path();
  {
    ScopedFd fd(::open(path.c_str(), O_WRONLY | O_TRUNC));
    StreamWriter w(fd.get());
    w.header(make_header("ck-memread"));
    MemReader m(w, buf);
    if (pagemap_file) m.use_pagemap_file();
    m.dump({pid});
    w.finish();
  }
  Dump d = load(path);
  unlink(path.c_str());
  return d;
}

void check_child_image(const Child& c, const Dump& d) {
  uint32_t pid = static_cast<uint32_t>(c.pid);
  CHECK_EQ(d.mm.count(pid), 1u);
  // The layout is the child's maps.
  auto vmas = read_vmas(c.pid);
  CHECK_EQ(d.mm.at(pid).size(), vmas.size());
  for (size_t i = 0; i < vmas.size() && i < d.mm.at(pid).size(); ++i)
    CHECK_EQ(format_vma(d.mm.at(pid)[i]), format_vma(vmas[i]));

  // anon: pages 0-9 and 32-63 with payload, 10-14 a zero run, 15-31 nothing.
  auto runs = runs_in(d, pid, reinterpret_cast<uint64_t>(c.anon), reinterpret_cast<uint64_t>(c.anon) + 64 * P);
  uint64_t payload = 0, zero = 0;  // pages inside the region (its VMA may have merged with a neighbour)
  for (auto* r : runs) {
    uint64_t lo = r->r.addr(), hi = std::min<uint64_t>(lo + r->r.npages() * P, reinterpret_cast<uint64_t>(c.anon) + 64 * P);
    (r->r.has_payload() ? payload : zero) += (hi - lo) / P;
  }
  CHECK_EQ(payload, 42u);
  if (payload != 42u || getenv("MRC_DEBUG")) {
    for (const auto& v : d.mm.at(pid)) std::printf("# %s %s %lx %d\n", format_vma(v).c_str(), v.vmflags().c_str(), (unsigned long)v.shmid(), v.contents_elsewhere());
    for (auto* r : runs) std::printf("# run %lx %u %d\n", (unsigned long)r->r.addr(), r->r.npages(), r->r.has_payload());
    std::printf("# anon %p pnone %p\n", (void*)c.anon, (void*)c.pnone);
  }
  CHECK_EQ(zero, 5u);
  std::string img = bytes_at(d, pid, reinterpret_cast<uint64_t>(c.anon), 64 * P);
  bool same = true;
  for (size_t pg = 0; pg < 64; ++pg)
    for (size_t i = 0; i < P; ++i) {
      char want = (pg < 10 || pg >= 32) ? pattern(pg, i) : 0;
      if (img[pg * P + i] != want) same = false;
    }
  CHECK(same);

  // PROT_NONE: contents read anyway.
  img = bytes_at(d, pid, reinterpret_cast<uint64_t>(c.pnone), 4 * P);
  same = true;
  for (size_t i = 0; i < 4 * P; ++i) same &= img[i] == pattern(100 + i / P, i % P);
  CHECK(same);

  // shared anon: as an object, 8 written pages.
  img = bytes_at(d, pid, reinterpret_cast<uint64_t>(c.shared), 16 * P);
  same = true;
  for (size_t i = 0; i < 8 * P; ++i) same &= img[i] == pattern(200 + i / P, i % P);
  for (size_t i = 8 * P; i < 16 * P; ++i) same &= img[i] == 0;
  CHECK(same);

  // memfd mapped twice: sent once (8 pages of 'M'); one VMA carries it.
  uint64_t memfd_id = 0;
  int carriers = 0, elsewhere = 0;
  for (const auto& v : d.mm.at(pid))
    if (v.start() == reinterpret_cast<uint64_t>(c.memfd1)) memfd_id = v.shmid();
  for (const auto& v : d.mm.at(pid))
    if (v.kind() == pb::VMA_MEMFD && v.shmid() == memfd_id) (v.contents_elsewhere() ? elsewhere : carriers)++;
  CHECK(memfd_id != 0);
  CHECK_EQ(carriers, 1);
  CHECK_EQ(elsewhere, 1);
  uint64_t memfd_pages = 0;
  for (const auto& r : d.runs)
    if (r.r.shmid() == memfd_id) {
      memfd_pages += r.r.npages();
      CHECK(r.r.has_payload());
      CHECK(r.data.find_first_not_of('M') == std::string::npos);
    }
  CHECK_EQ(memfd_pages, 8u);
  CHECK_EQ(bytes_at(d, pid, reinterpret_cast<uint64_t>(c.memfd2), 4 * P), std::string(4 * P, 'M'));

  // private file mapping: only the COW page.
  runs = runs_in(d, pid, reinterpret_cast<uint64_t>(c.filemap), reinterpret_cast<uint64_t>(c.filemap) + 4 * P);
  CHECK_EQ(runs.size(), 1u);
  if (runs.size() == 1) {
    CHECK_EQ(runs[0]->r.addr(), reinterpret_cast<uint64_t>(c.filemap) + 2 * P);
    CHECK_EQ(runs[0]->r.npages(), 1u);
    CHECK_EQ(runs[0]->data, std::string(P, 'W'));
  }
  // Nothing of [vvar]/[vdso]/[vsyscall].
  for (const auto& v : d.mm.at(pid))
    if (v.kind() == pb::VMA_VVAR || v.kind() == pb::VMA_VDSO || v.kind() == pb::VMA_VSYSCALL ||
        v.kind() == pb::VMA_VVAR_VCLOCK)
      CHECK(runs_in(d, pid, v.start(), v.end()).empty());
}

TEST(zero_page_check) {
  std::vector<uint64_t> page(P / 8, 0);
  CHECK(page_is_zero(page.data()));
  page.back() = 1;
  CHECK(!page_is_zero(page.data()));
  page.back() = 0;
  page[0] = 1ull << 63;
  CHECK(!page_is_zero(page.data()));
}

TEST(dumps_a_child_with_pagemap_scan) {
  Child c;
  start_child(c);
  check_child_image(c, dump_child(c.pid, false));
}

TEST(dumps_a_child_with_the_pagemap_file) {
  Child c;
  start_child(c);
  check_child_image(c, dump_child(c.pid, true));
}

TEST(small_buffer_splits_runs) {
  Child c;
  start_child(c);
  Dump d = dump_child(c.pid, false, 8 * P);
  check_child_image(c, d);
  for (const auto& r : d.runs) CHECK(r.r.npages() <= 8);
}

TEST(pipeline_forwards_and_appends) {
  Child c;
  start_child(c);
  std::string in = tmpfile_path(), out = tmpfile_path();
  {
    ScopedFd fd(::open(in.c_str(), O_WRONLY | O_TRUNC));
    StreamWriter w(fd.get());
    w.header(make_header("ck-freeze"));
    pb::Frame f;
    f.set_pid(c.pid);
    f.mutable_process()->set_pid(c.pid);
    f.mutable_process()->set_comm("child");
    w.frame(f);
    pb::Frame n;
    n.mutable_note()->set_stage("test");
    n.mutable_note()->set_text("kept");
    w.frame(n);
    w.finish();
  }
  {
    ScopedFd i(::open(in.c_str(), O_RDONLY)), o(::open(out.c_str(), O_WRONLY | O_TRUNC));
    MemreadOptions opt;
    CHECK_EQ(run_memread(opt, i.get(), o.get()), 0);
  }
  Dump d = load(out);
  unlink(in.c_str());
  unlink(out.c_str());
  CHECK_EQ(d.header.writers_size(), 2);
  if (d.header.writers_size() == 2) CHECK_EQ(d.header.writers(1), std::string("ck-memread ") + kVersion);
  CHECK(d.frames.size() >= 3);
  if (d.frames.size() >= 3) {
    CHECK(d.frames[0].has_process());
    CHECK(d.frames[1].has_note() && d.frames[1].note().text() == "kept");
    CHECK(d.frames[2].has_mm());
  }
  check_child_image(c, d);
}

TEST(vanished_and_exited_pids_fail_naming_them) {
  pid_t p = fork();
  if (p == 0) _exit(0);
  // Not reaped yet: a zombie.
  usleep(50000);
  {
    std::string path = tmpfile_path();
    ScopedFd fd(::open(path.c_str(), O_WRONLY));
    StreamWriter w(fd.get());
    MemReader m(w, 1 << 20);
    bool thrown = false;
    try {
      m.dump({p});
    } catch (const Error& e) {
      thrown = true;
      CHECK_EQ(e.status(), 1);
      CHECK(std::string(e.what()).find(strf("pid %d", p)) != std::string::npos);
    }
    CHECK(thrown);
    unlink(path.c_str());
  }
  waitpid(p, nullptr, 0);
  MemreadOptions o;
  o.pid = p;
  CHECK_THROWS(run_memread(o, 0, 1), 1, "no such process");
}

int cli(int argc, char** argv) {
  std::string cmd = argv[1];
  if (cmd == "maps" && argc == 4) {
    Dump d = load(argv[2]);
    for (const auto& v : d.mm[std::strtoul(argv[3], nullptr, 0)]) std::printf("%s\n", format_vma(v).c_str());
    return 0;
  }
  if (cmd == "sum" && argc == 6) {
    Dump d = load(argv[2]);
    std::string b = bytes_at(d, std::strtoul(argv[3], nullptr, 0), std::strtoull(argv[4], nullptr, 0),
                             std::strtoull(argv[5], nullptr, 0));
    std::printf("%#" PRIx64 "\n", fnv64(b));
    return 0;
  }
  if (cmd == "bytes" && argc == 6) {
    Dump d = load(argv[2]);
    std::string b = bytes_at(d, std::strtoul(argv[3], nullptr, 0), std::strtoull(argv[4], nullptr, 0),
                             std::strtoull(argv[5], nullptr, 0));
    for (unsigned char c : b) std::printf("%02x", c);
    std::printf("\n");
    return 0;
  }
  if (cmd == "shm" && argc == 3) {
    Dump d = load(argv[2]);
    std::map<uint64_t, std::set<uint32_t>> senders;
    std::map<uint64_t, uint64_t> pages, vmas, elsewhere;
    for (const auto& r : d.runs)
      if (r.r.shmid()) {
        senders[r.r.shmid()].insert(r.r.pid());
        pages[r.r.shmid()] += r.r.npages();
      }
    for (const auto& [pid, vs] : d.mm)
      for (const auto& v : vs)
        if (v.shmid()) {
          vmas[v.shmid()]++;
          elsewhere[v.shmid()] += v.contents_elsewhere();
        }
    for (const auto& [id, n] : vmas) {
      std::string who;
      for (uint32_t p : senders[id]) who += (who.empty() ? "" : ",") + std::to_string(p);
      std::printf("shmid=%#" PRIx64 " vmas=%" PRIu64 " elsewhere=%" PRIu64 " pages=%" PRIu64 " senders=%s\n", id, n,
                  elsewhere[id], pages[id], who.empty() ? "-" : who.c_str());
    }
    return 0;
  }
  if (cmd == "procs" && argc == 3) {
    Dump d = load(argv[2]);
    for (uint32_t p : d.procs) std::printf("%u\n", p);
    return 0;
  }
  if (cmd == "runs" && argc == 3) {
    ScopedFd fd(::open(argv[2], O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) throw_errno(std::string("unable to open '") + argv[2] + "'");
    StreamReader r(fd.get(), argv[2]);
    pb::Frame f;
    uint64_t pos = sizeof kMagic, pay = 0;
    while (r.next(&f)) {
      pos += 4 + r.raw().size();
      if (!f.has_pages() || !f.pages().has_payload()) continue;
      const auto& p = f.pages();
      uint64_t len = uint64_t{p.npages()} * kPageSize;
      std::printf("%u %#" PRIx64 " %u %" PRIu64 " %" PRIu64 " %u\n", p.pid(), p.addr(), p.npages(), pos, pay, p.round());
      pos += len, pay += len;
    }
    return 0;
  }
  std::fprintf(stderr, "usage: memread_check maps|sum|bytes|shm|procs|runs FILE ...\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 1) return run_unit_tests();
  try {
    return cli(argc, argv);
  } catch (const Error& e) {
    std::fprintf(stderr, "memread_check: %s\n", e.what());
    return e.status();
  }
}
