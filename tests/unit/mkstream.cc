// mkstream: writes a sample ck stream for the tests of ck-store and ck-crit
// (header, two processes with threads, files, fds, memory layouts, page runs
// with and without payload, a cgroup, a note, a frame of an unknown kind,
// trailer).
//
//   mkstream                      self-test (TAP), as tests/run-all runs it
//   mkstream [--major N] OUT      writes the stream to OUT ("-" = stdout) and
//                                 prints on stderr, from its own model of the
//                                 memory, the lines
//                                 "sum PID ADDR LEN FNV" for some ranges
//                                 (--major N other than 1: a header N.0)
//   mkstream --minor 0 OUT        the same stream in format 1.0: no digests,
//                                 payloads in the trailer checksum
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "error.h"
#include "fd.h"
#include "image.h"
#include "stream.h"

using namespace ck;

namespace {

struct Run {
  uint32_t pid;
  uint64_t addr;
  uint32_t npages;
  bool payload;
};

const Run kRuns[] = {
    {100, 0x400000, 2, true},  {100, 0x600000, 1, false}, {100, 0x601000, 3, true},
    {100, 0x7ffe0000, 1, true}, {102, 0x500000, 4, false}, {102, 0x504000, 300, true},
};

unsigned char content(uint32_t pid, uint64_t addr) {
  uint64_t x = addr * 0x9E3779B97F4A7C15ull + pid;
  x ^= x >> 29;
  return static_cast<unsigned char>(x * 31 + (x >> 17));
}

// The memory the stream describes: bytes of payload runs, zero elsewhere.
unsigned char byte_at(uint32_t pid, uint64_t addr) {
  for (const Run& r : kRuns)
    if (r.pid == pid && addr >= r.addr && addr < r.addr + uint64_t{r.npages} * kPageSize)
      return r.payload ? content(pid, addr) : 0;
  return 0;
}

uint64_t fnv(uint32_t pid, uint64_t addr, uint64_t len) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (uint64_t i = 0; i < len; ++i) {
    h ^= byte_at(pid, addr + i);
    h *= 0x100000001b3ULL;
  }
  return h;
}

pb::Frame frame(uint32_t pid) {
  pb::Frame f;
  f.set_pid(pid);
  return f;
}

void write_sample(int fd, uint32_t major) {
  StreamWriter w(fd);
  pb::Header h = make_header("mkstream");
  h.set_major(major);
  if (major != kMajor) h.set_minor(0);
  h.set_root_pid(100);
  h.set_hostname("testhost");
  w.header(h);
  for (uint32_t pid : {100u, 102u}) {
    pb::Frame f = frame(pid);
    auto* p = f.mutable_process();
    p->set_pid(pid);
    p->set_ppid(pid == 100 ? 1 : 100);
    p->set_comm(pid == 100 ? "sample" : "child");
    p->add_tids(pid);
    if (pid == 100) p->add_tids(101);
    p->set_cmdline(std::string("sample\0--x\0", 11));
    w.frame(f);
    for (uint32_t tid : p->tids()) {
      pb::Frame t = frame(pid);
      t.mutable_thread()->set_pid(pid);
      t.mutable_thread()->set_tid(tid);
      t.mutable_thread()->set_comm(tid == 101 ? "worker" : p->comm());
      t.mutable_thread()->set_gpregs(std::string(216, '\x11'));
      w.frame(t);
    }
  }
  {
    pb::Frame f = frame(100);
    auto* d = f.mutable_file();
    d->set_id(1);
    d->set_kind(pb::FILE_CHR);
    d->set_path("/dev/null");
    d->set_flags(O_RDWR);
    w.frame(f);
    f = frame(100);
    d = f.mutable_file();
    d->set_id(2);
    d->set_kind(pb::FILE_PIPE);
    d->set_path("pipe:[4242]");
    d->set_pipe_data("queued");
    w.frame(f);
    int fds[][3] = {{0, 1, 0}, {1, 2, 0}, {2, 2, 1}};
    for (auto& x : fds) {
      pb::Frame g = frame(100);
      g.mutable_fd()->set_pid(100);
      g.mutable_fd()->set_fd(x[0]);
      g.mutable_fd()->set_desc(x[1]);
      g.mutable_fd()->set_cloexec(x[2]);
      w.frame(g);
    }
  }
  auto vma = [](pb::MemLayout* m, uint64_t s, uint64_t e, uint32_t prot, pb::VmaKind k, const char* path) {
    auto* v = m->add_vmas();
    v->set_start(s);
    v->set_end(e);
    v->set_prot(prot);
    v->set_flags(MAP_PRIVATE);
    v->set_kind(k);
    v->set_path(path);
  };
  {
    pb::Frame f = frame(100);
    auto* m = f.mutable_mm();
    m->set_pid(100);
    vma(m, 0x400000, 0x410000, PROT_READ | PROT_EXEC, pb::VMA_FILE_PRIVATE, "/usr/bin/sample");
    vma(m, 0x600000, 0x620000, PROT_READ | PROT_WRITE, pb::VMA_HEAP, "[heap]");
    vma(m, 0x7ffd0000, 0x7fff0000, PROT_READ | PROT_WRITE, pb::VMA_STACK, "[stack]");
    w.frame(f);
    f = frame(102);
    m = f.mutable_mm();
    m->set_pid(102);
    vma(m, 0x500000, 0x700000, PROT_READ | PROT_WRITE, pb::VMA_ANON, "");
    w.frame(f);
  }
  for (const Run& r : kRuns) {
    pb::PageRun run;
    run.set_pid(r.pid);
    run.set_addr(r.addr);
    run.set_npages(r.npages);
    run.set_has_payload(r.payload);
    std::vector<unsigned char> data;
    if (r.payload) {
      data.resize(uint64_t{r.npages} * kPageSize);
      for (size_t i = 0; i < data.size(); ++i) data[i] = content(r.pid, r.addr + i);
    }
    struct iovec iov = {data.data(), data.size()};
    w.pages(run, &iov, r.payload ? 1 : 0);
  }
  {
    pb::Frame f = frame(0);
    auto* c = f.mutable_cgroup();
    c->set_path("/ck-test");
    (*c->mutable_settings())["memory.max"] = "max";
    (*c->mutable_settings())["cpu.weight"] = "100";
    (*c->mutable_settings())["pids.max"] = "50";
    c->add_procs(100);
    c->add_procs(102);
    w.frame(f);
    f = frame(0);
    f.mutable_note()->set_stage("mkstream");
    f.mutable_note()->set_text("a \"sample\" stream\nwith two lines");
    w.frame(f);
  }
  {
    // A frame of a kind this version does not know: body field 99.
    std::string raw = frame(100).SerializeAsString();
    raw += std::string("\x9a\x06\x04\x08\x2a\x10\x01", 7);  // field 99, len 4: {1: 42, 2: 1}
    w.raw_frame(raw);
  }
  w.finish();
}

// The sample as a 1.0 writer wrote it: the 1.1 stream read back, header
// minor 0, digests taken out, the trailer summed over payloads too.
void write_sample_1_0(int fd) {
  ScopedFd tmp(memfd_create("mkstream", 0));
  if (!tmp.valid()) throw_errno("unable to create a memfd");
  write_sample(tmp.get(), kMajor);
  lseek(tmp.get(), 0, SEEK_SET);
  StreamReader r(tmp.get(), "memfd");
  RawStreamOut out(fd);
  out.magic();
  pb::Frame f;
  std::vector<char> buf;
  while (r.next(&f)) {
    if (f.has_header()) {
      f.mutable_header()->set_minor(0);
      out.frame(f.SerializeAsString());
    } else if (f.has_pages()) {
      f.mutable_pages()->clear_digest();
      out.frame(f.SerializeAsString());
    } else {
      out.frame(r.raw());
    }
    buf.resize(r.payload_left());
    if (buf.empty()) continue;
    r.read_payload(buf.data(), buf.size());
    out.payload(buf.data(), buf.size());
  }
  out.finish();
}

int self_test() {
  int fd = memfd_create("mkstream", 0);
  if (fd < 0) return 1;
  write_sample(fd, kMajor);
  lseek(fd, 0, SEEK_SET);
  StreamReader r(fd, "memfd");
  pb::Frame f;
  int n = 0;
  while (r.next(&f)) ++n;
  close(fd);
  bool ok = n == 22 && r.trailer().payload_bytes() == (2 + 3 + 1 + 300) * uint64_t{kPageSize};
  std::printf("1..1\n%s 1 mkstream\n", ok ? "ok" : "not ok");
  if (!ok) std::printf("#   frames %d, payload %llu\n", n, (unsigned long long)r.trailer().payload_bytes());
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc == 1) return self_test();
    uint32_t major = kMajor;
    bool v1_0 = false;
    int i = 1;
    if (argc == 4 && std::strcmp(argv[1], "--major") == 0) {
      major = static_cast<uint32_t>(std::atoi(argv[2]));
      i = 3;
    } else if (argc == 4 && std::strcmp(argv[1], "--minor") == 0 && std::strcmp(argv[2], "0") == 0) {
      v1_0 = true;
      i = 3;
    }
    if (i != argc - 1) {
      std::fprintf(stderr, "usage: mkstream [--major N | --minor 0] OUT\n");
      return 2;
    }
    int fd = 1;
    if (std::strcmp(argv[i], "-") != 0) {
      fd = open(argv[i], O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd < 0) {
        std::perror(argv[i]);
        return 1;
      }
    }
    if (v1_0)
      write_sample_1_0(fd);
    else
      write_sample(fd, major);
    struct {
      uint32_t pid;
      uint64_t addr, len;
    } sums[] = {{100, 0x5ff000, 0x6000}, {100, 0x400100, 5000}, {100, 0x7ffdf000, 0x3000},
                {102, 0x500000, 0x130000}, {102, 0x505123, 1}, {100, 0x900000, 4096}};
    for (auto& s : sums)
      std::fprintf(stderr, "sum %u %#lx %lu %#lx\n", s.pid, static_cast<unsigned long>(s.addr),
                   static_cast<unsigned long>(s.len), static_cast<unsigned long>(fnv(s.pid, s.addr, s.len)));
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "mkstream: %s\n", e.what());
    return e.status();
  }
}
