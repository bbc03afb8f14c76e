// show, info and sum: readable views of a stream or image set.
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/sysmacros.h>
#include <time.h>

#include <algorithm>
#include <cinttypes>
#include <cstring>
#include <cstdio>
#include <map>
#include <vector>

#include "crit.h"
#include "sock.h"
#include "error.h"
#include "image.h"
#include "stream.h"

namespace crit {

namespace pb = ck::pb;
using ck::strf;

namespace {

std::string join_writers(const pb::Header& h) {
  std::string s;
  for (const auto& w : h.writers()) s += (s.empty() ? "" : ", ") + w;
  return s.empty() ? "-" : s;
}

std::string when(uint64_t ns) {
  if (!ns) return "-";
  time_t t = static_cast<time_t>(ns / 1000000000ull);
  struct tm tm;
  char b[64];
  gmtime_r(&t, &tm);
  strftime(b, sizeof b, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return b;
}

// What ck-anon's mark says it did.
std::string anon_mark(const pb::Header& h) {
  const auto& a = h.anonymized();
  return strf("not restorable; page payloads dropped, names replaced (environment %s), IP addresses %s, ports %s, %s key",
              a.env() == "values" ? "values" : "names and values", a.addresses() ? "mapped" : "kept",
              a.ports() ? "mapped" : "kept", a.keyed() ? "a given" : "a random");
}

// Drains the source, discarding payloads: reading on verifies a stream.
void drain(Source& s) {
  pb::Frame f;
  while (s.next(&f)) {
  }
}

}  // namespace

int info(Source& s) {
  pb::Frame f;
  pb::Header h;
  if (s.next(&f)) h = f.header();
  drain(s);
  s.verify();
  const auto& t = s.trailer();
  std::printf("format:        %u.%u\n", h.major(), h.minor());
  std::printf("writers:       %s\n", join_writers(h).c_str());
  std::printf("kernel:        %s (%s)\n", h.kernel().c_str(), h.machine().c_str());
  std::printf("hostname:      %s\n", h.hostname().c_str());
  std::printf("page size:     %u\n", h.page_size());
  std::printf("created:       %s\n", when(h.created_ns()).c_str());
  std::printf("root pid:      %u\n", h.root_pid());
  std::printf("incremental:   %s\n", h.incremental() ? "yes" : "no");
  if (h.has_anonymized())
    std::printf("anonymized:    by %s: %s\n", h.anonymized().by().c_str(), anon_mark(h).c_str());
  if (ck::names_round(h))  // (an image read through its chain is whole: computed against nothing)
    std::printf("round:         %u of dump %016" PRIx64 "%s\n", h.round().gen(), h.round().dump(),
                h.round().base() ? ck::strf(", computed against round %u", h.round().base()).c_str() : "");
  std::printf("frames:        %" PRIu64 "\n", t.frames());
  std::printf("payload bytes: %" PRIu64 "\n", t.payload_bytes());
  std::printf("checksum:      %#018" PRIx64 " ok\n", t.checksum());
  return 0;
}

namespace {
struct ShowTask {
  bool has_process = false;
  pb::Process proc;
  std::vector<pb::Thread> threads;
  std::vector<pb::Fd> fds;
  std::vector<pb::Vma> vmas;
  uint64_t runs = 0, pages = 0, zero_pages = 0, shared_pages = 0, file_pages = 0, dropped_pages = 0;
  std::map<uint32_t, uint64_t> by_round;  // pre-dump round -> pages (with data or zero)
};
}  // namespace

int show(Source& s, const Filter& flt) {
  // The records from load() (crit_model.cc), the page counts per process
  // that carried the runs.
  Model m = load(s);
  const pb::Header& h = m.header;
  const std::vector<uint32_t>& order = m.order;
  const auto& files = m.files;
  const auto& socks = m.socks;
  const auto& cgroups = m.cgroups;
  const auto& notes = m.notes;
  const auto& locks = m.locks;
  uint64_t unknown = m.unknown, sockets = m.socks.size();
  std::map<uint32_t, ShowTask> tasks;
  auto count = [&](const Run& r) {
    ShowTask& t = tasks[r.pid];
    ++t.runs;
    if (r.round) t.by_round[r.round] += r.npages;
    if (r.dropped)  // ck-anon: pages with data, the data gone
      t.dropped_pages += r.npages;
    else if (!r.data)
      t.zero_pages += r.npages;
    else if (r.shmid)
      t.shared_pages += r.npages;
    else
      t.pages += r.npages;
  };
  for (const auto& [pid, k] : m.tasks) {
    ShowTask& t = tasks[pid];
    t.has_process = k.has_process;
    t.proc = k.proc;
    t.threads = k.threads;
    t.fds = k.fds;
    t.vmas = k.vmas;
    t.file_pages = k.file_pages;
    for (const Run& r : k.runs) count(r);
  }
  for (const auto& [id, runs] : m.shared)
    for (const Run& r : runs) count(r);
  std::printf("stream %u.%u by %s; kernel %s %s, host %s, page size %u, root pid %u, created %s%s\n", h.major(),
              h.minor(), join_writers(h).c_str(), h.kernel().c_str(), h.machine().c_str(), h.hostname().c_str(),
              h.page_size(), h.root_pid(), when(h.created_ns()).c_str(), h.incremental() ? ", incremental" : "");
  for (uint32_t p : flt.pids)
    if (!tasks.count(p)) ck::fail(strf("pid %u is not in the image", p));
  if (h.has_anonymized()) std::printf("anonymized by %s: %s\n", h.anonymized().by().c_str(), anon_mark(h).c_str());
  for (uint32_t pid : order) {
    if (!flt.pids.empty() && !flt.pids.count(pid)) continue;
    const ShowTask& t = tasks[pid];
    if (t.has_process && t.proc.zombie())
      std::printf("\nprocess %u (%s) ppid %u pgid %u sid %u, zombie, exit status %#x\n", pid, t.proc.comm().c_str(),
                  t.proc.ppid(), t.proc.pgid(), t.proc.sid(), static_cast<unsigned>(t.proc.exit_status()));
    else if (t.has_process)
      std::printf("\nprocess %u (%s) ppid %u pgid %u sid %u, %d threads%s\n", pid, t.proc.comm().c_str(), t.proc.ppid(),
                  t.proc.pgid(), t.proc.sid(), t.proc.tids_size(),
                  t.proc.stop_signal() ? ck::strf(", stopped by signal %d", t.proc.stop_signal()).c_str() : "");
    else
      std::printf("\nprocess %u (no process frame)\n", pid);
    if (t.has_process && !t.proc.exe().empty()) std::printf("  exe %s\n", t.proc.exe().c_str());
    if (t.has_process && t.proc.tty_nr())
      std::printf("  controlling terminal %u:%u, its foreground group %d\n", major(t.proc.tty_nr()), minor(t.proc.tty_nr()),
                  t.proc.tty_pgrp());
    for (const auto& th : t.threads) std::printf("  thread %u %s\n", th.tid(), th.comm().c_str());
    for (const auto& fd : t.fds) {
      auto it = files.find(fd.desc());
      if (it == files.end()) {
        std::printf("  fd %d -> file %u (missing)%s\n", fd.fd(), fd.desc(), fd.cloexec() ? " cloexec" : "");
        continue;
      }
      const auto& d = it->second;
      std::string kind = pb::FileKind_Name(d.kind());
      if (kind.rfind("FILE_", 0) == 0) kind = kind.substr(5);
      std::string tty;
      struct winsize ws = {};
      if (d.tty() && d.winsize().size() == sizeof ws) {
        std::memcpy(&ws, d.winsize().data(), sizeof ws);
        tty = ck::strf(" tty %ux%u", ws.ws_col, ws.ws_row);
      } else if (d.tty()) {
        tty = " tty";
      }
      std::printf("  fd %d -> %s %s flags %#o%s%s%s\n", fd.fd(), kind.c_str(), d.path().c_str(), d.flags(),
                  d.deleted() ? " (deleted)" : "", tty.c_str(), fd.cloexec() ? " cloexec" : "");
      auto sk = socks.find(fd.desc());
      if (sk != socks.end()) std::printf("    %s\n", ck::sock_summary(sk->second).c_str());
    }
    for (const auto& v : t.vmas) {
      std::string kind = pb::VmaKind_Name(v.kind());
      if (kind.rfind("VMA_", 0) == 0) kind = kind.substr(4);
      std::printf("  vma %012" PRIx64 "-%012" PRIx64 " %s %-12s %s\n", v.start(), v.end(),
                  prot_str(v.prot(), v.flags()).c_str(), kind.c_str(), v.path().c_str());
    }
    std::printf("  pages: %" PRIu64 " runs, %" PRIu64 " with data (%" PRIu64 " bytes), %" PRIu64 " zero",
                t.runs, t.pages, t.pages * ck::kPageSize, t.zero_pages);
    if (t.shared_pages) std::printf(", %" PRIu64 " of shared objects", t.shared_pages);
    if (t.dropped_pages) std::printf(", %" PRIu64 " dropped by ck-anon", t.dropped_pages);
    if (t.file_pages) std::printf("; %" PRIu64 " pages of deleted files and memfds", t.file_pages);
    std::printf("\n");
    if (!t.by_round.empty()) {  // an image read through a chain of pre-dump rounds
      std::printf("  pages by round:");
      for (const auto& [r, n] : t.by_round) std::printf(" %u: %" PRIu64, r, n);
      std::printf("\n");
    }
  }
  if (!cgroups.empty()) std::printf("\n");
  for (const auto& c : cgroups) {
    std::printf("cgroup %s:", c.path().c_str());
    for (uint32_t p : c.procs()) std::printf(" %u", p);
    std::printf("\n");
    std::map<std::string, std::string> sorted(c.settings().begin(), c.settings().end());
    for (const auto& [k, v] : sorted) std::printf("  %s = %s\n", k.c_str(), v.c_str());
  }
  for (const auto& n : notes) std::printf("note from %s: %s\n", n.stage().c_str(), n.text().c_str());
  if (sockets) std::printf("%" PRIu64 " socket frames\n", sockets);
  for (const auto& l : locks) std::printf("network lock: nftables table inet %s\n", l.table().c_str());
  if (unknown) std::printf("%" PRIu64 " frames of kinds this ck does not know (kept as they are)\n", unknown);
  const auto& t = m.trailer;
  std::printf("trailer: %" PRIu64 " frames, %" PRIu64 " payload bytes, checksum %#018" PRIx64 " ok\n", t.frames(),
              t.payload_bytes(), t.checksum());
  return 0;
}

// ---- sum ------------------------------------------------------------------

int sum(Source& s, uint32_t pid, uint64_t addr, uint64_t len) {
  if (addr + len < addr) ck::usage_error("--addr + --len wraps around");
  Bytes b = read_bytes(s, pid, Range::kGiven, addr, len);  // zero: what no run covers
  uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : b.data) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ULL;
  }
  std::printf("%#lx\n", static_cast<unsigned long>(h));
  return 0;
}

std::string prot_str(uint32_t prot, uint32_t flags) {
  std::string s = "---p";
  if (prot & PROT_READ) s[0] = 'r';
  if (prot & PROT_WRITE) s[1] = 'w';
  if (prot & PROT_EXEC) s[2] = 'x';
  if (flags & MAP_SHARED) s[3] = 's';
  return s;
}

}  // namespace crit
