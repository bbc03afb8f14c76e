#include "memread.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include "error.h"
#include "log.h"
#include "proc.h"
#include "pagemap_scan.h"
#include "round.h"
#include "track.h"
#include "tracer.h"
#include "parasite_abi.h"
#include "ptrace.h"
#include "vma.h"

CK_LOG_MODULE("memread");

namespace {
using ck::pagemap::kPageIsFile;
using ck::pagemap::kPageIsPfnZero;
using ck::pagemap::kPageIsPresent;
using ck::pagemap::kPageIsSwapped;
using ck_page_region = ck::pagemap::PageRegion;
using ck_pm_scan_arg = ck::pagemap::ScanArg;
constexpr unsigned long kPagemapScan = ck::pagemap::kIoctl;
// /proc/PID/pagemap entry bits
constexpr uint64_t kPmPresent = 1ull << 63;
constexpr uint64_t kPmSwapped = 1ull << 62;
constexpr uint64_t kPmFile = 1ull << 61;
// A swap entry of type 31 is no swapped page but a pte marker (here: the
// uffd-wp marker the kernel leaves where it zapped a write-protected page
// of a file mapping, or put on an unpopulated one): nothing is mapped there.
constexpr uint64_t kPmSwapTypeMask = 0x1f;
constexpr uint64_t kPmSwapTypeMarker = 0x1f;

// Walks [a.start, a.end) with PAGEMAP_SCAN as set up in a, calling
// fn(region) for every region found.  Returns 0, or the errno of a first
// call that failed with ENOTTY, EINVAL, EOPNOTSUPP or EPERM (nothing visited
// then); throws on anything else.
template <class Fn>
int pagemap_walk(int fd, pid_t pid, ck_pm_scan_arg a, Fn fn) {
  ck_page_region regs[512];
  a.size = sizeof a;
  a.vec = reinterpret_cast<uintptr_t>(regs);
  a.vec_len = sizeof regs / sizeof regs[0];
  const uint64_t start = a.start, end = a.end;
  for (;;) {
    int n = ::ioctl(fd, kPagemapScan, &a);
    if (n < 0) {
      if (errno == EINTR) continue;
      if ((errno == ENOTTY || errno == EINVAL || errno == EOPNOTSUPP || errno == EPERM) && a.start == start)
        return errno;
      if (errno == ESRCH) ck::fail(ck::strf("pid %d vanished during the dump", pid));
      ck::throw_errno(ck::strf("unable to scan pages of pid %d", pid));
    }
    for (int i = 0; i < n; ++i) fn(regs[i]);
    if (a.walk_end >= end || a.walk_end <= a.start) return 0;
    a.start = a.walk_end;
  }
}
}  // namespace

namespace ck {

bool page_is_zero(const void* p) {
  const uint64_t* w = static_cast<const uint64_t*>(p);
  for (size_t i = 0; i < kPageSize / 8; i += 8)
    if (w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] | w[i + 6] | w[i + 7]) return false;
  return true;
}

uint64_t shm_object_id(const pb::Vma& v) {
  uint64_t id = (v.dev() << 48) ^ v.ino();
  return id ? id : 1;
}

std::vector<pid_t> list_tree(pid_t root) {
  std::vector<pid_t> out{root};
  for (size_t i = 0; i < out.size(); ++i) {
    std::vector<pid_t> kids;
    try {
      kids = list_children(out[i]);
    } catch (const Error&) {
      if (!pid_alive(out[i])) fail(strf("pid %d: no such process", out[i]));
      throw;
    }
    for (pid_t c : kids)
      if (std::find(out.begin(), out.end(), c) == out.end()) out.push_back(c);
  }
  return out;
}

MemReader::MemReader(StreamWriter& w, size_t buffer_bytes) : w_(w) {
  cap_ = std::max<size_t>(buffer_bytes / kPageSize, 1) * kPageSize;
  buf_ = static_cast<char*>(std::aligned_alloc(kPageSize, cap_));
  if (!buf_) fail("unable to allocate the page buffer");
  bad_.assign(cap_ / kPageSize, 0);
}

MemReader::~MemReader() { std::free(buf_); }

void MemReader::use_tracer(TracerClient* t) { tracer_ = t; }

bool MemReader::in_place_now() const { return by_ref_ok_ && !force_copy_ && sess_.pages.valid(); }

int MemReader::mem_fd() {
  if (!mem_.valid()) {
    std::string p = strf("/proc/%d/mem", pid_);
    mem_.reset(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
    if (!mem_.valid()) {
      if (errno == ENOENT || errno == ESRCH) fail(strf("pid %d vanished during the dump", pid_));
      throw_errno("unable to open '" + p + "'");
    }
  }
  return mem_.get();
}

// /proc/PID/stat of a target, or "no such process" by pid.
static Stat live_stat(pid_t pid) {
  try {
    return read_stat(pid);
  } catch (const Error&) {
    fail(strf("pid %d: no such process", pid));
  }
}

void MemReader::set_files(const std::vector<pb::FileDesc>& descs) {
  files_given_ = true;
  for (const auto& d : descs)
    if (d.kind() == pb::FILE_MEMFD || (d.kind() == pb::FILE_REG && d.deleted()))
      files_.emplace(std::make_pair(d.dev(), d.ino()), d.id());
}

// A mapping of a deleted file or a memfd: its inode is carried with a file
// description.  The (dev, ino) of both sides are stat() results (the maps
// line and stat() disagree on some file systems).
void MemReader::link_file(pid_t pid, pb::Vma& v) {
  const std::string& p = v.path();
  const bool memfd = v.kind() == pb::VMA_MEMFD;
  const bool deleted = p.size() > 10 && p.compare(p.size() - 10, 10, " (deleted)") == 0;
  const bool file = v.kind() == pb::VMA_FILE_PRIVATE || v.kind() == pb::VMA_FILE_SHARED;
  if (!files_given_ || v.ino() == 0 || !(memfd || (file && deleted))) return;
  struct stat st;
  std::string mf = map_files_path(pid, v);
  if (::stat(mf.c_str(), &st) != 0) throw_errno(strf("unable to dump mapping %s of pid %d: unable to stat it", format_vma(v).c_str(), pid));
  auto it = files_.find({static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)});
  if (it != files_.end()) {
    v.set_file(it->second);
    return;
  }
  if (st.st_nlink != 0 && !memfd) return;  // "x (deleted)" is its real name
  fail(strf("unable to dump mapping %s of pid %d: its file is deleted and the stream carries no contents for it "
            "(was ck-freeze first in the pipeline?)", format_vma(v).c_str(), pid));
}

void MemReader::dump(const std::vector<pid_t>& pids) {
  // Layouts first, so every VMA of a shared object knows who carries it.
  std::vector<std::vector<pb::Vma>> layouts;
  for (pid_t pid : pids) {
    Stat st = live_stat(pid);
    if (st.f.size() > 3 && st.f[3] == "Z") fail(strf("pid %d: has exited (zombie)", pid));
    layouts.push_back(read_vmas(pid));
    for (auto& v : layouts.back()) {
      link_file(pid, v);
      if (!vma_is_shmem_object(v) || v.file()) continue;  // a file's pages travel with the file
      uint64_t id = shm_object_id(v);
      v.set_shmid(id);
      auto it = objects_.find(id);
      if (it == objects_.end()) {
        Object& o = objects_[id];
        std::string mf = map_files_path(pid, v);
        o.fd.reset(::open(mf.c_str(), O_RDONLY | O_CLOEXEC));
        if (!o.fd.valid()) {
          LOG_DEBUG("pid %d: unable to open '%s' (%s): pages of shared object %#lx read per mapping", pid,
                    mf.c_str(), std::strerror(errno), static_cast<unsigned long>(id));
          continue;
        }
        o.owner = pid;
        o.start = v.start();
      } else if (it->second.fd.valid()) {
        v.set_contents_elsewhere(true);
      }
    }
  }
  std::vector<PagePlan> plans;
  if (planner_) plans = planner_(pids, layouts);
  plans.resize(pids.size());
  for (size_t i = 0; i < pids.size(); ++i)
    with_context(strf("pid %d", pids[i]), [&] {
      plans[i].only.resize(layouts[i].size(), 0);
      dump_process(pids[i], layouts[i], plans[i]);
    });
  LOG_INFO("%lu vmas, %lu pages in %lu runs, %lu zero pages in %lu zero runs, %lu shared objects, %lu unreadable, "
           "%lu batches through the page parasite",
           (unsigned long)stats_.vmas, (unsigned long)stats_.pages, (unsigned long)stats_.runs,
           (unsigned long)stats_.zero_pages, (unsigned long)stats_.zero_runs, (unsigned long)stats_.objects,
           (unsigned long)stats_.unreadable, (unsigned long)stats_.in_place);
}

void MemReader::dump_process(pid_t pid, std::vector<pb::Vma>& vmas, const PagePlan& plan) {
  pid_ = pid;
  mem_.reset();
  std::string pm = strf("/proc/%d/pagemap", pid);
  pagemap_.reset(::open(pm.c_str(), O_RDONLY | O_CLOEXEC));
  if (!pagemap_.valid()) {
    if (errno == ENOENT || errno == ESRCH) fail(strf("pid %d vanished during the dump", pid));
    throw_errno("unable to open '" + pm + "'");
  }
  pb::Frame f;
  f.set_pid(pid);
  auto* mm = f.mutable_mm();
  mm->set_pid(pid);
  for (auto& v : vmas) *mm->add_vmas() = v;
  w_.frame(f);
  if (tracer_) open_session();  // after the layout was read: the parasite's mapping is not in it
  if (incremental_) {
    // The ranges this round carries whole: older rounds count for nothing there.
    std::vector<std::pair<uint64_t, uint64_t>> fresh = plan.whole;
    for (size_t i = 0; i < vmas.size(); ++i)
      if ((!plan.only[i] || !scan_ioctl_) && vma_has_private_pages(vmas[i])) fresh.push_back({vmas[i].start(), vmas[i].end()});
    gone_ = std::move(fresh);  // (emit_gone writes, in small notes, what is in gone_)
    emit_gone(pid, false);
  }

  for (size_t vi = 0; vi < vmas.size(); ++vi) {
    const pb::Vma& v = vmas[vi];
    ++stats_.vmas;
    by_ref_ok_ = (v.prot() & PROT_READ) && !(v.flags() & MAP_SHARED);
    LOG_DEBUG("pid %d vma %s kind %s%s%s", pid, format_vma(v).c_str(), pb::VmaKind_Name(v.kind()).c_str(),
              v.shmid() ? strf(" shmid %#lx", (unsigned long)v.shmid()).c_str() : "",
              v.contents_elsewhere() ? " (contents elsewhere)" : "");
    if (v.file()) {
      // The file's own pages travel with its description; private COW
      // copies (below) are this process's.
    } else if (vma_is_shmem_object(v)) {
      auto it = objects_.find(v.shmid());
      if (it != objects_.end() && it->second.fd.valid()) {
        if (it->second.owner == pid && it->second.start == v.start()) {
          flush();
          dump_object(v, it->second);
        }
      } else if (v.flags() & MAP_SHARED) {
        // No handle on the object: what this mapping shows of it.
        scan(v.start(), v.end(), false, v.pgoff(), v.shmid());
      }
    }
    if (!vma_has_private_pages(v)) continue;
    if (plan.only[vi] && scan_ioctl_) {
      // Only what the round names (written since its base), then what of
      // the mapping holds nothing of its own any more.
      ++stats_.dirty_vmas;
      auto it = std::upper_bound(plan.copy.begin(), plan.copy.end(), std::make_pair(v.start(), ~uint64_t{0}));
      if (it != plan.copy.begin()) --it;
      for (; it != plan.copy.end() && it->first < v.end(); ++it) {
        uint64_t lo = std::max(it->first, v.start()), hi = std::min(it->second, v.end());
        if (lo < hi) scan(lo, hi, true, lo, 0);
      }
      for (const auto& [lo, hi] : plan.gone)
        if (lo < v.end() && hi > v.start()) gone_.push_back({std::max(lo, v.start()), std::min(hi, v.end())});
      scan_gone(v);
      continue;
    }
    scan(v.start(), v.end(), true, v.start(), 0);
  }
  flush();
  if (tracer_) end_session();
  emit_gone(pid);
  pagemap_.reset();
  mem_.reset();
}

void MemReader::scan(uint64_t start, uint64_t end, bool anon_only, uint64_t label_base, uint64_t shmid) {
  split_ = true;  // runs never cross a VMA boundary
  if (!scan_ioctl_) return scan_pagemap_file(start, end, anon_only, label_base, shmid);
  ck_pm_scan_arg a;
  std::memset(&a, 0, sizeof a);
  a.start = start;
  a.end = end;
  a.category_anyof_mask = kPageIsPresent | kPageIsSwapped;
  a.return_mask = kPageIsPresent | kPageIsSwapped | kPageIsFile | kPageIsPfnZero;
  int err = pagemap_walk(pagemap_.get(), pid_, a, [&](const ck_page_region& r) {
    uint64_t c = r.categories;
    if (c & kPageIsPfnZero) return;                // the shared zero page: nothing written
    if (anon_only && (c & kPageIsFile)) return;    // page cache, not a COW copy
    queue(r.start, r.end - r.start, label_base + (r.start - start), shmid);
  });
  if (err == ENOTTY || err == EINVAL || err == EOPNOTSUPP) {
    LOG_DEBUG("PAGEMAP_SCAN unavailable (%s): reading /proc/PID/pagemap", std::strerror(err));
    scan_ioctl_ = false;
    return scan_pagemap_file(start, end, anon_only, label_base, shmid);
  }
  if (err) throw_errno(strf("unable to scan pages of pid %d", pid_), err);
}

void MemReader::scan_gone(const pb::Vma& v) {
  // Pages that hold no data of their own now, whatever they held in an
  // earlier round: a round must say so, as "not written since" does not
  // cover them (MADV_DONTNEED on anonymous memory leaves no write-protect
  // marker behind, and the kernel may free the whole page table; on a
  // file mapping it leaves a marker that reads as swapped, not written).
  // For anonymous memory that is every page neither present nor swapped,
  // found in one walk with the categories inverted.  A marker there needs
  // no word: the kernel puts one only on a page that was unpopulated when
  // it was write-protected, which that round said.
  ck_pm_scan_arg a;
  std::memset(&a, 0, sizeof a);
  a.start = v.start();
  a.end = v.end();
  if (v.kind() != pb::VMA_FILE_PRIVATE) {
    a.category_inverted = kPageIsPresent | kPageIsSwapped;
    a.category_mask = kPageIsPresent | kPageIsSwapped;
    a.return_mask = kPageIsPresent | kPageIsSwapped;
    int err = pagemap_walk(pagemap_.get(), pid_, a, [&](const ck_page_region& r) { gone_.push_back({r.start, r.end}); });
    if (err) throw_errno(strf("unable to scan pages of pid %d", pid_), err);
    return;
  }
  // A private file mapping: what is not a COW copy of its own (page cache,
  // nothing, or a marker where a written page was zapped) reads as the file.
  a.return_mask = kPageIsPresent | kPageIsSwapped | kPageIsFile | kPageIsPfnZero;
  std::vector<std::pair<uint64_t, uint64_t>> swapped;
  int err = pagemap_walk(pagemap_.get(), pid_, a, [&](const ck_page_region& r) {
    uint64_t c = r.categories;
    if (c & kPageIsPresent) {
      if (c & (kPageIsFile | kPageIsPfnZero)) gone_.push_back({r.start, r.end});
    } else if (!(c & kPageIsSwapped) || (c & kPageIsFile)) {
      gone_.push_back({r.start, r.end});
    } else {
      swapped.push_back({r.start, r.end});
    }
  });
  if (err) throw_errno(strf("unable to scan pages of pid %d", pid_), err);
  // PAGEMAP_SCAN does not tell markers from swapped pages; the pagemap file does.
  uint64_t ent[512];
  for (auto [lo, hi] : swapped) {
    for (uint64_t at = lo; at < hi;) {
      size_t want = std::min<uint64_t>((hi - at) / kPageSize, sizeof ent / sizeof ent[0]);
      ssize_t n = ::pread(pagemap_.get(), ent, want * 8, static_cast<off_t>(at / kPageSize * 8));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw_errno(strf("unable to read the pagemap of pid %d", pid_));
      if (n == 0) fail(strf("pid %d vanished during the dump", pid_));
      for (size_t i = 0; i < static_cast<size_t>(n) / 8; ++i, at += kPageSize)
        if ((ent[i] & kPmSwapped) && (ent[i] & kPmSwapTypeMask) == kPmSwapTypeMarker)
          gone_.push_back({at, at + kPageSize});
    }
  }
}

void MemReader::emit_gone(pid_t pid, bool count) {
  if (gone_.empty()) return;
  std::sort(gone_.begin(), gone_.end());
  std::vector<std::pair<uint64_t, uint64_t>> merged;
  for (const auto& g : gone_) {
    if (!merged.empty() && g.first <= merged.back().second)
      merged.back().second = std::max(merged.back().second, g.second);
    else
      merged.push_back(g);
  }
  gone_.clear();
  // Notes of at most kRangesPerNote ranges keep every frame small.
  constexpr size_t kRangesPerNote = 256;
  for (size_t i = 0; i < merged.size(); i += kRangesPerNote) {
    std::string text = strf("fresh %d", pid);
    for (size_t j = i; j < std::min(merged.size(), i + kRangesPerNote); ++j) {
      text += strf(" %lx-%lx", (unsigned long)merged[j].first, (unsigned long)merged[j].second);
      if (count) stats_.gone_pages += (merged[j].second - merged[j].first) / kPageSize;
    }
    pb::Frame n;
    n.set_pid(pid);
    n.mutable_note()->set_stage("ck-memread");
    n.mutable_note()->set_text(text);
    w_.frame(n);
  }
}

void MemReader::scan_pagemap_file(uint64_t start, uint64_t end, bool anon_only, uint64_t label_base,
                                  uint64_t shmid) {
  uint64_t ent[4096];
  uint64_t run_start = 0, run_end = 0;
  for (uint64_t at = start; at < end;) {
    size_t want = std::min<uint64_t>((end - at) / kPageSize, 4096);
    ssize_t n = ::pread(pagemap_.get(), ent, want * 8, static_cast<off_t>(at / kPageSize * 8));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno(strf("unable to read the pagemap of pid %d", pid_));
    if (n == 0) fail(strf("pid %d vanished during the dump", pid_));
    size_t got = static_cast<size_t>(n) / 8;
    for (size_t i = 0; i < got; ++i, at += kPageSize) {
      uint64_t e = ent[i];
      bool take = (e & (kPmPresent | kPmSwapped)) && !(anon_only && (e & kPmFile));
      if (take && run_end == at) {
        run_end += kPageSize;
      } else if (take) {
        if (run_end > run_start) queue(run_start, run_end - run_start, label_base + (run_start - start), shmid);
        run_start = at;
        run_end = at + kPageSize;
      }
    }
  }
  if (run_end > run_start) queue(run_start, run_end - run_start, label_base + (run_start - start), shmid);
}

void MemReader::queue(uint64_t remote, uint64_t len, uint64_t label, uint64_t shmid) {
  // The pages the kernel may write while the parasite runs are copied.
  uint64_t lo = sess_.copy_lo, hi = sess_.copy_hi;
  if (!force_copy_ && lo < hi && remote < hi && remote + len > lo) {
    uint64_t a = std::max(remote, lo), b = std::min(remote + len, hi);
    if (a > remote) queue(remote, a - remote, label, shmid);
    force_copy_ = true;
    queue(a, b - a, label + (a - remote), shmid);
    force_copy_ = false;
    if (remote + len > b) queue(b, remote + len - b, label + (b - remote), shmid);
    return;
  }
  // A batch is read one way: through the parasite (no buffer, up to one
  // parasite run) or into the buffer.
  bool in_place = in_place_now();
  if (!segs_.empty() && segs_.back().in_place != in_place) flush();
  while (len) {
    in_place = in_place_now();  // a flush may have ended the parasite
    size_t limit = in_place ? kParasiteBatch : cap_;
    size_t max_segs = in_place ? CK_PARASITE_MAX_SEGS : IOV_MAX;
    if (used_ >= limit || segs_.size() == max_segs) {
      flush();
      continue;
    }
    uint64_t take = std::min<uint64_t>(len, limit - used_);
    Segment* last = segs_.empty() ? nullptr : &segs_.back();
    if (last && !split_ && last->remote + last->len == remote && last->label + last->len == label &&
        last->shmid == shmid && last->in_place == in_place)
      last->len += take;
    else
      segs_.push_back({remote, label, shmid, used_, take, in_place});
    split_ = false;
    used_ += take;
    remote += take;
    label += take;
    len -= take;
  }
}

void MemReader::read_slow(const Segment& s) {
  // process_vm_readv first (the batch may have failed because of another
  // segment), then /proc/PID/mem (which reads PROT_NONE memory too), then
  // page by page, marking what cannot be read at all.
  size_t done = 0;
  struct iovec l = {buf_ + s.off, s.len}, r = {reinterpret_cast<void*>(s.remote), s.len};
  ssize_t n = ::process_vm_readv(pid_, &l, 1, &r, 1, 0);
  if (n < 0 && errno == ESRCH) fail(strf("pid %d vanished during the dump", pid_));
  if (n > 0) done = static_cast<size_t>(n) / kPageSize * kPageSize;
  while (done < s.len) {
    ssize_t m = ::pread(mem_fd(), buf_ + s.off + done, s.len - done, static_cast<off_t>(s.remote + done));
    if (m < 0 && errno == EINTR) continue;
    if (m == 0) fail(strf("pid %d vanished during the dump", pid_));
    if (m > 0) {
      done += static_cast<size_t>(m) / kPageSize * kPageSize;
      if (m % kPageSize == 0) continue;
    }
    // One page that nothing reads: note it and go on.
    int err = m < 0 ? errno : EIO;
    size_t page = (s.off + done) / kPageSize;
    LOG_WARN("pid %d: unable to read page %#lx: %s", pid_, static_cast<unsigned long>(s.remote + done),
             std::strerror(err));
    bad_[page] = 1;
    std::memset(buf_ + s.off + done, 0, kPageSize);
    done += kPageSize;
  }
}

void MemReader::end_session() {
  if (sess_.pages.valid()) {
    try {
      tracer_->close(pid_);
    } catch (const Error& e) {
      LOG_WARN("pid %d: %s", pid_, e.what());
    }
  }
  sess_ = Session();
}

bool MemReader::open_session() {
  try {
    TracerClient::Opened o = tracer_->open(pid_);
    sess_.args = o.args;
    for (int i = 0; i < 3; ++i) sess_.remote[i] = o.remote[i];
    sess_.pages = std::move(o.pages), sess_.bell = std::move(o.bell), sess_.ack = std::move(o.ack);
    if (o.rseq_addr && o.rseq_len) {
      // Written by the kernel whenever the parasite's thread returns to
      // user space (CPU and concurrency ids): sent by reference, the bytes
      // could change after the digest was taken.
      sess_.copy_lo = o.rseq_addr / kPageSize * kPageSize;
      sess_.copy_hi = (o.rseq_addr + o.rseq_len + kPageSize - 1) / kPageSize * kPageSize;
      LOG_DEBUG("pid %d: the parasite's thread has its rseq area at %#lx: page %#lx copied", pid_,
                static_cast<unsigned long>(o.rseq_addr), static_cast<unsigned long>(sess_.copy_lo));
    }
    if (o.pipe_size < CK_PARASITE_CHUNK_PAGES * kPageSize) {
      LOG_DEBUG("pid %d: parasite pipe of %zu bytes: reading instead", pid_, o.pipe_size);
      end_session();
    }
  } catch (const Error& e) {
    LOG_DEBUG("pid %d: no parasite (%s): reading its memory instead", pid_, e.what());
  }
  return sess_.pages.valid();
}

size_t MemReader::run_parasite(std::string* failure) {
  size_t total = used_ / kPageSize;
  size_t nchunks = (total + CK_PARASITE_CHUNK_PAGES - 1) / CK_PARASITE_CHUNK_PAGES;
  {
    ck_parasite_args a;
    a.magic = CK_PARASITE_MAGIC, a.version = CK_PARASITE_VERSION;
    a.pipe_fd = sess_.remote[0], a.bell_fd = sess_.remote[1], a.ack_fd = sess_.remote[2];
    a.flags = __builtin_cpu_supports("avx2") ? CK_PARASITE_AVX2 : 0;
    a.nsegs = static_cast<uint32_t>(segs_.size());
    a.pad = 0;
    a.result = 0;
    write_mem(pid_, sess_.args, &a, offsetof(ck_parasite_args, slots));
    std::vector<ck_parasite_seg> segs(segs_.size());
    for (size_t i = 0; i < segs_.size(); ++i) segs[i] = {segs_[i].remote, segs_[i].len / kPageSize};
    write_mem(pid_, sess_.args + offsetof(ck_parasite_args, segs), segs.data(), segs.size() * sizeof segs[0]);
  }
  tracer_->start_run(pid_);
  bool ended = false;
  long result = 0;
  auto end_run = [&] {
    ended = true;
    try {
      result = tracer_->finish_run();
    } catch (const Error& e) {
      *failure = e.what();
      sess_.pages.reset();  // the tracer took the parasite out
    }
  };

  pb::PageRun run;
  run.set_pid(static_cast<uint32_t>(pid_));
  run.set_round(round_);
  size_t seg = 0, seg_first = 0;  // segment of the run, and its first page in the batch
  size_t page = 0;                // pages emitted
  uint64_t spliced = 0;
  slot_.resize(sizeof(ck_parasite_slot));
  auto* sl = reinterpret_cast<ck_parasite_slot*>(slot_.data());
  for (size_t k = 0; k < nchunks && !ended; ++k) {
    // The chunk's bell, or the end of the run (which rings every bell first).
    for (;;) {
      struct pollfd p[2] = {{sess_.bell.get(), POLLIN, 0}, {tracer_->fd(), POLLIN, 0}};
      if (::poll(p, 2, -1) < 0) {
        if (errno == EINTR) continue;
        throw_errno("unable to poll");
      }
      if (p[0].revents & POLLIN) break;
      if (p[1].revents) {
        end_run();
        break;
      }
    }
    if (ended) break;
    char b;
    if (::read(sess_.bell.get(), &b, 1) != 1) throw_errno(strf("pid %d: unable to read the parasite's bell", pid_));
    uint64_t at = sess_.args + offsetof(ck_parasite_args, slots) + (k % CK_PARASITE_SLOTS) * sizeof(ck_parasite_slot);
    read_mem(pid_, at, sl, offsetof(ck_parasite_slot, runs));
    if (sl->chunk != k || sl->nruns == 0 || sl->nruns > CK_PARASITE_CHUNK_PAGES)
      fail(strf("pid %d: the parasite's slot holds chunk %u with %u runs, not chunk %zu", pid_, sl->chunk, sl->nruns, k));
    read_mem(pid_, at + offsetof(ck_parasite_slot, runs), sl->runs, sl->nruns * sizeof(ck_parasite_run));
    for (uint32_t i = 0; i < sl->nruns; ++i) {
      const ck_parasite_run& r = sl->runs[i];
      while (seg < segs_.size() && r.page >= seg_first + segs_[seg].len / kPageSize)
        seg_first += segs_[seg++].len / kPageSize;
      if (seg == segs_.size() || r.page != page || r.npages == 0 ||
          r.page + r.npages > seg_first + segs_[seg].len / kPageSize)
        fail(strf("pid %d: the parasite's run %u of chunk %zu does not fit the batch", pid_, i, k));
      page += r.npages;
      const Segment& s = segs_[seg];
      run.set_addr(s.label + (r.page - seg_first) * kPageSize);
      run.set_npages(r.npages);
      run.set_shmid(s.shmid);
      run.set_has_payload(!r.zero);
      if (r.zero) {
        run.clear_digest();
        ++stats_.zero_runs;
        stats_.zero_pages += r.npages;
        w_.pages(run, nullptr, 0);
      } else {
        uint64_t len = uint64_t{r.npages} * kPageSize;
        run.set_digest(Ck64::from_state(r.a, r.b, len).digest());
        ++stats_.runs;
        stats_.pages += r.npages;
        spliced += len;
        w_.pages_spliced(run, sess_.pages.get());
      }
    }
    if (page != std::min(total, (k + 1) * CK_PARASITE_CHUNK_PAGES))
      fail(strf("pid %d: the parasite's chunk %zu ends at page %zu", pid_, k, page));
    if (k + CK_PARASITE_SLOTS < nchunks && ::write(sess_.ack.get(), "a", 1) != 1)
      throw_errno(strf("pid %d: unable to ack the parasite", pid_));
  }
  if (!ended) end_run();
  if (failure->empty() && result < 0) *failure = strf("the parasite failed: %s", std::strerror(static_cast<int>(-result)));
  if (failure->empty() && (page != total || static_cast<uint64_t>(result) != spliced))
    fail(strf("pid %d: the parasite spliced %ld bytes, %lu pages of %zu came out", pid_, result,
              static_cast<unsigned long>(page), total));
  if (failure->empty()) ++stats_.in_place;
  return page;
}

bool MemReader::flush_in_place() {
  if (!segs_.front().in_place) return false;
  std::string failure;
  size_t done = run_parasite(&failure);
  if (failure.empty()) {
    segs_.clear();
    used_ = 0;
    return true;
  }
  LOG_WARN("pid %d: %s: reading its memory instead", pid_, failure.c_str());
  end_session();
  // What the parasite did not send, through the buffer.
  std::vector<Segment> rest;
  size_t skip = done * kPageSize;
  for (const auto& s : segs_) {
    if (skip >= s.len) {
      skip -= s.len;
      continue;
    }
    rest.push_back({s.remote + skip, s.label + skip, s.shmid, 0, s.len - skip, false});
    skip = 0;
  }
  segs_.clear();
  used_ = 0;
  for (const auto& s : rest) {
    split_ = true;
    queue(s.remote, s.len, s.label, s.shmid);
  }
  return true;
}

void MemReader::flush() {
  if (segs_.empty()) return;
  if (flush_in_place()) return;
  struct iovec remote[IOV_MAX];
  for (size_t i = 0; i < segs_.size(); ++i) remote[i] = {reinterpret_cast<void*>(segs_[i].remote), segs_[i].len};
  struct iovec local = {buf_, used_};
  ssize_t n = ::process_vm_readv(pid_, &local, 1, remote, static_cast<unsigned long>(segs_.size()), 0);
  if (n < 0 && errno == ESRCH) fail(strf("pid %d vanished during the dump", pid_));
  size_t ok = n > 0 ? static_cast<size_t>(n) : 0;
  if (ok < used_) {
    LOG_DEBUG("pid %d: process_vm_readv read %zu of %zu bytes (%s); the rest through /proc/PID/mem", pid_, ok,
              used_, n < 0 ? std::strerror(errno) : "short");
    for (const auto& s : segs_) {
      if (s.off + s.len <= ok) continue;
      Segment rest = s;
      if (s.off < ok) {
        size_t skip = (ok - s.off) / kPageSize * kPageSize;
        rest.remote += skip;
        rest.label += skip;
        rest.off += skip;
        rest.len -= skip;
      }
      read_slow(rest);
    }
  }
  for (const auto& s : segs_) {
    // Split around unreadable pages (rare) and emit.
    size_t p0 = s.off / kPageSize, np = s.len / kPageSize, i = 0;
    while (i < np) {
      if (bad_[p0 + i]) {
        bad_[p0 + i] = 0;
        ++stats_.unreadable;
        ++i;
        continue;
      }
      size_t j = i;
      while (j < np && !bad_[p0 + j]) ++j;
      emit(buf_ + s.off + i * kPageSize, s.label + i * kPageSize, j - i, s.shmid);
      i = j;
    }
  }
  segs_.clear();
  used_ = 0;
}

void MemReader::dump_object(const pb::Vma& v, Object& obj) {
  int fd = obj.fd.get();
  struct stat st;
  if (::fstat(fd, &st) != 0) throw_errno("unable to stat shared object " + v.path());
  uint64_t size = static_cast<uint64_t>(st.st_size) / kPageSize * kPageSize;
  ++stats_.objects;
  LOG_DEBUG("pid %d: shared object %#lx '%s' of %lu bytes", pid_, (unsigned long)v.shmid(), v.path().c_str(),
            (unsigned long)size);
  uint64_t at = 0;
  while (at < size) {
    off_t d = ::lseek(fd, static_cast<off_t>(at), SEEK_DATA);
    if (d < 0) {
      if (errno == ENXIO) break;  // no data past at
      d = static_cast<off_t>(at);  // no SEEK_DATA: take everything
    }
    off_t h = ::lseek(fd, d, SEEK_HOLE);
    if (h < 0) h = static_cast<off_t>(size);
    uint64_t from = static_cast<uint64_t>(d) / kPageSize * kPageSize;
    uint64_t to = std::min<uint64_t>((static_cast<uint64_t>(h) + kPageSize - 1) / kPageSize * kPageSize, size);
    if (to <= from) break;
    for (uint64_t o = from; o < to;) {
      size_t len = std::min<uint64_t>(to - o, cap_);
      size_t got = 0;
      while (got < len) {
        ssize_t n = ::pread(fd, buf_ + got, len - got, static_cast<off_t>(o + got));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw_errno("unable to read shared object " + v.path());
        if (n == 0) break;  // truncated under us: the rest reads as zeros
        got += static_cast<size_t>(n);
      }
      if (got < len) std::memset(buf_ + got, 0, len - got);
      emit(buf_, o, len / kPageSize, v.shmid());
      o += len;
    }
    at = to;
  }
}

void MemReader::emit(const char* data, uint64_t label, uint64_t npages, uint64_t shmid) {
  pb::PageRun run;
  run.set_pid(static_cast<uint32_t>(pid_));
  run.set_shmid(shmid);
  run.set_round(round_);
  uint64_t i = 0;
  while (i < npages) {
    bool zero = page_is_zero(data + i * kPageSize);
    uint64_t j = i + 1;
    while (j < npages && page_is_zero(data + j * kPageSize) == zero) ++j;
    run.set_addr(label + i * kPageSize);
    run.set_npages(static_cast<uint32_t>(j - i));
    run.set_has_payload(!zero);
    if (zero) {
      ++stats_.zero_runs;
      stats_.zero_pages += j - i;
      w_.pages(run, nullptr, 0);
    } else {
      ++stats_.runs;
      stats_.pages += j - i;
      struct iovec iov = {const_cast<char*>(data + i * kPageSize), (j - i) * kPageSize};
      w_.pages(run, &iov, 1);
    }
    LOG_DEBUG("pid %d run %s%#lx +%lu pages%s", pid_, shmid ? "shm offset " : "", (unsigned long)run.addr(),
              (unsigned long)(j - i), zero ? " (zeros)" : "");
    i = j;
  }
}

namespace {

void write_process_frames(StreamWriter& w, const std::vector<pid_t>& pids) {
  for (pid_t pid : pids) {
    Stat st = live_stat(pid);
    pb::Frame f;
    f.set_pid(static_cast<uint32_t>(pid));
    auto* p = f.mutable_process();
    p->set_pid(static_cast<uint32_t>(pid));
    p->set_ppid(static_cast<uint32_t>(st.u(4)));
    p->set_comm(st.comm);
    w.frame(f);
  }
}

double now_s() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

// One line per round for --stats (ck-predump reads it).
void write_stats(const MemreadOptions& o, const Round& round, const MemStats& s, size_t processes, double secs) {
  uint32_t gen = round.id().gen();
  LOG_INFO("round %u: %lu pages (%lu bytes), %lu zero pages, %lu gone, %lu of %lu vmas dirty-only, %.3f s, freeze %.3f ms",
           gen, (unsigned long)s.pages, (unsigned long)(s.pages * kPageSize), (unsigned long)s.zero_pages,
           (unsigned long)s.gone_pages, (unsigned long)s.dirty_vmas, (unsigned long)s.vmas, secs, round.freeze_ms());
  if (o.stats_file.empty()) return;
  std::string line = strf("round=%u base=%u pages=%lu bytes=%lu zero_pages=%lu gone_pages=%lu vmas=%lu dirty_vmas=%lu "
                          "processes=%zu armed=%u seconds=%.6f freeze_ms=%.3f\n",
                          gen, round.id().base(), (unsigned long)s.pages, (unsigned long)(s.pages * kPageSize),
                          (unsigned long)s.zero_pages, (unsigned long)s.gone_pages, (unsigned long)s.vmas,
                          (unsigned long)s.dirty_vmas, processes, round.armed(), secs, round.freeze_ms());
  ScopedFd fd(::open(o.stats_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  if (!fd.valid()) throw_errno("unable to open '" + o.stats_file + "'");
  write_full(fd.get(), line.data(), line.size());
}

}  // namespace

int run_memread(const MemreadOptions& o, int in_fd, int out_fd) {
  const std::string state_dir = track_state_dir(o.state_dir);
  if (o.untrack) {
    Round::release(state_dir, o.pid);
    return 0;
  }
  const bool round = o.track || o.dirty;
  if (o.track && !o.pid) usage_error("--track needs -t PID (it seizes the target itself)");
  if (!o.since.empty() && !o.dirty) usage_error("--since goes with --dirty");
  std::unique_ptr<StreamReader> r;
  pb::Header h;
  if (o.pid) {
    if (o.pid < 0 || !pid_alive(o.pid) || (round && !proc_start_time(o.pid))) {
      if (o.dirty) {
        bool was = false;
        try {
          Round::release(state_dir, o.pid);
          was = true;
        } catch (const Error&) {
        }
        if (was) fail(strf("pid %d has exited: tracking ended", o.pid));
      }
      fail(strf("pid %d: no such process", o.pid));
    }
    h = make_header("ck-memread");
    h.set_root_pid(static_cast<uint32_t>(o.pid));
  } else {
    if (isatty(in_fd)) usage_error("no stream on stdin and no -t PID (see ck-memread --help)");
    r = std::make_unique<StreamReader>(in_fd);
    h = r->header();
    h.add_writers(std::string("ck-memread ") + kVersion);
  }
  // A round decides which pages; without one, every page.
  const pid_t root = o.pid ? o.pid : static_cast<pid_t>(h.root_pid());
  std::unique_ptr<Round> rd;
  std::unique_ptr<TracerClient> tracer;
  if (!o.pid && (round || !o.no_parasite)) tracer = TracerClient::from_env();
  if (o.track) rd = Round::arm(state_dir, root);
  if (o.dirty) rd = Round::begin(state_dir, root, o.since, o.pid != 0);
  if (rd) {
    h.set_incremental(rd->incremental());
    *h.mutable_round() = rd->id();
  }
  double t0 = now_s();
  StreamWriter w(out_fd);
  w.header(h);
  std::vector<pid_t> pids;
  std::vector<pb::FileDesc> descs;
  if (o.pid) {
    pids = o.tree ? list_tree(o.pid) : std::vector<pid_t>{o.pid};
    write_process_frames(w, pids);
  } else {
    forward_frames(*r, w, [&](const pb::Frame& f) {
      if (f.has_header()) return false;
      if (f.has_file()) descs.push_back(f.file());
      if (f.has_process() && !f.process().zombie() &&  // a zombie has no memory
          std::find(pids.begin(), pids.end(), static_cast<pid_t>(f.process().pid())) == pids.end())
        pids.push_back(static_cast<pid_t>(f.process().pid()));
      return true;
    });
  }
  MemReader m(w, o.buffer_bytes);
  // Under ck-freeze, which records every deleted file and memfd the tree
  // maps: each mapping of one names its description.
  for (const auto& wr : h.writers())
    if (wr.rfind("ck-freeze", 0) == 0) {
      m.set_files(descs);
      break;
    }
  if (rd) {
    // Under ck-freeze (which serves requests only once its stream is read
    // whole): its commit confirms the round, its rollback fails it.
    if (tracer) tracer->hold_round(root, rd->state_fd(), rd->id().gen());
    m.set_round(rd->id().gen(), rd->incremental());
    m.set_planner([&](const std::vector<pid_t>& p, std::vector<std::vector<pb::Vma>>& l) { return rd->plan(p, l); });
  } else if (!o.no_parasite) {
    m.use_tracer(tracer.get());
  }
  m.dump(pids);
  if (tracer) tracer->check_alive();
  w.finish();
  if (rd) {
    rd->written();
    write_stats(o, *rd, m.stats(), pids.size(), now_s() - t0);
  }
  return 0;
}

}  // namespace ck
