#include "round.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "error.h"
#include "log.h"
#include "proc.h"
#include "vma.h"

CK_LOG_MODULE("round");

namespace ck {
namespace {

constexpr char kTreeFile[] = "tree";
constexpr char kRoundsDir[] = "rounds";

void mkdirs(const std::string& path) {
  for (size_t i = 1; i <= path.size(); ++i) {
    if (i < path.size() && path[i] != '/') continue;
    std::string p = path.substr(0, i);
    if (::mkdir(p.c_str(), 0700) != 0 && errno != EEXIST) throw_errno("unable to create '" + p + "'");
  }
}

// Replaces path whole: a reader (or a round killed halfway) sees the old
// file or the new one, never a part.
void write_atomic(const std::string& path, const std::string& text) {
  std::string tmp = path + strf(".%d.tmp", static_cast<int>(getpid()));
  ScopedFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd.valid()) throw_errno("unable to create '" + tmp + "'");
  write_full(fd.get(), text.data(), text.size());
  fd.reset();
  if (::rename(tmp.c_str(), path.c_str()) != 0) throw_errno("unable to rename '" + tmp + "'");
}

bool exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

void remove_tree(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return;
  std::vector<std::string> names;
  while (struct dirent* e = ::readdir(d))
    if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, "..")) names.push_back(e->d_name);
  ::closedir(d);
  for (const auto& n : names) {
    std::string p = dir + "/" + n;
    if (::unlink(p.c_str()) != 0 && errno == EISDIR) remove_tree(p);
  }
  ::rmdir(dir.c_str());
}

std::vector<std::string> numeric_entries(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (struct dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (!n.empty() && n.find_first_not_of("0123456789") == std::string::npos) out.push_back(n);
  }
  ::closedir(d);
  return out;
}

// ---- ranges -------------------------------------------------------------------

// Adds [lo, hi) to r (kept sorted and disjoint; touching ranges merge).
void add_range(Ranges& r, uint64_t lo, uint64_t hi) {
  if (lo >= hi) return;
  auto it = std::lower_bound(r.begin(), r.end(), std::make_pair(lo, uint64_t{0}));
  if (it != r.begin() && std::prev(it)->second >= lo) --it;
  auto end = it;
  while (end != r.end() && end->first <= hi) {
    lo = std::min(lo, end->first);
    hi = std::max(hi, end->second);
    ++end;
  }
  it = r.erase(it, end);
  r.insert(it, {lo, hi});
}

// The parts of r inside [lo, hi), added to out.
void add_within(Ranges& out, const Ranges& r, uint64_t lo, uint64_t hi) {
  auto it = std::upper_bound(r.begin(), r.end(), std::make_pair(lo, ~uint64_t{0}));
  if (it != r.begin()) --it;
  for (; it != r.end() && it->first < hi; ++it) add_range(out, std::max(lo, it->first), std::min(hi, it->second));
}

bool same_vma(const TrackedVma& a, const pb::Vma& b) {
  return a.start == b.start() && a.end == b.end() && a.prot == b.prot() && a.flags == b.flags() &&
         a.pgoff == b.pgoff() && a.dev == b.dev() && a.ino == b.ino();
}

// What one round found: per process, the pages written since they were
// last protected, and the ranges it copied whole.
struct Record {
  uint32_t gen = 0, base = 0;
  std::map<pid_t, Ranges> dirty, whole;
};

std::string record_text(const Record& r) {
  std::string t = strf("ck-round 1\nround %u base %u\n", r.gen, r.base);
  for (const auto& [kind, m] : {std::make_pair("whole", &r.whole), std::make_pair("dirty", &r.dirty)})
    for (const auto& [pid, rs] : *m)
      for (const auto& [lo, hi] : rs) t += strf("%s %d %" PRIx64 " %" PRIx64 "\n", kind, pid, lo, hi);
  return t;
}

}  // namespace

std::string track_state_dir(const std::string& opt) {
  if (!opt.empty()) return opt;
  const char* e = std::getenv("CK_TRACK_DIR");
  if (e && *e) return e;
  return "/run/ck/track";
}

// ---- the state of one tracked tree ------------------------------------------

struct Round::State {
  std::string dir;  // STATE_DIR/ROOT
  pid_t root = 0;
  ScopedFd lock;
  uint64_t dump = 0;
  uint32_t last = 0, confirmed = 0;
  std::map<pid_t, TrackedProc> procs;

  State(const std::string& base, pid_t r) : dir(base + strf("/%d", r)), root(r) {
    mkdirs(base);
    std::string lp = dir + ".lock";
    lock.reset(::open(lp.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!lock.valid()) throw_errno("unable to open '" + lp + "'");
    while (::flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
      if (errno == EINTR) continue;
      if (errno == EWOULDBLOCK)
        fail(strf("pid %d: another ck-memread works on its tracking state ('%s' is locked)", r, lp.c_str()));
      throw_errno("unable to lock '" + lp + "'");
    }
  }
  // Waits for the lock (ck-freeze settling a round its command took).
  State(const std::string& tree_dir, bool) : dir(tree_dir) {
    std::string lp = dir + ".lock";
    lock.reset(::open(lp.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW));
    if (!lock.valid()) throw_errno("unable to open '" + lp + "'");
    while (::flock(lock.get(), LOCK_EX) != 0)
      if (errno != EINTR) throw_errno("unable to lock '" + lp + "'");
  }

  std::string record_path(uint32_t gen) const { return dir + strf("/%s/%u", kRoundsDir, gen); }
  bool marked(uint32_t gen, const char* what) const { return exists(record_path(gen) + "." + what); }
  void mark(uint32_t gen, const char* what) { write_atomic(record_path(gen) + "." + what, ""); }

  bool load_tree() {
    std::string t;
    if (!try_read_file(dir + "/" + kTreeFile, &t)) {
      if (exists(dir + "/round"))
        fail(strf("pid %d is tracked by an older ck (state '%s' has no '%s'): run ck-memread --track -t %d again",
                  root, dir.c_str(), kTreeFile, root));
      return false;
    }
    unsigned long long d = 0;
    unsigned l = 0, c = 0;
    if (std::sscanf(t.c_str(), "ck-track 2\ndump %llx\nlast %u\nconfirmed %u\n", &d, &l, &c) != 3 || !l || !c || c > l)
      bad_input(strf("tracking state '%s/%s' does not parse", dir.c_str(), kTreeFile));
    dump = d, last = l, confirmed = c;
    return true;
  }
  void save_tree() {
    write_atomic(dir + "/" + kTreeFile,
                 strf("ck-track 2\ndump %016" PRIx64 "\nlast %u\nconfirmed %u\n", dump, last, confirmed));
  }

  void load_procs() {
    procs.clear();
    for (const auto& n : numeric_entries(dir)) {
      std::string path = dir + "/" + n;
      std::string text = read_file(path);
      TrackedProc p;
      size_t at = 0;
      bool head = false;
      while (at < text.size()) {
        size_t nl = text.find('\n', at);
        if (nl == std::string::npos) nl = text.size();
        std::string line = text.substr(at, nl - at);
        at = nl + 1;
        int pid = 0, holder = 0;
        unsigned long long st = 0, s, e, pg, dv, in;
        unsigned prot, fl, uw;
        if (std::sscanf(line.c_str(), "pid %d start %llu holder %d", &pid, &st, &holder) == 3) {
          p.pid = pid, p.start_time = st, p.holder = holder;
          head = true;
        } else if (std::sscanf(line.c_str(), "vma %llx %llx %x %x %llx %llx %llu %u", &s, &e, &prot, &fl, &pg, &dv,
                               &in, &uw) == 8) {
          TrackedVma v;
          v.start = s, v.end = e, v.prot = prot, v.flags = fl, v.pgoff = pg, v.dev = dv, v.ino = in, v.uw = uw != 0;
          p.vmas.push_back(v);
        } else if (line != "ck-track 1" && !line.empty()) {
          bad_input(strf("tracking state '%s' does not parse", path.c_str()));
        }
      }
      if (!head || std::to_string(p.pid) != n) bad_input(strf("tracking state '%s' does not parse", path.c_str()));
      procs[p.pid] = p;
    }
  }
  void save_proc(const TrackedProc& p) {
    std::string t = "ck-track 1\n";
    t += strf("pid %d start %" PRIu64 " holder %d\n", p.pid, p.start_time, p.holder);
    for (const auto& v : p.vmas)
      t += strf("vma %" PRIx64 " %" PRIx64 " %x %x %" PRIx64 " %" PRIx64 " %" PRIu64 " %u\n", v.start, v.end, v.prot,
                v.flags, v.pgoff, v.dev, v.ino, v.uw ? 1u : 0u);
    write_atomic(strf("%s/%d", dir.c_str(), p.pid), t);
  }
  // Every process in procs saved; the files (and holders) of the others go.
  void save_procs() {
    for (auto& [pid, p] : procs) save_proc(p);
    for (const auto& n : numeric_entries(dir)) {
      pid_t pid = std::atoi(n.c_str());
      if (procs.count(pid)) continue;
      std::string text;
      int holder = 0;
      if (try_read_file(dir + "/" + n, &text)) {
        size_t h = text.find(" holder ");
        if (h != std::string::npos) holder = std::atoi(text.c_str() + h + 8);
      }
      stop_holder(holder);
      ::unlink((dir + "/" + n).c_str());
    }
  }

  void write_record(const Record& r) {
    mkdirs(dir + "/" + kRoundsDir);
    write_atomic(record_path(r.gen), record_text(r));
  }
  // Adds round gen's sets to dirty and whole; false if it left no record.
  bool merge_record(uint32_t gen, std::map<pid_t, Ranges>* dirty, std::map<pid_t, Ranges>* whole) {
    std::string t;
    if (!try_read_file(record_path(gen), &t)) return false;
    unsigned g = 0, b = 0;
    if (std::sscanf(t.c_str(), "ck-round 1\nround %u base %u\n", &g, &b) != 2 || g != gen)
      bad_input(strf("round record '%s' does not parse", record_path(gen).c_str()));
    size_t at = t.find('\n', t.find('\n') + 1) + 1;
    while (at < t.size()) {
      size_t nl = t.find('\n', at);
      if (nl == std::string::npos) nl = t.size();
      char kind[8];
      int pid;
      unsigned long long lo, hi;
      if (std::sscanf(t.c_str() + at, "%7s %d %llx %llx", kind, &pid, &lo, &hi) != 4 || lo >= hi ||
          (std::strcmp(kind, "dirty") && std::strcmp(kind, "whole")))
        bad_input(strf("round record '%s' does not parse", record_path(gen).c_str()));
      add_range((*(kind[0] == 'd' ? dirty : whole))[pid], lo, hi);
      at = nl + 1;
    }
    return true;
  }
  // Round gen is known stored: the sets of every round up to it are released.
  void confirm(uint32_t gen) {
    if (gen <= confirmed) return;
    for (const auto& n : numeric_entries(dir + "/" + kRoundsDir)) {
      uint32_t g = static_cast<uint32_t>(std::strtoul(n.c_str(), nullptr, 10));
      if (g > gen) continue;
      for (const char* suffix : {"", ".done", ".failed"}) ::unlink((record_path(g) + suffix).c_str());
    }
    confirmed = gen;
    save_tree();
    LOG_INFO("round %u is stored: the dirty sets of rounds up to it are released", gen);
  }
  void remove_all() {
    load_procs_best_effort();
    for (auto& [pid, p] : procs) stop_holder(p.holder);
    procs.clear();
    remove_tree(dir);
  }
  void load_procs_best_effort() {
    try {
      load_procs();
    } catch (const Error& e) {
      LOG_WARN("%s", e.what());
    }
  }
};

// ---- the lifecycle -------------------------------------------------------------

Round::Round(std::unique_ptr<State> st, bool standalone) : st_(std::move(st)), standalone_(standalone) {
  dir_fd_.reset(::open(st_->dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!dir_fd_.valid()) throw_errno("unable to open '" + st_->dir + "'");
}

Round::~Round() = default;

std::unique_ptr<Round> Round::arm(const std::string& state_dir, pid_t root) {
  auto st = std::make_unique<State>(state_dir, root);
  if (exists(st->dir)) st->remove_all();  // tracking again from scratch
  mkdirs(st->dir);
  uint64_t dump = 0;
  while (dump == 0)
    if (::getrandom(&dump, sizeof dump, 0) != static_cast<ssize_t>(sizeof dump)) throw_errno("unable to pick a dump id");
  st->dump = dump;
  st->last = st->confirmed = 1;
  st->save_tree();
  std::unique_ptr<Round> r(new Round(std::move(st), true));
  r->id_.set_dump(dump);
  r->id_.set_gen(1);
  r->id_.set_base(0);
  return r;
}

std::unique_ptr<Round> Round::begin(const std::string& state_dir, pid_t root, const std::string& since,
                                    bool standalone) {
  auto st = std::make_unique<State>(state_dir, root);
  if (!st->load_tree())
    fail(strf("pid %d is not tracked (no '%s/%s'; run ck-memread --track -t %d first)", root, st->dir.c_str(),
              kTreeFile, root));
  st->load_procs();
  const std::string dump = strf("%016" PRIx64, st->dump);
  uint32_t base = st->confirmed;
  if (!since.empty()) {
    std::string num = since;
    size_t colon = since.find(':');
    if (colon != std::string::npos) {
      if (since.substr(0, colon) != dump)
        bad_input(strf("round '%s' is of another tracking: pid %d is tracked as dump %s", since.c_str(), root,
                       dump.c_str()));
      num = since.substr(colon + 1);
    }
    char* end = nullptr;
    unsigned long n = std::strtoul(num.c_str(), &end, 10);
    if (num.empty() || *end || n == 0 || n > st->last)
      bad_input(strf("--since '%s': pid %d has no such round (dump %s, rounds 1 to %u)", since.c_str(), root,
                     dump.c_str(), st->last));
    const uint32_t g = static_cast<uint32_t>(n);
    if (g < st->confirmed)
      bad_input(strf("round %u is older than round %u, which is known to be stored: what was written since round %u "
                     "is released (--since %u or later)",
                     g, st->confirmed, g, st->confirmed));
    if (g > st->confirmed) {
      if (st->marked(g, "failed")) bad_input(strf("round %u was rolled back by ck-freeze: it is stored nowhere", g));
      if (!st->marked(g, "done"))
        bad_input(strf("round %u did not finish (its stream was cut short): it is stored nowhere", g));
      st->confirm(g);
    }
    base = g;
  }
  if (base == 1 && !st->marked(1, "done"))
    fail(strf("round 1 of pid %d did not finish: take it again with ck-memread --track", root));
  const uint32_t gen = ++st->last;
  st->save_tree();  // a number is never given twice, whatever becomes of the round
  std::unique_ptr<Round> r(new Round(std::move(st), standalone));
  r->id_.set_dump(r->st_->dump);
  r->id_.set_gen(gen);
  r->id_.set_base(base);
  if (base + 1 < gen)
    LOG_INFO("round %u: computed against round %u, so it takes in what rounds %u to %u found written", gen, base,
             base + 1, gen - 1);
  return r;
}

std::vector<PagePlan> Round::plan(const std::vector<pid_t>& pids, std::vector<std::vector<pb::Vma>>& layouts) {
  State& S = *st_;
  const bool first = !incremental();
  std::vector<PagePlan> plans(pids.size());
  Record rec;
  rec.gen = id_.gen();
  rec.base = id_.base();
  // What rounds after the base found: not known to be stored, so copied again.
  std::map<pid_t, Ranges> old_dirty, old_whole;
  for (uint32_t g = id_.base() + 1; !first && g < id_.gen(); ++g) S.merge_record(g, &old_dirty, &old_whole);

  struct Work {
    uint64_t start = 0;
    pid_t holder = 0;        // the process's holder (old, or the one started here)
    bool arm_process = false;
    ScopedFd uffd, pagemap;
    std::vector<size_t> arm;  // VMAs to register and protect
    Ranges clear;             // written pages to protect again
  };
  std::vector<Work> work(pids.size());
  // 1. Decide, and find what was written, changing nothing.
  for (size_t i = 0; i < pids.size(); ++i) {
    const pid_t pid = pids[i];
    std::vector<pb::Vma>& vmas = layouts[i];
    PagePlan& pl = plans[i];
    Work& w = work[i];
    pl.only.assign(vmas.size(), 0);
    w.start = proc_start_time(pid);
    auto all_whole = [&] {
      for (size_t vi = 0; vi < vmas.size(); ++vi)
        if (vma_trackable(vmas[vi])) {
          w.arm.push_back(vi);
          add_range(rec.whole[pid], vmas[vi].start(), vmas[vi].end());
        }
    };
    auto it = S.procs.find(pid);
    if (it != S.procs.end()) w.holder = it->second.holder;
    if (first) {
      // "uw" now is someone else's registration (ours ended with its
      // holders): two trackers would clear each other's written pages.
      for (const auto& v : vmas)
        if (vma_has_uw(v))
          fail(strf("pid %d: mapping %s is registered for write protection already (tracked from another state "
                    "directory, or another userfaultfd user): refusing to track it twice",
                    pid, format_vma(v).c_str()));
      w.arm_process = true;
      all_whole();
      continue;
    }
    if (it != S.procs.end() && it->second.start_time == w.start) w.uffd.reset(take_from_holder(it->second.holder));
    bool any_uw = false;
    for (const auto& v : vmas) any_uw |= vma_has_uw(v);
    if (!w.uffd.valid() || !any_uw) {
      // A new process (fork child, new pid), an exec'd one (new mm, none of
      // its mappings registered) or one whose holder is gone: everything.
      LOG_INFO("pid %d: %s: full copy", pid,
               it == S.procs.end()                   ? "not tracked before (new process)"
               : it->second.start_time != w.start    ? "a different process with the same pid"
               : !w.uffd.valid()                      ? "tracking lost (holder gone)"
                                                      : "no mapping is tracked any more (exec)");
      w.arm_process = standalone_;
      w.uffd.reset();
      all_whole();
      continue;
    }
    std::string pm = strf("/proc/%d/pagemap", pid);
    w.pagemap.reset(::open(pm.c_str(), O_RDONLY | O_CLOEXEC));
    if (!w.pagemap.valid()) throw_errno("unable to open '" + pm + "'");
    std::map<uint64_t, const TrackedVma*> prev;
    for (const auto& t : it->second.vmas) prev[t.start] = &t;
    for (size_t vi = 0; vi < vmas.size(); ++vi) {
      const pb::Vma& v = vmas[vi];
      if (!vma_trackable(v)) continue;
      auto pv = prev.find(v.start());
      if (pv != prev.end() && pv->second->uw && vma_has_uw(v) && same_vma(*pv->second, v)) {
        Ranges own, other;
        if (written_ranges(w.pagemap.get(), pid, v.start(), v.end(), &own, &other)) {
          pl.only[vi] = 1;
          Ranges copy, whole;
          for (const Ranges* found : {&own, &other})
            for (const auto& [lo, hi] : *found) {
              add_range(rec.dirty[pid], lo, hi);
              add_range(w.clear, lo, hi);
            }
          // (what held nothing of its own may have been written again since
          // the scan: it is looked at again, and copied if it has data now)
          for (const Ranges* found : {&own, &other})
            for (const auto& [lo, hi] : *found) add_range(copy, lo, hi);
          pl.gone.insert(pl.gone.end(), other.begin(), other.end());
          add_within(copy, old_dirty[pid], v.start(), v.end());
          add_within(whole, old_whole[pid], v.start(), v.end());
          for (const auto& [lo, hi] : whole) add_range(copy, lo, hi);
          pl.copy.insert(pl.copy.end(), copy.begin(), copy.end());  // (VMAs come in address order)
          pl.whole.insert(pl.whole.end(), whole.begin(), whole.end());
          continue;
        }
        LOG_DEBUG("pid %d: vma %s is not tracked any more: copied whole", pid, format_vma(v).c_str());
      }
      // New, moved, resized or re-protected: registered and protected
      // before its pages are copied, then copied whole.
      w.arm.push_back(vi);
      add_range(rec.whole[pid], v.start(), v.end());
    }
  }
  // 2. The record, before anything is armed or protected again.
  S.write_record(rec);
  // 3. Arm, protect again, and keep the layouts as armed.
  for (size_t i = 0; i < pids.size(); ++i) {
    const pid_t pid = pids[i];
    std::vector<pb::Vma>& vmas = layouts[i];
    Work& w = work[i];
    with_context(strf("pid %d", pid), [&] {
      if (w.arm_process) {
        stop_holder(w.holder);
        double ms = 0;
        w.uffd.reset(open_tracking(pid, &ms));
        freeze_ms_ += ms;
        ++armed_;
        int keep = ::fcntl(w.uffd.get(), F_DUPFD_CLOEXEC, 0);
        if (keep < 0) throw_errno("unable to duplicate a userfaultfd");
        w.holder = spawn_holder(pid, keep);
        S.procs[pid] = {pid, w.start, w.holder, {}};
        S.save_proc(S.procs[pid]);  // at once: a holder is never left unknown
      }
      if (w.uffd.valid()) {
        if (!w.pagemap.valid()) {
          std::string pm = strf("/proc/%d/pagemap", pid);
          w.pagemap.reset(::open(pm.c_str(), O_RDONLY | O_CLOEXEC));
          if (!w.pagemap.valid()) throw_errno("unable to open '" + pm + "'");
        }
        size_t armed = 0;
        for (size_t vi : w.arm) {
          pb::Vma& v = vmas[vi];
          if (arm_range(w.uffd.get(), w.pagemap.get(), v.start(), v.end())) {
            ++armed;
            if (!vma_has_uw(v)) v.set_vmflags(v.vmflags().empty() ? "uw" : v.vmflags() + " uw");
          } else {
            LOG_DEBUG("pid %d: vma %s not tracked (%s): copied whole every round", pid, format_vma(v).c_str(),
                      std::strerror(errno));
          }
        }
        clear_written(w.pagemap.get(), pid, w.clear);
        if (w.arm_process) LOG_INFO("pid %d: write tracking armed on %zu vmas", pid, armed);
      }
      S.procs[pid] = {pid, w.start, w.holder, to_tracked(vmas)};
    });
  }
  for (auto it = S.procs.begin(); it != S.procs.end();)
    it = std::find(pids.begin(), pids.end(), it->first) == pids.end() ? S.procs.erase(it) : std::next(it);
  S.save_procs();  // processes that left the tree: their holders go
  return plans;
}

void Round::written() { st_->mark(id_.gen(), "done"); }

void Round::confirm(const std::string& tree_dir, uint32_t gen) {
  State st(tree_dir, true);
  if (!st.load_tree() || !exists(st.record_path(gen))) return;  // tracking ended, or released already
  if (st.marked(gen, "done"))
    st.confirm(gen);
  else
    LOG_WARN("round %u did not finish, yet ck-freeze committed: it is not taken as stored", gen);
}

void Round::rollback(const std::string& tree_dir, uint32_t gen) {
  State st(tree_dir, true);
  if (!st.load_tree() || !exists(st.record_path(gen))) return;
  st.mark(gen, "failed");
  LOG_INFO("round %u was rolled back: what it found written stays for the next round", gen);
}

void Round::release(const std::string& state_dir, pid_t root) {
  State st(state_dir, root);
  bool tracked = exists(st.dir);
  st.remove_all();
  ::unlink((st.dir + ".lock").c_str());
  if (!tracked) fail(strf("pid %d is not tracked", root));
}

}  // namespace ck
