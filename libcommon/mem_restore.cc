// ck-restore, the memory room: replaces a seized helper's address space with
// the dumped one and fills it.  The vdso group is moved to its dumped place,
// every VMA is mapped, anonymous memory is filled with UFFDIO_COPY (each page
// allocated with its contents) and the rest with process_vm_writev.
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <linux/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <sstream>

#include "error.h"
#include "fd.h"
#include "kinds.h"
#include "log.h"
#include "restore_impl.h"
#include "uffd.h"

CK_LOG_MODULE("restore");

#ifndef PTRACE_GET_RSEQ_CONFIGURATION
#define PTRACE_GET_RSEQ_CONFIGURATION 0x420f
#endif
#ifndef PR_SET_MM_MAP
#define PR_SET_MM_MAP 14
#endif
#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

namespace ck {

std::vector<MapLine> read_maps(pid_t pid) {
  std::vector<MapLine> out;
  std::istringstream in(read_file(strf("/proc/%d/maps", pid)));
  std::string line;
  while (std::getline(in, line)) {
    MapLine m;
    m.start = std::stoull(line.substr(0, line.find('-')), nullptr, 16);
    m.end = std::stoull(line.substr(line.find('-') + 1), nullptr, 16);
    size_t slash = line.find_first_of("/[");
    if (slash != std::string::npos) m.name = line.substr(slash);
    out.push_back(m);
  }
  return out;
}

void TaskBuilder::start() {
  pid_t tid = R.outer(static_cast<pid_t>(t.threads[0].tid()));
  std::vector<MapLine> cur = read_maps(opid);
  // A page free in both the image and the helper's own layout.
  uint64_t tramp = 0;
  for (uint64_t cand = 0x10000; cand < (1ull << 46) && !tramp; cand += 0x100000) {
    bool busy = false;
    for (auto& v : t.vmas) busy |= overlaps(cand, cand + kPage, v.start(), v.end());
    for (auto& m : cur) busy |= overlaps(cand, cand + kPage, m.start, m.end);
    if (!busy) tramp = cand;
  }
  if (!tramp) fail(strf("no room for the restorer's trampoline in pid %d", pid));
  {
    RemoteSyscalls boot(tid, find_syscall_insn(opid));
    long r = boot.check("mmap", SYS_mmap, tramp, kPage, PROT_READ | PROT_WRITE | PROT_EXEC,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, static_cast<uint64_t>(-1), 0);
    if (static_cast<uint64_t>(r) != tramp) fail(strf("trampoline landed at %#lx, not %#lx", r, (long)tramp));
    const unsigned char code[] = {0x0f, 0x05, 0xcc};
    write_mem(opid, tramp, code, sizeof code);
  }
  t.tramp = tramp;
  scratch = tramp + 1024;
  rs = std::make_unique<RemoteSyscalls>(tid, tramp);
  // The helper's rseq area is about to go: unregister it first.
  struct ptrace_rseq_configuration rc = {};
  if (ptrace(static_cast<__ptrace_request>(PTRACE_GET_RSEQ_CONFIGURATION), tid, sizeof rc, &rc) > 0 &&
      rc.rseq_abi_pointer)
    rs->check("rseq", SYS_rseq, rc.rseq_abi_pointer, rc.rseq_abi_size, 1 /* UNREGISTER */, rc.signature);
  for (auto& m : cur) {
    if (m.start == tramp || is_vdso_group(m.name) || m.name == "[vsyscall]") continue;
    rs->check("munmap", SYS_munmap, m.start, m.end - m.start);
  }
  move_vdso(cur);
  for (auto& v : t.vmas) map_vma(v);
  open_uffd();
}

void TaskBuilder::open_uffd() {
  std::vector<std::pair<uint64_t, uint64_t>> want;
  for (auto& v : t.vmas)
    if (v.kind() == pb::VMA_ANON || v.kind() == pb::VMA_HEAP || v.kind() == pb::VMA_STACK)
      want.emplace_back(v.start(), v.end());
  if (want.empty()) return;
  std::sort(want.begin(), want.end());
  long tfd = rs->syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
  if (tfd < 0) {
    LOG_DEBUG("pid %d: no userfaultfd (%s): pages go through process_vm_writev", pid, strerror(static_cast<int>(-tfd)));
    return;
  }
  ScopedFd fd = ck::take_fd(opid, static_cast<int>(tfd));
  int err = errno;
  rs->check("close", SYS_close, tfd);
  if (!fd.valid()) throw_errno(strf("unable to take the userfaultfd of pid %d", pid), err);
  uffd = std::move(fd);
  struct uffdio_api api = {UFFD_API, 0, 0};
  if (::ioctl(uffd.get(), UFFDIO_API, &api) != 0) throw_errno("userfaultfd: UFFDIO_API");
  for (auto& [a, b] : want) {
    struct uffdio_register reg = {{a, b - a}, UFFDIO_REGISTER_MODE_MISSING, 0};
    if (::ioctl(uffd.get(), UFFDIO_REGISTER, &reg) != 0)
      throw_errno(strf("pid %d: unable to register %#lx-%#lx with userfaultfd", pid, (unsigned long)a, (unsigned long)b));
    registered.emplace_back(a, b);
  }
}

void TaskBuilder::close_uffd() {
  if (uffd.get() < 0) return;
  for (auto& [a, b] : registered) {
    struct uffdio_range r = {a, b - a};
    if (::ioctl(uffd.get(), UFFDIO_UNREGISTER, &r) != 0)
      throw_errno(strf("pid %d: unable to unregister %#lx-%#lx from userfaultfd", pid, (unsigned long)a, (unsigned long)b));
  }
  registered.clear();
  uffd.reset();
}

// Writes `len` bytes at `addr` of the task: UFFDIO_COPY where the range
// is registered anonymous memory, process_vm_writev elsewhere.
void TaskBuilder::put_pages(uint64_t addr, const char* src, uint64_t len) {
  while (len) {
    auto it = std::upper_bound(registered.begin(), registered.end(), std::make_pair(addr, ~uint64_t{0}));
    uint64_t n = len;
    bool reg = false;
    if (it != registered.begin() && addr < std::prev(it)->second) {
      reg = true;
      n = std::min(len, std::prev(it)->second - addr);
    } else if (it != registered.end()) {
      n = std::min(len, it->first > addr ? it->first - addr : len);
    }
    if (reg)
      uffd_copy(addr, src, n);
    else
      write_mem(opid, addr, src, n);
    addr += n, src += n, len -= n;
  }
}

bool TaskBuilder::all_registered(uint64_t addr, uint64_t len) const {
  auto it = std::upper_bound(registered.begin(), registered.end(), std::make_pair(addr, ~uint64_t{0}));
  return it != registered.begin() && addr + len <= std::prev(it)->second;
}

void TaskBuilder::uffd_copy(uint64_t addr, const char* src, uint64_t len) {
  // A page already there was written before: overwrite it.
  uint64_t at = 0;
  if (!ck::uffd_copy(uffd.get(), addr, src, len, [&](uint64_t a, const char* p) { write_mem(opid, a, p, kPage); }, &at))
    throw_errno(strf("unable to fill %#lx of pid %d (UFFDIO_COPY)", (unsigned long)at, pid));
}

void TaskBuilder::move_vdso(const std::vector<MapLine>& cur) {
  std::map<std::string, std::pair<uint64_t, uint64_t>> from, to;
  for (auto& m : cur)
    if (is_vdso_group(m.name)) from[m.name] = {m.start, m.end};
  for (auto& v : t.vmas)
    if (is_vdso_group(v.path())) to[v.path()] = {v.start(), v.end()};
  if (to.empty()) {  // the image had none (vdso=0): drop ours
    for (auto& [n, r] : from) rs->check("munmap", SYS_munmap, r.first, r.second - r.first);
    return;
  }
  for (auto& [n, r] : to)
    if (!from.count(n) || from[n].second - from[n].first != r.second - r.first)
      fail(strf("pid %d: the vdso of this kernel does not match the image's (%s)", pid, n.c_str()));
  bool clash = false;
  for (auto& [n, r] : from)
    for (auto& [n2, r2] : to) clash |= overlaps(r.first, r.second, r2.first, r2.second) && from[n] != to[n];
  auto move_all = [&](std::map<std::string, std::pair<uint64_t, uint64_t>>& src, uint64_t delta_base,
                      bool to_final) {
    for (auto& [n, r] : src) {
      uint64_t len = r.second - r.first;
      uint64_t dst = to_final ? to[n].first : r.first - from.begin()->second.first + delta_base;
      if (dst == r.first) continue;
      rs->check("mremap", SYS_mremap, r.first, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
      r = {dst, dst + len};
    }
  };
  if (clash) {  // park the group somewhere free first
    uint64_t park = t.tramp + 0x10000000;
    move_all(from, park, false);
  }
  move_all(from, 0, true);
}

void TaskBuilder::map_vma(const pb::Vma& v) {
  if (is_vdso_group(v.path()) || v.path() == "[vsyscall]") return;
  uint64_t len = v.end() - v.start();
  uint32_t prot = v.prot() | PROT_READ | PROT_WRITE;  // final prot set in finish()
  bool gd = v.vmflags().find("gd") != std::string::npos;
  // A shared file mapping may be made writable later (mprotect) only if its
  // file was open for writing: smaps says so ("mw", VM_MAYWRITE).
  const bool may_write = (" " + v.vmflags() + " ").find(" mw ") != std::string::npos;
  if (v.file()) {
    // A deleted file or memfd: the inode the restorer made for it, shared by
    // every mapping and fd of it.
    int ifd = R.files.inode_fd(v.file());
    if (ifd < 0)
      bad_input(strf("mapping %#lx-%#lx of pid %d names file description %u, whose file the image does not carry",
                     (unsigned long)v.start(), (unsigned long)v.end(), pid, v.file()));
    bool shared = v.flags() & MAP_SHARED;
    int oflags = shared && (may_write || (v.prot() & PROT_WRITE)) ? O_RDWR : O_RDONLY;
    long fd = rs->check("open", SYS_open, put_str(strf("/proc/%d/fd/%d", getpid(), ifd)), oflags | O_CLOEXEC);
    uint32_t p = shared ? v.prot() : prot;
    rs->check("mmap", SYS_mmap, v.start(), len, p, (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_FIXED, fd, v.pgoff());
    rs->check("close", SYS_close, fd);
    advise(v);
    LOG_DEBUG("pid %d: mapped %#lx-%#lx %s (file %u)", pid, (unsigned long)v.start(), (unsigned long)v.end(), v.path().c_str(), v.file());
    return;
  }
  // One case per supported mapping kind of kinds.h: the restorability check
  // (restorable.h) let nothing else through.
  const KindId kid = kind_of(v);
  switch (kid) {
    case KindId::kVmaAnon:
    case KindId::kVmaHeap:
    case KindId::kVmaStack: {
      uint32_t flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | (gd ? MAP_GROWSDOWN : 0);
      rs->check("mmap", SYS_mmap, v.start(), len, prot, flags, static_cast<uint64_t>(-1), 0);
      break;
    }
    case KindId::kVmaSharedAnon: {
      ShmObject& o = shm_object(v);
      long fd = take_fd(o.fd);
      rs->check("mmap", SYS_mmap, v.start(), len, prot, MAP_SHARED | MAP_FIXED, fd, v.pgoff());
      rs->check("close", SYS_close, fd);
      break;
    }
    case KindId::kVmaFilePrivate:
    case KindId::kVmaFileShared: {
      struct stat st;
      if (::stat(v.path().c_str(), &st) != 0)
        throw_errno(strf("unable to map '%s' at %#lx in pid %d", v.path().c_str(), (unsigned long)v.start(), pid));
      int64_t mtime = st.st_mtim.tv_sec * 1000000000ll + st.st_mtim.tv_nsec;
      if ((v.ino() && st.st_ino != v.ino()) || (v.file_size() && static_cast<uint64_t>(st.st_size) != v.file_size()) ||
          (v.file_mtime_ns() && mtime != v.file_mtime_ns()))
        fail(strf("file '%s' mapped at %#lx in pid %d changed since the dump (inode, size or mtime)",
                  v.path().c_str(), (unsigned long)v.start(), pid));
      bool shared = v.kind() == pb::VMA_FILE_SHARED;
      int oflags = shared && (may_write || (v.prot() & PROT_WRITE)) ? O_RDWR : O_RDONLY;
      long fd = rs->check("open", SYS_open, put_str(v.path()), oflags);
      uint32_t p = shared ? v.prot() : prot;
      rs->check("mmap", SYS_mmap, v.start(), len, p, (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_FIXED, fd, v.pgoff());
      rs->check("close", SYS_close, fd);
      break;
    }
    default:
      fail(strf("internal: mapping %s of pid %d is of kind %s, which nothing rebuilds", describe(v).c_str(), pid,
                kind(kid).name));
  }
  advise(v);
  LOG_DEBUG("pid %d: mapped %#lx-%#lx %s", pid, (unsigned long)v.start(), (unsigned long)v.end(), v.path().c_str());
}

// VMA flags that madvise() sets (smaps VmFlags two-letter names).  Lost,
// they change more than the flag: glibc marks thread stacks "nh", and
// without it neighbouring mappings merge into one.
void TaskBuilder::advise(const pb::Vma& v) {
  static const struct {
    const char* flag;
    int advice;
  } kAdvice[] = {{"nh", MADV_NOHUGEPAGE}, {"hg", MADV_HUGEPAGE},   {"dc", MADV_DONTFORK},
                 {"dd", MADV_DONTDUMP},   {"wf", MADV_WIPEONFORK}, {"mg", MADV_MERGEABLE}};
  std::istringstream in(v.vmflags());
  std::string f;
  while (in >> f)
    for (auto& a : kAdvice)
      if (f == a.flag) {
        long r = rs->syscall(SYS_madvise, v.start(), v.end() - v.start(), a.advice);
        if (r < 0)
          fail(strf("pid %d: unable to set '%s' on %#lx-%#lx (madvise): %s", pid, a.flag, (unsigned long)v.start(),
                    (unsigned long)v.end(), strerror(static_cast<int>(-r))));
      }
}

ShmObject& TaskBuilder::shm_object(const pb::Vma& v) {
  ShmObject& o = R.shm[v.shmid()];
  if (!o.base) {
    size_t size = 0;
    for (auto& [p, t2] : R.tasks)
      for (auto& w : t2.vmas)
        if (w.shmid() == v.shmid()) size = std::max<size_t>(size, w.pgoff() + (w.end() - w.start()));
    size = std::max<size_t>(size, v.pgoff() + (v.end() - v.start()));
    void* m = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) throw_errno("unable to create shared memory");
    o.base = static_cast<char*>(m);
    o.size = size;
    std::string path = strf("/proc/self/map_files/%lx-%lx", (unsigned long)o.base, (unsigned long)(o.base + size));
    o.fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (o.fd < 0) throw_errno("unable to open '" + path + "'");
  }
  return o;
}

// Opens in the target the file behind fd `fd` of the restorer, through
// /proc (the restorer's pid may not exist in the target's namespace).
long TaskBuilder::take_fd(int fd) {
  return rs->check("open", SYS_open, put_str(strf("/proc/%d/fd/%d", getpid(), fd)), O_RDWR | O_CLOEXEC);
}

const pb::Vma* TaskBuilder::vma_at(uint64_t addr) const {
  for (auto& v : t.vmas)
    if (addr >= v.start() && addr < v.end()) return &v;
  return nullptr;
}

void TaskBuilder::finish_memory() {
  if (!lazy) close_uffd();
  const pb::Process& p = t.proc;
  for (auto& v : t.vmas) {
    if (is_vdso_group(v.path()) || v.path() == "[vsyscall]" || v.kind() == pb::VMA_FILE_SHARED) continue;
    if (v.prot() != (v.prot() | PROT_READ | PROT_WRITE))
      rs->check("mprotect", SYS_mprotect, v.start(), v.end() - v.start(), v.prot());
  }
  for (auto& v : t.vmas)  // mlock()ed: locked again, pages and all
    if ((" " + v.vmflags() + " ").find(" lo ") != std::string::npos && !(lazy && all_registered(v.start(), v.end() - v.start())))
      rs->check("mlock", SYS_mlock, v.start(), v.end() - v.start());
  // mm fields: brk, code/data/stack/arg/env bounds, auxv, exe.
  struct prctl_mm_map mm = {};
  mm.start_code = p.start_code();
  mm.end_code = p.end_code();
  mm.start_data = p.start_data();
  mm.end_data = p.end_data();
  mm.start_brk = p.start_brk();
  mm.brk = p.brk();
  mm.start_stack = p.start_stack();
  mm.arg_start = p.arg_start();
  mm.arg_end = p.arg_end();
  mm.env_start = p.env_start();
  mm.env_end = p.env_end();
  std::string auxv = p.auxv();
  uint64_t auxv_at = scratch + 2048;
  write_mem(opid, auxv_at, auxv.data(), std::min<size_t>(auxv.size(), 1024));
  mm.auxv = reinterpret_cast<__u64*>(auxv_at);
  mm.auxv_size = static_cast<__u32>(std::min<size_t>(auxv.size(), 1024));
  long exe = -1;
  if (!p.exe().empty() && p.exe().find(" (deleted)") == std::string::npos) {
    exe = rs->check("open", SYS_open, put_str(p.exe()), O_RDONLY | O_CLOEXEC);
  } else if (!p.exe().empty()) {
    // A deleted binary (a daemon that lived through an upgrade): the
    // inode made again for its text mapping.
    for (auto& v : t.vmas)
      if (v.file() && v.path() == p.exe() && R.files.inode_fd(v.file()) >= 0) {
        exe = rs->check("open", SYS_open, put_str(strf("/proc/%d/fd/%d", getpid(), R.files.inode_fd(v.file()))),
                        O_RDONLY | O_CLOEXEC);
        break;
      }
  }
  mm.exe_fd = static_cast<__u32>(exe);
  uint64_t at = put(&mm, sizeof mm);
  long r = rs->syscall(SYS_prctl, PR_SET_MM, PR_SET_MM_MAP, at, sizeof mm, 0);
  if (exe >= 0) rs->syscall(SYS_close, exe);
  if (r < 0) throw_errno(strf("unable to set the mm fields of pid %d (prctl PR_SET_MM_MAP)", pid), static_cast<int>(-r));
}

}  // namespace ck
