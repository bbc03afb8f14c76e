// cgroup v2 filesystem access and the dump side.  See cgroup.h.
#include "cgroup.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include "error.h"
#include "fd.h"
#include "log.h"

CK_LOG_MODULE("cgroup");

namespace ck {

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

namespace {
constexpr size_t kMaxValue = 1 << 20;  // a cgroup file larger than this is refused

std::string join(const std::string& root, const std::string& cg) {
  if (cg == "/") return root;
  return root + cg;
}
}  // namespace

// ---- the real filesystem -------------------------------------------------------

bool CgroupFs::is_dir(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::vector<CgroupEntry> CgroupFs::list(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) throw_errno("unable to open '" + dir + "'");
  std::vector<CgroupEntry> out;
  while (struct dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    struct stat st;
    if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    CgroupEntry c;
    c.name = e->d_name;
    c.dir = S_ISDIR(st.st_mode);
    c.readable = st.st_mode & S_IRUSR;
    c.writable = st.st_mode & S_IWUSR;
    out.push_back(std::move(c));
  }
  ::closedir(d);
  std::sort(out.begin(), out.end(), [](const CgroupEntry& a, const CgroupEntry& b) { return a.name < b.name; });
  return out;
}

int CgroupFs::read(const std::string& path, std::string* out) {
  ScopedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return errno;
  out->clear();
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    if (n == 0) break;
    out->append(buf, static_cast<size_t>(n));
    if (out->size() > kMaxValue) return EFBIG;
  }
  return 0;
}

int CgroupFs::write(const std::string& path, const std::string& value) {
  ScopedFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd.valid()) return errno;
  ssize_t n;
  do n = ::write(fd.get(), value.data(), value.size());
  while (n < 0 && errno == EINTR);
  if (n < 0) return errno;
  return static_cast<size_t>(n) == value.size() ? 0 : EIO;
}

int CgroupFs::make_dir(const std::string& path) { return ::mkdir(path.c_str(), 0755) == 0 ? 0 : errno; }
int CgroupFs::remove_dir(const std::string& path) { return ::rmdir(path.c_str()) == 0 ? 0 : errno; }

pid_t CgroupFs::tgid_of(pid_t tid) {
  std::string s;
  if (read(strf("/proc/%d/status", tid), &s) != 0) return 0;
  auto p = s.find("\nTgid:");
  if (p == std::string::npos) return 0;
  return static_cast<pid_t>(std::atoi(s.c_str() + p + 6));
}

std::string CgroupFs::cgroup_of(pid_t pid, pid_t tid) {
  std::string path = strf("/proc/%d/task/%d/cgroup", pid, tid), s;
  if (int err = read(path, &s)) throw_errno("unable to read '" + path + "'", err);
  std::istringstream in(s);
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("0::", 0) == 0) {
      std::string cg = line.substr(3);
      // A path outside the reader's cgroup namespace shows as "/../x".
      if (cg.empty() || cg[0] != '/' || cg.find("/..") != std::string::npos)
        fail(strf("thread %d of pid %d: cgroup '%s' is outside this cgroup namespace", tid, pid, cg.c_str()));
      if (cg.size() > 10 && cg.compare(cg.size() - 10, 10, " (deleted)") == 0)
        fail(strf("thread %d of pid %d: its cgroup '%s' was removed", tid, pid, cg.c_str()));
      return cg;
    }
  fail(strf("thread %d of pid %d: no cgroup v2 line in '%s'", tid, pid, path.c_str()));
}

CgroupFs& real_cgroup_fs() {
  static CgroupFs fs;
  return fs;
}

std::vector<std::string> cgroup_v1_lines(const std::string& text) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at < text.size()) {
    size_t nl = text.find('\n', at);
    if (nl == std::string::npos) nl = text.size();
    std::string line = text.substr(at, nl - at);
    at = nl + 1;
    size_t a = line.find(':');
    if (a != std::string::npos && a + 1 < line.size() && line[a + 1] != ':') out.push_back(line);
  }
  return out;
}

std::string default_cgroup_root() {
  if (const char* e = std::getenv("CK_CGROUP_ROOT"); e && *e) return e;
  for (const char* p : {"/sys/fs/cgroup/unified", "/sys/fs/cgroup"}) {
    struct statfs sf;
    if (::statfs(p, &sf) == 0 && sf.f_type == CGROUP2_SUPER_MAGIC) return p;
  }
  fail("no cgroup2 filesystem at '/sys/fs/cgroup/unified' or '/sys/fs/cgroup' (set CK_CGROUP_ROOT)");
}

// ---- which files are settings, and in what order they go back -----------------------

bool is_setting_file(const std::string& n) {
  static const char* const kNot[] = {"cgroup.procs",   "cgroup.threads",  "cgroup.kill",     "cgroup.events",
                                     "cgroup.stat",    "cgroup.controllers", "memory.reclaim", "memory.peak",
                                     "memory.swap.peak", "cpu.weight.nice", "cpu.pressure",   "io.pressure",
                                     "memory.pressure", "irq.pressure"};
  for (const char* k : kNot)
    if (n == k) return false;
  return n.find('.') != std::string::npos;
}

int setting_rank(const std::string& n) {
  if (n == "cgroup.type") return 0;
  if (n == "cgroup.subtree_control") return 1;
  if (n == "cpuset.cpus" || n == "cpuset.mems") return 10;
  if (n == "cpuset.cpus.exclusive") return 11;
  if (n == "cpuset.cpus.partition") return 12;
  if (n == "cpu.max") return 20;
  if (n == "cpu.max.burst") return 21;
  if (n == "cgroup.max.depth" || n == "cgroup.max.descendants") return 90;
  if (n == "cgroup.freeze") return 100;
  return 30;
}

// ---- dump -----------------------------------------------------------------------------

CgroupDumper::CgroupDumper(CgroupFs& fs, std::string fs_root) : fs_(fs), root_(std::move(fs_root)) {}

void CgroupDumper::add_task(pid_t pid, const std::vector<pid_t>& tids) {
  std::string main = fs_.cgroup_of(pid, pid);
  procs_[main].insert(static_cast<uint32_t>(pid));
  with_tasks_.emplace(main, false);
  for (pid_t t : tids) {
    std::string cg = t == pid ? main : fs_.cgroup_of(pid, t);
    threads_[cg].insert(static_cast<uint32_t>(t));
    with_tasks_.emplace(cg, false);
  }
  if (std::find(tids.begin(), tids.end(), pid) == tids.end()) threads_[main].insert(static_cast<uint32_t>(pid));
}

void CgroupDumper::add_subtree(const std::string& path) {
  std::string p = path.empty() ? "/" : path;
  if (p[0] != '/') p = "/" + p;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  if (p.find("/..") != std::string::npos || p.find("/./") != std::string::npos)
    usage_error("cgroup '" + path + "' is not a plain cgroup path");
  if (!fs_.is_dir(join(root_, p))) fail("no cgroup '" + p + "' under '" + root_ + "'");
  with_tasks_[p] = true;
}

namespace {
void strip_newline(std::string* s) {
  while (!s->empty() && (s->back() == '\n' || s->back() == ' ')) s->pop_back();
}
std::vector<uint32_t> parse_ids(const std::string& s) {
  std::vector<uint32_t> out;
  std::istringstream in(s);
  uint32_t v;
  while (in >> v) out.push_back(v);
  return out;
}
}  // namespace

std::vector<pb::Cgroup> CgroupDumper::collect() {
  // Members: every subtree (a task's cgroup that is the root stays alone: its
  // subtree is the whole machine).  Ancestors: the rest of the way up.
  std::map<std::string, bool> members;  // path -> record its tasks from cgroup.threads
  std::vector<std::pair<std::string, bool>> todo(with_tasks_.begin(), with_tasks_.end());
  while (!todo.empty()) {
    auto [p, tasks] = todo.back();
    todo.pop_back();
    auto& m = members[p];
    m = m || tasks;
    if (p == "/" && !tasks) continue;
    std::string dir = join(root_, p);
    std::vector<CgroupEntry> ents;
    try {
      ents = fs_.list(dir);
    } catch (const Error& e) {
      throw e.wrap("dumping cgroup '" + p + "'");
    }
    for (auto& e : ents)
      if (e.dir) todo.emplace_back(p == "/" ? "/" + e.name : p + "/" + e.name, tasks);
  }
  std::set<std::string> ancestors;
  for (auto& [p, t] : members) {
    std::string a = p;
    while (a != "/") {
      a = a.substr(0, std::max<size_t>(a.rfind('/'), 1));
      if (!members.count(a)) ancestors.insert(a);
    }
  }
  std::vector<std::string> all;
  for (auto& [p, t] : members) all.push_back(p);
  all.insert(all.end(), ancestors.begin(), ancestors.end());
  auto depth = [](const std::string& p) { return p == "/" ? 0 : std::count(p.begin(), p.end(), '/'); };
  std::sort(all.begin(), all.end(), [&](const std::string& a, const std::string& b) {
    auto da = depth(a), db = depth(b);
    return da != db ? da < db : a < b;
  });

  std::vector<pb::Cgroup> out;
  for (const auto& p : all) {
    pb::Cgroup cg;
    cg.set_path(p);
    cg.set_ancestor(ancestors.count(p) > 0);
    std::string dir = join(root_, p);
    std::vector<CgroupEntry> ents;
    try {
      ents = fs_.list(dir);
    } catch (const Error& e) {
      throw e.wrap("dumping cgroup '" + p + "'");
    }
    for (const auto& e : ents) {
      if (e.dir || !e.readable || !e.writable || !is_setting_file(e.name)) continue;
      // The root cgroup cannot be recreated: only what it enables matters.
      if (p == "/" && e.name != "cgroup.subtree_control") continue;
      std::string v;
      int err = fs_.read(dir + "/" + e.name, &v);
      if (err == ENOENT) throw_errno("dumping cgroup '" + p + "': unable to read '" + dir + "/" + e.name + "'", err);
      if (err) {
        LOG_WARN("cgroup '%s': '%s' not kept: %s", p.c_str(), e.name.c_str(), std::strerror(err));
        continue;
      }
      strip_newline(&v);
      (*cg.mutable_settings())[e.name] = v;
    }
    auto m = members.find(p);
    if (m != members.end() && m->second) {
      std::string s;
      if (int err = fs_.read(dir + "/cgroup.threads", &s))
        throw_errno("dumping cgroup '" + p + "': unable to read '" + dir + "/cgroup.threads'", err);
      for (uint32_t t : parse_ids(s)) {
        cg.add_threads(t);
        if (fs_.tgid_of(static_cast<pid_t>(t)) == static_cast<pid_t>(t)) cg.add_procs(t);
      }
    } else {
      for (uint32_t t : procs_[p]) cg.add_procs(t);
      for (uint32_t t : threads_[p]) cg.add_threads(t);
    }
    LOG_DEBUG("cgroup %s: %d settings, %d procs, %d threads%s", p.c_str(), cg.settings_size(), cg.procs_size(),
              cg.threads_size(), cg.ancestor() ? " (ancestor)" : "");
    out.push_back(std::move(cg));
  }
  return out;
}

}  // namespace ck
