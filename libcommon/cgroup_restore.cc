// cgroup v2 restore: CgroupRestorer.  See cgroup.h.
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <sstream>

#include "cgroup.h"
#include "error.h"
#include "log.h"

CK_LOG_MODULE("cgroup");

namespace ck {

namespace {

constexpr size_t kMaxPath = 4096;
constexpr size_t kMaxSetting = 64 << 10;

void strip(std::string* s) {
  while (!s->empty() && (s->back() == '\n' || s->back() == ' ')) s->pop_back();
}

std::vector<std::string> words(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  std::string w;
  while (in >> w) out.push_back(w);
  return out;
}

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  std::string l;
  while (std::getline(in, l))
    if (!l.empty()) out.push_back(l);
  return out;
}

bool valid_cg_path(const std::string& p) {
  if (p.empty() || p[0] != '/' || p.size() > kMaxPath || p.find('\0') != std::string::npos) return false;
  if (p == "/") return true;
  if (p.back() == '/') return false;
  size_t i = 1;
  while (i <= p.size()) {
    size_t j = p.find('/', i);
    if (j == std::string::npos) j = p.size();
    std::string c = p.substr(i, j - i);
    if (c.empty() || c == "." || c == ".." || c.size() > 255) return false;
    i = j + 1;
  }
  return true;
}

std::string parent_of(const std::string& p) {
  if (p == "/") return "";
  size_t s = p.rfind('/');
  return s == 0 ? "/" : p.substr(0, s);
}

int depth(const std::string& p) { return p == "/" ? 0 : static_cast<int>(std::count(p.begin(), p.end(), '/')); }

const std::string* setting(const pb::Cgroup& cg, const std::string& key) {
  auto it = cg.settings().find(key);
  return it == cg.settings().end() ? nullptr : &it->second;
}

// "domain threaded" is what a domain becomes when a child turns threaded.
bool same_value(const std::string& key, std::string a, std::string b) {
  strip(&a);
  strip(&b);
  if (key == "cgroup.type") {
    if (a == "domain threaded") a = "domain";
    if (b == "domain threaded") b = "domain";
  }
  if (key == "cgroup.subtree_control") {
    auto x = words(a), y = words(b);
    std::sort(x.begin(), x.end());
    std::sort(y.begin(), y.end());
    return x == y;
  }
  return a == b;
}

}  // namespace

CgroupMode parse_cgroup_mode(const std::string& s) {
  if (s == "strict") return CgroupMode::kStrict;
  if (s == "overwrite") return CgroupMode::kOverwrite;
  if (s == "ignore") return CgroupMode::kIgnore;
  usage_error("--cgroup-mode '" + s + "' is not one of strict, overwrite, ignore");
}

CgroupRestorer::CgroupRestorer(CgroupFs& fs) : fs_(fs) {}

CgroupRestorer::~CgroupRestorer() {
  try {
    rollback();
  } catch (...) {
  }
}

std::string CgroupRestorer::dir_of(const std::string& p) const {
  std::string base = o_.fs_root;
  if (o_.cgroup_root != "/") base += o_.cgroup_root;
  return p == "/" ? base : base + p;
}

void CgroupRestorer::plan(const std::vector<pb::Cgroup>& cgroups, const CgroupRestoreOptions& o) {
  if (started_) fail("cgroup restore: plan() after create()");
  o_ = o;
  if (o_.fs_root.empty()) o_.fs_root = default_cgroup_root();
  if (o_.cgroup_root.empty()) o_.cgroup_root = "/";
  if (!valid_cg_path(o_.cgroup_root)) usage_error("--cgroup-root '" + o_.cgroup_root + "' is not a plain cgroup path");
  if (!fs_.is_dir(dir_of("/")))
    fail("cgroup root '" + o_.cgroup_root + "' does not exist (no directory '" + dir_of("/") + "')");
  items_.clear();
  proc_cg_.clear();
  thread_cg_.clear();
  std::set<std::string> seen;
  for (const auto& cg : cgroups) {
    const std::string& p = cg.path();
    if (!valid_cg_path(p)) bad_input("cgroup path '" + p.substr(0, 200) + "' in the image is not a plain cgroup path");
    if (!seen.insert(p).second) bad_input("cgroup '" + p + "' appears twice in the image");
    for (const auto& [k, v] : cg.settings()) {
      if (k.empty() || k.size() > 255 || k[0] == '.' || k.find('/') != std::string::npos ||
          k.find('\0') != std::string::npos || !is_setting_file(k))
        bad_input("cgroup '" + p + "': '" + k.substr(0, 200) + "' in the image is not a cgroup setting file");
      if (v.size() > kMaxSetting || v.find('\0') != std::string::npos)
        bad_input("cgroup '" + p + "': the value of '" + k + "' in the image is not a setting");
    }
    for (uint32_t pid : cg.procs()) {
      if (pid == 0 || pid > 0x7fffffff) bad_input(strf("cgroup '%s': pid %u in the image is not a pid", p.c_str(), pid));
      if (!proc_cg_.emplace(pid, p).second) bad_input(strf("pid %u is in two cgroups in the image", pid));
    }
    for (uint32_t tid : cg.threads()) {
      if (tid == 0 || tid > 0x7fffffff) bad_input(strf("cgroup '%s': tid %u in the image is not a tid", p.c_str(), tid));
      if (!thread_cg_.emplace(tid, p).second) bad_input(strf("thread %u is in two cgroups in the image", tid));
    }
    Item it;
    it.cg = cg;
    items_.push_back(std::move(it));
  }
  std::stable_sort(items_.begin(), items_.end(), [](const Item& a, const Item& b) {
    int da = depth(a.cg.path()), db = depth(b.cg.path());
    return da != db ? da < db : a.cg.path() < b.cg.path();
  });
  for (const auto& it : items_) {
    std::string par = parent_of(it.cg.path());
    if (!par.empty() && !seen.count(par) && !fs_.is_dir(dir_of(par)))
      bad_input("cgroup '" + it.cg.path() + "' in the image has no parent '" + par + "' in the image or here");
  }
  for (auto& it : items_) check_existing(it);
  planned_ = true;
}

void CgroupRestorer::check_existing(Item& it) {
  const std::string& p = it.cg.path();
  it.exists = p == "/" || fs_.is_dir(dir_of(p));
  if (!it.exists || p == "/" || it.cg.ancestor() || o_.mode != CgroupMode::kStrict) return;
  std::string dir = dir_of(p);
  std::vector<std::string> diffs;
  std::map<std::string, std::string> sorted(it.cg.settings().begin(), it.cg.settings().end());
  for (const auto& [k, v] : sorted) {
    std::string cur;
    int err = fs_.read(dir + "/" + k, &cur);
    if (err)
      diffs.push_back(strf("'%s' is unreadable here (%s), the image has '%s'", k.c_str(), std::strerror(err), v.c_str()));
    else if (!same_value(k, cur, v)) {
      strip(&cur);
      diffs.push_back(strf("%s is '%s', the image has '%s'", k.c_str(), cur.c_str(), v.c_str()));
    }
  }
  if (diffs.empty()) return;
  std::string msg = "cgroup '" + p + "' exists at '" + dir + "' with other settings: ";
  for (size_t i = 0; i < diffs.size() && i < 5; i++) msg += (i ? "; " : "") + diffs[i];
  if (diffs.size() > 5) msg += strf("; and %zu more", diffs.size() - 5);
  fail(msg + " (--cgroup-mode overwrite or ignore reuses it)");
}

void CgroupRestorer::write_setting(const Item& it, const std::string& key, const std::string& value, bool undo) {
  std::string file = dir_of(it.cg.path()) + "/" + key, cur;
  int err = fs_.read(file, &cur);
  if (err == ENOENT) {
    missing_.push_back(it.cg.path() + ": " + key);
    return;
  }
  if (err) throw_errno("unable to read '" + file + "'", err);
  if (same_value(key, cur, value)) return;
  strip(&cur);
  if (undo) undo_.push_back({file, cur});
  auto ls = lines(value);
  if (ls.empty()) ls.push_back("\n");  // an empty value (cpuset.cpus "") is written as a newline
  for (const auto& l : ls)
    if (int e = fs_.write(file, l)) throw_errno("unable to write '" + l + "' to '" + file + "'", e);
}

void CgroupRestorer::create() {
  if (!planned_) fail("cgroup restore: create() before plan()");
  if (started_) fail("cgroup restore: create() called twice");
  started_ = true;
  try {
    // 1. directories and types, parents first.
    for (auto& it : items_) {
      const std::string& p = it.cg.path();
      std::string dir = dir_of(p);
      bool fresh = false;
      if (!it.exists) {
        if (int err = fs_.make_dir(dir)) throw_errno("unable to create cgroup '" + dir + "'", err);
        created_.push_back(dir);
        fresh = true;
        LOG_DEBUG("created %s", dir.c_str());
      }
      const std::string* type = setting(it.cg, "cgroup.type");
      bool mine = fresh || (o_.mode == CgroupMode::kOverwrite && !it.cg.ancestor() && p != "/");
      if (type && *type == "threaded" && mine) {
        std::string cur;
        fs_.read(dir + "/cgroup.type", &cur);
        strip(&cur);
        if (cur != "threaded")
          if (int err = fs_.write(dir + "/cgroup.type", "threaded"))
            throw_errno("unable to make cgroup '" + dir + "' threaded", err);
      }
    }
    // 2. controllers, top-down: a child's files exist once its parent enables them.
    for (auto& it : items_) {
      const std::string* sc = setting(it.cg, "cgroup.subtree_control");
      if (!sc) continue;
      std::string file = dir_of(it.cg.path()) + "/cgroup.subtree_control", cur;
      if (int err = fs_.read(file, &cur)) throw_errno("unable to read '" + file + "'", err);
      auto have = words(cur);
      for (const auto& c : words(*sc)) {
        if (std::find(have.begin(), have.end(), c) != have.end()) continue;
        if (int err = fs_.write(file, "+" + c))
          throw_errno("unable to enable controller '" + c + "' in '" + file + "'", err);
        if (it.exists) undo_.push_back({file, "-" + c});
      }
    }
    // 3. settings, by rank over the whole tree (cpuset.cpus of every cgroup
    // before any partition, cgroup.max.* once every directory exists).
    struct W {
      int rank;
      size_t item;
      std::string key;
    };
    std::vector<W> ws;
    for (size_t i = 0; i < items_.size(); i++) {
      const auto& it = items_[i];
      bool mine = !it.exists || (o_.mode == CgroupMode::kOverwrite && !it.cg.ancestor() && it.cg.path() != "/");
      if (!mine) continue;
      for (const auto& [k, v] : it.cg.settings()) {
        int r = setting_rank(k);
        if (r > 1 && r < 100) ws.push_back({r, i, k});
      }
    }
    std::stable_sort(ws.begin(), ws.end(), [](const W& a, const W& b) {
      return a.rank != b.rank ? a.rank < b.rank : a.item != b.item ? a.item < b.item : a.key < b.key;
    });
    for (const auto& w : ws) {
      const auto& it = items_[w.item];
      write_setting(it, w.key, it.cg.settings().at(w.key), it.exists);
    }
    if (!missing_.empty()) {
      std::string names;
      for (const auto& m : missing_) names += (names.empty() ? "" : ", ") + m;
      if (!o_.skip_missing) fail("this kernel lacks settings the image has: " + names);
      LOG_WARN("settings not restored, this kernel lacks them: %s", names.c_str());
    }
  } catch (...) {
    rollback();
    throw;
  }
}

void CgroupRestorer::place(pid_t pid, const std::vector<pid_t>& tids) {
  if (!started_ || done_) fail("cgroup restore: place() outside create()..finish()");
  auto pc = proc_cg_.find(static_cast<uint32_t>(pid));
  if (pc != proc_cg_.end()) {
    std::string old = o_.fs_root;
    std::string cur = fs_.cgroup_of(pid, pid);
    if (cur != "/") old += cur;
    std::string file = dir_of(pc->second) + "/cgroup.procs";
    if (int err = fs_.write(file, std::to_string(pid)))
      throw_errno(strf("unable to move pid %d into '%s'", pid, file.c_str()), err);
    moved_.push_back({pid, old + "/cgroup.procs"});
  }
  for (pid_t t : tids) {
    auto tc = thread_cg_.find(static_cast<uint32_t>(t));
    if (tc == thread_cg_.end() || (pc != proc_cg_.end() && tc->second == pc->second)) continue;
    std::string old = o_.fs_root;
    std::string cur = fs_.cgroup_of(pid, t);
    if (cur != "/") old += cur;
    std::string file = dir_of(tc->second) + "/cgroup.threads";
    if (int err = fs_.write(file, std::to_string(t)))
      throw_errno(strf("unable to move thread %d of pid %d into '%s'", t, pid, file.c_str()), err);
    moved_.push_back({t, old + "/cgroup.threads"});
  }
}

std::vector<pid_t> CgroupRestorer::recorded_pids() const {
  std::vector<pid_t> out;
  for (const auto& [p, cg] : proc_cg_) out.push_back(static_cast<pid_t>(p));
  return out;
}

void CgroupRestorer::finish() {
  if (!started_ || done_) fail("cgroup restore: finish() without create()");
  std::vector<std::string> frozen;
  for (const auto& it : items_) {
    const std::string* f = setting(it.cg, "cgroup.freeze");
    bool mine = !it.exists || (o_.mode == CgroupMode::kOverwrite && !it.cg.ancestor() && it.cg.path() != "/");
    if (!f || *f != "1" || !mine) continue;
    std::string file = dir_of(it.cg.path()) + "/cgroup.freeze";
    if (int err = fs_.write(file, "1")) throw_errno("unable to freeze '" + file + "'", err);
    frozen.push_back(dir_of(it.cg.path()));
  }
  // Freezing is asynchronous; tell when it is done (cgroup.events "frozen 1").
  for (const auto& dir : frozen)
    for (int i = 0; i < 200; i++) {
      std::string ev;
      if (fs_.read(dir + "/cgroup.events", &ev) != 0 || ev.find("frozen 1") != std::string::npos) break;
      if (i == 199) LOG_WARN("cgroup '%s' is not frozen after 2 s", dir.c_str());
      usleep(10000);
    }
  done_ = true;
  LOG_INFO("restored %zu cgroups (%zu created), %zu tasks moved, %zu frozen", items_.size(), created_.size(),
           moved_.size(), frozen.size());
}

void CgroupRestorer::rollback() {
  if (!started_ || done_) return;
  done_ = true;
  for (auto m = moved_.rbegin(); m != moved_.rend(); ++m)
    if (int err = fs_.write(m->second, std::to_string(m->first)))
      LOG_DEBUG("rollback: moving %d back to '%s': %s", m->first, m->second.c_str(), std::strerror(err));
  for (auto d = created_.rbegin(); d != created_.rend(); ++d) {
    int err = 0;
    // Tasks killed by a failing restore leave their cgroup a moment later.
    for (int i = 0; i < 200; i++) {
      err = fs_.remove_dir(*d);
      if (err != EBUSY) break;
      usleep(10000);
    }
    if (err && err != ENOENT) LOG_WARN("rollback: unable to remove cgroup '%s': %s", d->c_str(), std::strerror(err));
  }
  for (auto u = undo_.rbegin(); u != undo_.rend(); ++u) {
    auto ls = lines(u->value);
    if (ls.empty()) ls.push_back("\n");
    for (const auto& l : ls)
      if (int err = fs_.write(u->file, l))
        LOG_WARN("rollback: unable to write '%s' back to '%s': %s", l.c_str(), u->file.c_str(), std::strerror(err));
  }
  LOG_DEBUG("rollback: %zu tasks moved back, %zu cgroups removed, %zu settings put back", moved_.size(),
            created_.size(), undo_.size());
  moved_.clear();
  created_.clear();
  undo_.clear();
}

}  // namespace ck
