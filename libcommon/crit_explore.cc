// x: an image explored by processes, fds, memory maps, resident pages,
// sockets and cgroups, as text for people or JSON (--json) for jq.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <map>

#include "crit.h"
#include "crit_out.h"
#include "error.h"
#include "fd.h"
#include "sock.h"
#include "stream.h"

namespace crit {

namespace pb = ck::pb;
using ck::strf;

namespace {

void out(const std::string& s) { ck::write_full(1, s.data(), s.size()); }

bool wanted(const Filter& f, uint32_t pid) { return f.pids.empty() || f.pids.count(pid); }

void check_pids(const Model& m, const Filter& f) {
  for (uint32_t p : f.pids)
    if (!m.task(p)) ck::fail(strf("pid %u is not in the image", p));
}

// ---- ps ---------------------------------------------------------------------

int ps(const Model& m, const Filter& f) {
  // children in stream order, for the tree
  std::map<uint32_t, std::vector<uint32_t>> kids;
  std::vector<uint32_t> roots;
  for (uint32_t pid : m.order) {
    const Task& t = m.tasks.at(pid);
    if (!t.has_process) continue;
    if (m.task(t.proc.ppid()) && m.task(t.proc.ppid())->has_process && t.proc.ppid() != pid)
      kids[t.proc.ppid()].push_back(pid);
    else
      roots.push_back(pid);
  }
  Json j;
  std::string text = f.json ? "" : strf("%-7s %-7s %-7s %-7s %-4s %-8s %s\n", "PID", "PPID", "PGID", "SID", "THR", "STATE", "COMM");
  if (f.json) j.begin_array();
  std::function<void(uint32_t, int)> walk = [&](uint32_t pid, int depth) {
    const Task& t = m.tasks.at(pid);
    const auto& p = t.proc;
    std::string state = p.zombie() ? "zombie" : p.stop_signal() ? "stopped" : "running";
    if (wanted(f, pid)) {
      if (f.json) {
        j.begin_object().knum("pid", pid).knum("ppid", p.ppid()).knum("pgid", p.pgid()).knum("sid", p.sid());
        j.kstr("comm", p.comm()).kstr("exe", p.exe()).kstr("state", state);
        if (p.zombie()) j.ksnum("exit_status", p.exit_status());
        if (p.stop_signal()) j.ksnum("stop_signal", p.stop_signal());
        j.key("threads").begin_array();
        for (uint32_t tid : p.tids()) j.num(tid);
        j.end_array().end_object();
      } else {
        text += strf("%-7u %-7u %-7u %-7u %-4d %-8s %s%s\n", pid, p.ppid(), p.pgid(), p.sid(), p.tids_size(),
                     state.c_str(), std::string(2 * depth, ' ').c_str(), p.comm().c_str());
      }
    }
    for (uint32_t k : kids[pid]) walk(k, depth + 1);
  };
  for (uint32_t r : roots) walk(r, 0);
  if (f.json) j.end_array();
  out(f.json ? j.take() : text);
  return 0;
}

// ---- fds --------------------------------------------------------------------

// Who holds a description: "pid 12 fd 4".
struct Holders {
  // Every fd of every task, by the description it refers to.
  explicit Holders(const Model& m) {
    for (uint32_t pid : m.order)
      for (const auto& fd : m.tasks.at(pid).fds) by_desc[fd.desc()].push_back({pid, fd.fd()});
  }
  std::map<uint32_t, std::vector<std::pair<uint32_t, int>>> by_desc;
  std::string of(uint32_t desc) const {
    auto it = by_desc.find(desc);
    std::string s;
    if (it == by_desc.end()) return s;
    for (const auto& [pid, fd] : it->second) s += strf("%spid %u fd %d", s.empty() ? "" : ", ", pid, fd);
    return s;
  }
};

std::string access(uint32_t flags) {
  switch (flags & O_ACCMODE) {
    case O_RDONLY: return "read";
    case O_WRONLY: return "write";
    default: return "read-write";
  }
}

// The other ends of a pipe or FIFO: descriptions of the same pipe opened
// for the other direction.
std::vector<uint32_t> pipe_peers(const Model& m, const pb::FileDesc& d) {
  std::vector<uint32_t> v;
  for (const auto& [id, o] : m.files)
    if (id != d.id() && (o.kind() == pb::FILE_PIPE || o.kind() == pb::FILE_FIFO) && o.pipe_id() == d.pipe_id() &&
        (o.flags() & O_ACCMODE) != (d.flags() & O_ACCMODE))
      v.push_back(id);
  return v;
}

// The peer socket's description in the image, 0: none there.
uint32_t sock_peer(const Model& m, const pb::FileDesc& d) {
  auto it = m.socks.find(d.id());
  if (it != m.socks.end() && it->second.family() == AF_UNIX && it->second.unix_sk().peer_ino()) {
    for (const auto& [id, s] : m.socks)
      if (s.family() == AF_UNIX && s.unix_sk().ino() == it->second.unix_sk().peer_ino()) return id;
    return 0;
  }
  if (d.socket_peer().empty() || d.socket_addr().empty() || d.socket_family() == "AF_UNIX") return 0;
  for (const auto& [id, o] : m.files)  // an inet connection with both ends in the tree
    if (id != d.id() && o.kind() == pb::FILE_SOCKET && o.socket_addr() == d.socket_peer() &&
        o.socket_peer() == d.socket_addr() && o.socket_type() == d.socket_type())
      return id;
  return 0;
}

// One line that says what a description is and where it points.
std::string describe(const Model& m, const Holders& h, const pb::FileDesc& d) {
  std::string s = file_kind(d.kind()) + " " + d.path();
  if (d.deleted()) s += " (deleted)";
  switch (d.kind()) {
    case pb::FILE_REG:
    case pb::FILE_DIR:
    case pb::FILE_MEMFD:
      s += strf(", %s, pos %" PRIu64 ", size %" PRIu64, access(d.flags()).c_str(), d.pos(), d.size());
      break;
    case pb::FILE_PIPE:
    case pb::FILE_FIFO: {
      s += strf(", %s end", access(d.flags()).c_str());
      if (!d.pipe_data().empty()) s += strf(", %zu bytes queued", d.pipe_data().size());
      std::string peers;
      for (uint32_t p : pipe_peers(m, d)) {
        std::string who = h.of(p);
        peers += (peers.empty() ? "" : ", ") + (who.empty() ? strf("file %u", p) : who);
      }
      s += peers.empty() ? ", no other end in the image" : ", other end: " + peers;
      break;
    }
    case pb::FILE_SOCKET: {
      auto it = m.socks.find(d.id());
      if (it != m.socks.end()) s += ", " + ck::sock_summary(it->second);
      else s += ", " + d.socket_family() + " " + d.socket_type() + (d.socket_addr().empty() ? "" : " " + d.socket_addr()) +
                (d.socket_peer().empty() ? "" : " -> " + d.socket_peer()) + (d.socket_listening() ? " listening" : "");
      if (uint32_t p = sock_peer(m, d)) {
        std::string who = h.of(p);
        s += ", peer: " + (who.empty() ? strf("file %u", p) : who);
      }
      break;
    }
    case pb::FILE_EVENTFD:
      s += strf(", count %" PRIu64 ", flags %#x", d.eventfd_count(), d.eventfd_flags());
      break;
    case pb::FILE_EPOLL:
      for (const auto& e : d.epoll())
        s += strf(", fd %d events %#x data %#" PRIx64, e.tfd(), e.events(), e.data());
      if (!d.epoll_size()) s += ", no targets";
      break;
    case pb::FILE_SIGNALFD: s += strf(", mask %#" PRIx64, d.signalfd_mask()); break;
    case pb::FILE_TIMERFD:
      s += strf(", clock %d, interval %" PRIu64 " ns, left %" PRIu64 " ns, ticks %" PRIu64, d.timer_clock(),
                d.timer_interval_ns(), d.timer_value_ns(), d.timer_ticks());
      break;
    case pb::FILE_INOTIFY:
      for (const auto& w : d.watches()) s += strf(", wd %d mask %#x %s", w.wd(), w.mask(), w.path().c_str());
      break;
    case pb::FILE_CHR:
      s += strf(", device %u:%u%s", major(d.rdev()), minor(d.rdev()), d.tty() ? ", a terminal" : "");
      break;
    default: break;
  }
  if (!d.external().empty()) s += ", external " + d.external();
  for (const auto& l : d.locks())
    s += strf(", %s %s lock", pb::FileLock::Kind_Name(l.kind()).c_str(), l.write() ? "write" : "read");
  return s;
}

void file_json(Json& j, const Model& m, const Holders& h, const pb::FileDesc& d) {
  j.knum("desc", d.id()).kstr("kind", file_kind(d.kind())).kstr("path", d.path()).khex("flags", d.flags());
  j.knum("pos", d.pos());
  if (d.deleted()) j.kbool("deleted", true);
  auto holders = [&](const std::vector<uint32_t>& ids) {
    j.begin_array();
    for (uint32_t id : ids) {
      auto it = h.by_desc.find(id);
      if (it == h.by_desc.end()) {
        j.begin_object().knum("desc", id).end_object();
        continue;
      }
      for (const auto& [pid, fd] : it->second) j.begin_object().knum("desc", id).knum("pid", pid).ksnum("fd", fd).end_object();
    }
    j.end_array();
  };
  switch (d.kind()) {
    case pb::FILE_PIPE:
    case pb::FILE_FIFO:
      j.knum("pipe", d.pipe_id()).knum("queued", d.pipe_data().size()).key("peers");
      holders(pipe_peers(m, d));
      break;
    case pb::FILE_SOCKET: {
      j.kstr("family", d.socket_family()).kstr("type", d.socket_type()).kstr("addr", d.socket_addr()).kstr("peer_addr", d.socket_peer());
      auto it = m.socks.find(d.id());
      if (it != m.socks.end()) j.kstr("state", ck::sock_summary(it->second));
      uint32_t p = sock_peer(m, d);
      j.key("peer");
      if (p) holders({p}); else j.null();
      break;
    }
    case pb::FILE_EVENTFD: j.knum("count", d.eventfd_count()).khex("eventfd_flags", d.eventfd_flags()); break;
    case pb::FILE_EPOLL:
      j.key("targets").begin_array();
      for (const auto& e : d.epoll()) j.begin_object().ksnum("fd", e.tfd()).khex("events", e.events()).khex("data", e.data()).end_object();
      j.end_array();
      break;
    case pb::FILE_SIGNALFD: j.khex("mask", d.signalfd_mask()); break;
    case pb::FILE_TIMERFD:
      j.ksnum("clock", d.timer_clock()).knum("interval_ns", d.timer_interval_ns()).knum("value_ns", d.timer_value_ns()).knum("ticks", d.timer_ticks());
      break;
    case pb::FILE_INOTIFY:
      j.key("watches").begin_array();
      for (const auto& w : d.watches()) j.begin_object().ksnum("wd", w.wd()).khex("mask", w.mask()).kstr("path", w.path()).end_object();
      j.end_array();
      break;
    case pb::FILE_CHR: j.kstr("rdev", strf("%u:%u", major(d.rdev()), minor(d.rdev()))).kbool("tty", d.tty()); break;
    default: break;
  }
}

int fds(const Model& m, const Filter& f) {
  Holders h(m);
  Json j;
  std::string text;
  if (f.json) j.begin_array();
  for (uint32_t pid : m.order) {
    const Task& t = m.tasks.at(pid);
    if (!wanted(f, pid) || !t.has_process) continue;
    if (f.json) j.begin_object().knum("pid", pid).kstr("comm", t.proc.comm()).kstr("cwd", t.proc.cwd()).kstr("root", t.proc.root()).key("fds").begin_array();
    else text += strf("process %u (%s)\n  cwd %s\n  root %s\n", pid, t.proc.comm().c_str(), t.proc.cwd().c_str(), t.proc.root().c_str());
    for (const auto& fd : t.fds) {
      auto it = m.files.find(fd.desc());
      if (f.json) {
        j.begin_object().ksnum("fd", fd.fd()).kbool("cloexec", fd.cloexec());
        if (it != m.files.end()) file_json(j, m, h, it->second);
        else j.knum("desc", fd.desc()).kbool("missing", true);
        j.end_object();
      } else {
        text += strf("  %d%s: %s\n", fd.fd(), fd.cloexec() ? " (cloexec)" : "",
                     it == m.files.end() ? strf("file %u (missing from the image)", fd.desc()).c_str()
                                         : describe(m, h, it->second).c_str());
      }
    }
    if (f.json) j.end_array().end_object();
  }
  if (f.json) j.end_array();
  out(f.json ? j.take() : text);
  return 0;
}

// ---- mems and rss ----------------------------------------------------------

// Pages of one VMA held by the image, by round.
struct Held {
  uint64_t data = 0, zero = 0;
  std::map<uint32_t, uint64_t> by_round;
};

uint64_t overlap_pages(uint64_t a0, uint64_t a1, uint64_t b0, uint64_t b1) {
  uint64_t lo = std::max(a0, b0), hi = std::min(a1, b1);
  return lo < hi ? (hi - lo) / ck::kPageSize : 0;
}

void add(Held& h, const Run& r, uint64_t n) {
  if (!n) return;
  (r.data ? h.data : h.zero) += n;
  h.by_round[r.round] += n;
}

// What each VMA of t holds: private runs by address, shared objects' runs
// (whichever process carried them) by offset.
std::vector<Held> held(const Model& m, const Task& t) {
  std::vector<Held> v(t.vmas.size());
  std::vector<Run> runs = t.runs;
  std::sort(runs.begin(), runs.end(), [](const Run& a, const Run& b) { return a.addr < b.addr; });
  for (size_t i = 0; i < t.vmas.size(); ++i) {
    const auto& vma = t.vmas[i];
    if (vma.shmid()) {
      auto it = m.shared.find(vma.shmid());
      if (it == m.shared.end()) continue;
      for (const Run& r : it->second)
        add(v[i], r, overlap_pages(r.addr, r.addr + uint64_t{r.npages} * ck::kPageSize, vma.pgoff(),
                                   vma.pgoff() + (vma.end() - vma.start())));
      continue;
    }
    auto it = std::lower_bound(runs.begin(), runs.end(), vma.start(), [](const Run& r, uint64_t a) {
      return r.addr + uint64_t{r.npages} * ck::kPageSize <= a;
    });
    for (; it != runs.end() && it->addr < vma.end(); ++it)
      add(v[i], *it, overlap_pages(it->addr, it->addr + uint64_t{it->npages} * ck::kPageSize, vma.start(), vma.end()));
  }
  return v;
}

std::string rounds_str(const Held& h) {
  if (h.by_round.size() == 1 && h.by_round.begin()->first == 0) return "";
  std::string s;
  for (const auto& [r, n] : h.by_round)
    s += strf("%s%s %" PRIu64, s.empty() ? " (" : ", ", r ? strf("round %u", r).c_str() : "this image", n);
  return s.empty() ? s : s + ")";
}

void rounds_json(Json& j, const Held& h) {
  j.key("rounds").begin_object();
  for (const auto& [r, n] : h.by_round) j.knum(std::to_string(r), n);
  j.end_object();
}

int mems(const Model& m, const Filter& f) {
  Json j;
  std::string text;
  if (f.json) j.begin_array();
  for (uint32_t pid : m.order) {
    const Task& t = m.tasks.at(pid);
    if (!wanted(f, pid) || !t.has_mm) continue;
    auto hv = held(m, t);
    if (f.json) j.begin_object().knum("pid", pid).kstr("comm", t.proc.comm()).key("vmas").begin_array();
    else text += strf("process %u (%s)\n", pid, t.proc.comm().c_str());
    for (size_t i = 0; i < t.vmas.size(); ++i) {
      const auto& v = t.vmas[i];
      const Held& h = hv[i];
      if (f.json) {
        j.begin_object().khex("start", v.start()).khex("end", v.end()).kstr("prot", prot_str(v.prot(), v.flags()));
        j.khex("flags", v.flags()).khex("pgoff", v.pgoff()).kstr("kind", vma_kind(v.kind())).kstr("path", v.path());
        if (v.shmid()) j.khex("shmid", v.shmid());
        j.knum("pages", (v.end() - v.start()) / ck::kPageSize).knum("data_pages", h.data).knum("zero_pages", h.zero);
        rounds_json(j, h);
        j.end_object();
      } else {
        std::string pages = h.data || h.zero ? strf("%" PRIu64 " data, %" PRIu64 " zero", h.data, h.zero) : "none";
        text += strf("  %012" PRIx64 "-%012" PRIx64 " %s %-13s %8" PRIu64 " pages, held: %s%s  %s\n", v.start(), v.end(),
                     prot_str(v.prot(), v.flags()).c_str(), vma_kind(v.kind()).c_str(), (v.end() - v.start()) / ck::kPageSize,
                     pages.c_str(), rounds_str(h).c_str(), v.path().c_str());
      }
    }
    if (f.json) j.end_array().end_object();
  }
  if (f.json) j.end_array();
  out(f.json ? j.take() : text);
  return 0;
}

int rss(const Model& m, const Filter& f) {
  Json j;
  std::string text = f.json ? "" : strf("%-7s %10s %10s %10s %10s %10s  %s\n", "PID", "VSZ-KiB", "DATA-KiB", "ZERO-KiB", "SHARED-KiB", "FILE-KiB", "COMM");
  if (f.json) j.begin_array();
  for (uint32_t pid : m.order) {
    const Task& t = m.tasks.at(pid);
    if (!wanted(f, pid) || !t.has_mm) continue;
    auto hv = held(m, t);
    uint64_t vsz = 0, data = 0, zero = 0, shared = 0, file = 0;
    std::map<std::string, uint64_t> by_kind;
    for (size_t i = 0; i < t.vmas.size(); ++i) {
      const auto& v = t.vmas[i];
      vsz += (v.end() - v.start()) / ck::kPageSize;
      (v.shmid() ? shared : (v.kind() == pb::VMA_FILE_PRIVATE ? file : data)) += hv[i].data;
      zero += hv[i].zero;
      by_kind[vma_kind(v.kind())] += hv[i].data;
    }
    uint64_t k = ck::kPageSize / 1024;
    if (f.json) {
      j.begin_object().knum("pid", pid).kstr("comm", t.proc.comm()).knum("vsz_pages", vsz).knum("data_pages", data);
      j.knum("zero_pages", zero).knum("shared_pages", shared).knum("file_cow_pages", file).knum("file_contents_pages", t.file_pages);
      j.key("data_pages_by_kind").begin_object();
      for (const auto& [kind, n] : by_kind) j.knum(kind, n);
      j.end_object().end_object();
    } else {
      text += strf("%-7u %10" PRIu64 " %10" PRIu64 " %10" PRIu64 " %10" PRIu64 " %10" PRIu64 "  %s\n", pid, vsz * k, data * k,
                   zero * k, shared * k, file * k, t.proc.comm().c_str());
    }
  }
  if (f.json) j.end_array();
  out(f.json ? j.take() : text);
  return 0;
}

// ---- sk, cg -------------------------------------------------------------------

int sk(const Model& m, const Filter& f) {
  Holders h(m);
  Json j;
  std::string text;
  if (f.json) j.begin_array();
  for (const auto& [id, d] : m.files) {
    if (d.kind() != pb::FILE_SOCKET) continue;
    auto hs = h.by_desc.find(id);
    if (!f.pids.empty()) {
      bool any = false;
      if (hs != h.by_desc.end())
        for (const auto& [pid, fd] : hs->second) any |= wanted(f, pid);
      if (!any) continue;
    }
    auto it = m.socks.find(id);
    std::string state = it != m.socks.end() ? ck::sock_summary(it->second) : d.socket_family() + " " + d.socket_type() + " (no ck-sockdump state)";
    uint32_t peer = sock_peer(m, d);
    if (f.json) {
      j.begin_object().knum("desc", id).kstr("family", d.socket_family()).kstr("type", d.socket_type()).ksnum("protocol", d.socket_protocol());
      j.kstr("addr", d.socket_addr()).kstr("peer_addr", d.socket_peer()).kbool("listening", d.socket_listening()).kstr("state", state);
      if (it != m.socks.end() && it->second.netns()) j.khex("netns", it->second.netns());
      j.key("held_by").begin_array();
      if (hs != h.by_desc.end())
        for (const auto& [pid, fd] : hs->second) j.begin_object().knum("pid", pid).ksnum("fd", fd).end_object();
      j.end_array();
      if (peer) j.knum("peer_desc", peer);
      j.end_object();
    } else {
      std::string who = h.of(id);
      text += strf("socket %u (%s): %s", id, who.empty() ? "in flight" : who.c_str(), state.c_str());
      if (peer) text += ", peer socket " + std::to_string(peer) + (h.of(peer).empty() ? "" : " (" + h.of(peer) + ")");
      text += "\n";
    }
  }
  if (f.json) j.end_array();
  out(f.json ? j.take() : text);
  return 0;
}

int cg(const Model& m, const Filter& f) {
  Json j;
  std::string text;
  if (f.json) j.begin_object().key("cgroups").begin_array();
  for (const auto& c : m.cgroups) {
    if (f.json) {
      j.begin_object().kstr("path", c.path()).kbool("ancestor", c.ancestor()).key("procs").begin_array();
      for (uint32_t p : c.procs()) j.num(p);
      j.end_array().key("threads").begin_array();
      for (uint32_t p : c.threads()) j.num(p);
      j.end_array().key("settings").begin_object();
      std::map<std::string, std::string> sorted(c.settings().begin(), c.settings().end());
      for (const auto& [k, v] : sorted) j.kstr(k, v);
      j.end_object().end_object();
    } else {
      text += "cgroup " + c.path() + (c.ancestor() ? " (ancestor)" : "") + ": procs";
      for (uint32_t p : c.procs()) text += " " + std::to_string(p);
      if (!c.procs_size()) text += " none";
      text += strf(", %d threads, %d settings\n", c.threads_size(), c.settings_size());
      std::map<std::string, std::string> sorted(c.settings().begin(), c.settings().end());
      for (const auto& [k, v] : sorted) text += "  " + k + " = " + v + "\n";
    }
  }
  if (f.json) j.end_array().key("v1").begin_array();
  for (uint32_t pid : m.order) {
    const Task& t = m.tasks.at(pid);
    if (!wanted(f, pid) || !t.proc.cgroup_v1_size()) continue;
    if (f.json) {
      j.begin_object().knum("pid", pid).key("lines").begin_array();
      for (const auto& l : t.proc.cgroup_v1()) j.str(l);
      j.end_array().end_object();
    } else {
      text += strf("process %u cgroup v1:", pid);
      for (const auto& l : t.proc.cgroup_v1()) text += " " + l;
      text += "\n";
    }
  }
  if (f.json) j.end_array().end_object();
  else if (text.empty()) text = "no cgroups in the image (ck-cgdump was not a stage)\n";
  out(f.json ? j.take() : text);
  return 0;
}

}  // namespace

int explore(Source& s, const std::string& what, const Filter& f) {
  static const std::map<std::string, int (*)(const Model&, const Filter&)> kWhat = {
      {"ps", ps}, {"fds", fds}, {"mems", mems}, {"rss", rss}, {"sk", sk}, {"cg", cg}};
  auto it = kWhat.find(what);
  if (it == kWhat.end()) ck::usage_error("x: unknown view '" + what + "' (ps, fds, mems, rss, sk, cg)");
  Model m = load(s);
  check_pids(m, f);
  return it->second(m, f);
}

}  // namespace crit
