// cgroup dump and restore against a fake cgroup2 tree in a temp directory.
//
// This machine's cgroup v2 can enable only hugetlb, so the memory, cpu,
// cpuset, io and pids logic is tested here.  FakeFs keeps the tree as plain
// files and applies the kernel's rules on the operations ck uses: a
// controller's files exist only while the parent's cgroup.subtree_control
// enables it; a controller can be enabled only if the cgroup's
// cgroup.controllers has it; invalid values fail with EINVAL (cpu.max.burst
// above the quota, cpuset.cpus outside the parent's, a partition root under
// a non-partition parent, unknown io devices give ENODEV); mkdir honours
// cgroup.max.depth and cgroup.max.descendants (EAGAIN); rmdir of a cgroup
// with children or tasks gives EBUSY; a domain cgroup with controllers
// enabled takes no process (EBUSY); only "threaded" can be written to
// cgroup.type.
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "cgroup.h"
#include "error.h"
#include "fd.h"
#include "test.h"

namespace {

using ck::pb::Cgroup;

std::vector<std::string> split_ws(const std::string& s) {
  std::vector<std::string> v;
  std::istringstream in(s);
  std::string w;
  while (in >> w) v.push_back(w);
  return v;
}
std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}
bool is_num(const std::string& s) { return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos; }
bool max_or_num(const std::string& s) { return s == "max" || is_num(s); }

std::set<int> cpu_list(const std::string& s, bool* ok) {
  std::set<int> out;
  *ok = true;
  std::stringstream in(s);
  std::string part;
  while (std::getline(in, part, ',')) {
    part = trim(part);
    if (part.empty()) continue;
    auto d = part.find('-');
    std::string a = part.substr(0, d), b = d == std::string::npos ? a : part.substr(d + 1);
    if (!is_num(a) || !is_num(b) || std::atoi(a.c_str()) > std::atoi(b.c_str())) {
      *ok = false;
      return out;
    }
    for (int i = std::atoi(a.c_str()); i <= std::atoi(b.c_str()); i++) out.insert(i);
  }
  return out;
}

struct CtlFile {
  const char* name;
  const char* value;
  int mode;
};
const std::map<std::string, std::vector<CtlFile>>& controllers() {
  static const std::map<std::string, std::vector<CtlFile>> c = {
      {"memory",
       {{"memory.min", "0", 0644}, {"memory.low", "0", 0644}, {"memory.high", "max", 0644},
        {"memory.max", "max", 0644}, {"memory.swap.max", "max", 0644}, {"memory.swap.high", "max", 0644},
        {"memory.zswap.max", "max", 0644}, {"memory.oom.group", "0", 0644}, {"memory.current", "0", 0444},
        {"memory.peak", "0", 0644}, {"memory.reclaim", "", 0200}, {"memory.pressure", "", 0644}}},
      {"cpu",
       {{"cpu.weight", "100", 0644}, {"cpu.weight.nice", "0", 0644}, {"cpu.max", "max 100000", 0644},
        {"cpu.max.burst", "0", 0644}, {"cpu.idle", "0", 0644}, {"cpu.uclamp.min", "0.00", 0644},
        {"cpu.uclamp.max", "max", 0644}}},
      {"cpuset",
       {{"cpuset.cpus", "", 0644}, {"cpuset.mems", "", 0644}, {"cpuset.cpus.partition", "member", 0644},
        {"cpuset.cpus.effective", "", 0444}}},
      {"io", {{"io.weight", "default 100", 0644}, {"io.max", "", 0644}, {"io.latency", "", 0644}, {"io.stat", "", 0444}}},
      {"pids", {{"pids.max", "max", 0644}, {"pids.current", "0", 0444}}},
      {"hugetlb",
       {{"hugetlb.2MB.max", "max", 0644}, {"hugetlb.2MB.rsvd.max", "max", 0644}, {"hugetlb.2MB.current", "0", 0444}}},
  };
  return c;
}
const std::set<std::string> kThreadedCtl = {"cpu", "cpuset", "pids"};

class FakeFs : public ck::CgroupFs {
 public:
  explicit FakeFs(const std::string& available = "cpu cpuset hugetlb io memory pids") {
    char tmpl[] = "/tmp/ck-cgfake.XXXXXX";
    root_ = ::mkdtemp(tmpl);
    put(root_ + "/cgroup.controllers", available, 0444);
    put(root_ + "/cgroup.subtree_control", "", 0644);
    put(root_ + "/cgroup.procs", "", 0644);
    put(root_ + "/cgroup.threads", "", 0644);
    put(root_ + "/cgroup.max.depth", "max", 0644);
    put(root_ + "/cgroup.max.descendants", "max", 0644);
    put(root_ + "/cpuset.cpus.effective", "0-7", 0444);
  }
  ~FakeFs() override { std::system(("rm -rf '" + root_ + "'").c_str()); }
  const std::string& root() const { return root_; }
  std::string dir(const std::string& cg) const { return cg == "/" ? root_ : root_ + cg; }

  // What a user does to the tree (asserting success).
  void mk(const std::string& cg) { CHECK_EQ(make_dir(dir(cg)), 0); }
  void set(const std::string& cg, const std::string& file, const std::string& v) {
    int e = write(dir(cg) + "/" + file, v);
    if (e) std::printf("#   fake: writing '%s' to %s/%s: %s\n", v.c_str(), cg.c_str(), file.c_str(), strerror(e));
    CHECK_EQ(e, 0);
  }
  std::string get(const std::string& cg, const std::string& file) {
    std::string s;
    if (read(dir(cg) + "/" + file, &s)) return "<none>";
    return trim(s);
  }
  void spawn(pid_t pid, const std::vector<pid_t>& tids, const std::string& cg) {
    for (pid_t t : tids) {
      tgid_[t] = pid;
      where_[t] = cg;
    }
    refresh();
  }

  // Every file (but counters) under cg: path -> contents.  Task lists come
  // from where_, so the snapshot covers placement too.
  std::map<std::string, std::string> snapshot(const std::string& cg = "/") {
    std::map<std::string, std::string> out;
    walk(dir(cg), cg, &out);
    return out;
  }

  // ---- CgroupFs ----
  pid_t tgid_of(pid_t tid) override { return tgid_.count(tid) ? tgid_[tid] : 0; }
  std::string cgroup_of(pid_t pid, pid_t tid) override {
    if (!where_.count(tid)) ck::fail(ck::strf("fake: no task %d", tid));
    return where_[tid];
  }
  int make_dir(const std::string& path) override {
    std::string cg = cg_of(path), par = parent(cg);
    if (cg == "/" || !is_dir(dir(par))) return ENOENT;
    if (is_dir(path)) return EEXIST;
    // Limits of every ancestor.
    int lvl = 1;
    for (std::string a = par;; a = parent(a), lvl++) {
      std::string md = get(a, "cgroup.max.depth"), mx = get(a, "cgroup.max.descendants");
      if (md != "max" && lvl > std::atoi(md.c_str())) return EAGAIN;
      if (mx != "max" && descendants(a) + 1 > std::atoi(mx.c_str())) return EAGAIN;
      if (a == "/") break;
    }
    if (::mkdir(path.c_str(), 0755)) return errno;
    std::string ptype = get(par, "cgroup.type");
    bool under_threaded = par != "/" && ptype == "threaded";
    put(path + "/cgroup.type", under_threaded ? "domain invalid" : "domain", 0644);
    put(path + "/cgroup.controllers", get(par, "cgroup.subtree_control"), 0444);
    put(path + "/cgroup.subtree_control", "", 0644);
    put(path + "/cgroup.freeze", "0", 0644);
    put(path + "/cgroup.events", "populated 0\nfrozen 0", 0444);
    put(path + "/cgroup.max.depth", "max", 0644);
    put(path + "/cgroup.max.descendants", "max", 0644);
    put(path + "/cgroup.procs", "", 0644);
    put(path + "/cgroup.threads", "", 0644);
    put(path + "/cgroup.kill", "", 0200);
    for (const auto& c : split_ws(get(par, "cgroup.subtree_control"))) add_files(path, c);
    return 0;
  }
  int remove_dir(const std::string& path) override {
    std::string cg = cg_of(path);
    if (!is_dir(path)) return ENOENT;
    for (const auto& e : list(path))
      if (e.dir) return EBUSY;
    for (const auto& [t, w] : where_)
      if (w == cg) return EBUSY;
    for (const auto& e : list(path)) ::unlink((path + "/" + e.name).c_str());
    return ::rmdir(path.c_str()) ? errno : 0;
  }
  int write(const std::string& path, const std::string& value) override {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) return ENOENT;
    if (!(st.st_mode & S_IWUSR)) return EACCES;
    std::string file = path.substr(path.rfind('/') + 1), cgdir = path.substr(0, path.rfind('/'));
    std::string cg = cg_of(cgdir), v = trim(value);
    writes_++;
    if (file == "cgroup.subtree_control") return subtree(cg, v);
    if (file == "cgroup.type") {
      if (v != "threaded") return EINVAL;
      std::string par = parent(cg), pt = get(par, "cgroup.type");
      if (par != "/" && pt == "domain invalid") return EOPNOTSUPP;
      for (const auto& c : split_ws(get(cg, "cgroup.subtree_control")))
        if (!kThreadedCtl.count(c)) return EOPNOTSUPP;
      if (par != "/" && pt == "domain") put(dir(par) + "/cgroup.type", "domain threaded", 0644);
      put(path, "threaded", 0644);
      return 0;
    }
    if (file == "cgroup.procs" || file == "cgroup.threads") {
      if (!is_num(v)) return EINVAL;
      pid_t id = std::atoi(v.c_str());
      if (!where_.count(id)) return ESRCH;
      std::string type = get(cg, "cgroup.type");
      if (cg != "/" && type == "domain" && !get(cg, "cgroup.subtree_control").empty()) return EBUSY;
      if (type == "domain invalid") return EOPNOTSUPP;
      for (auto& [t, g] : tgid_)
        if (file == "cgroup.procs" ? g == tgid_[id] : t == id) where_[t] = cg;
      refresh();
      return 0;
    }
    if (file == "cgroup.freeze") {
      if (v != "0" && v != "1") return EINVAL;
      put(path, v, 0644);
      put(cgdir + "/cgroup.events", std::string("populated 0\nfrozen ") + v, 0444);
      return 0;
    }
    int e = check(cg, file, v);
    if (e) return e;
    if (file == "io.max" || file == "io.weight" || file == "io.latency") {  // keyed lines, merged
      std::map<std::string, std::string> rows;
      std::string cur = get(cg, file);
      std::istringstream in(cur);
      std::string l;
      while (std::getline(in, l))
        if (!l.empty()) rows[l.substr(0, l.find(' '))] = l;
      rows[v.substr(0, v.find(' '))] = v;
      std::string out;
      for (auto& [k, r] : rows) out += (out.empty() ? "" : "\n") + r;
      put(path, out, 0644);
      return 0;
    }
    if (file.rfind("hugetlb.", 0) == 0 && is_num(v))  // rounded down to whole huge pages, as the kernel does
      v = std::to_string(std::atoll(v.c_str()) / (2 << 20) * (2 << 20));
    put(path, v, 0644);
    return 0;
  }
  int writes() const { return writes_; }

 private:
  static std::string parent(const std::string& cg) {
    size_t s = cg.rfind('/');
    return s == 0 ? "/" : cg.substr(0, s);
  }
  std::string cg_of(const std::string& path) const {
    return path.size() == root_.size() ? "/" : path.substr(root_.size());
  }
  void put(const std::string& path, const std::string& v, int mode) {
    std::ofstream(path, std::ios::trunc) << v << (v.empty() ? "" : "\n");
    ::chmod(path.c_str(), static_cast<mode_t>(mode));
  }
  int descendants(const std::string& cg) {
    int n = 0;
    for (const auto& e : list(dir(cg)))
      if (e.dir) n += 1 + descendants(cg == "/" ? "/" + e.name : cg + "/" + e.name);
    return n;
  }
  void add_files(const std::string& path, const std::string& c) {
    for (const auto& f : controllers().at(c)) put(path + "/" + f.name, f.value, f.mode);
  }
  int subtree(const std::string& cg, const std::string& v) {
    auto avail = split_ws(get(cg, "cgroup.controllers"));
    auto have = split_ws(get(cg, "cgroup.subtree_control"));
    std::string type = get(cg, "cgroup.type");
    for (const auto& tok : split_ws(v)) {
      if (tok.size() < 2 || (tok[0] != '+' && tok[0] != '-')) return EINVAL;
      std::string c = tok.substr(1);
      if (!controllers().count(c) || std::find(avail.begin(), avail.end(), c) == avail.end()) return ENOENT;
      bool on = std::find(have.begin(), have.end(), c) != have.end();
      std::vector<std::string> kids;
      for (const auto& e : list(dir(cg)))
        if (e.dir) kids.push_back(dir(cg) + "/" + e.name);
      if (tok[0] == '+' && !on) {
        if (type == "threaded" && !kThreadedCtl.count(c)) return EOPNOTSUPP;
        if (cg != "/" && type == "domain")
          for (const auto& [t, w] : where_)
            if (w == cg) return EBUSY;  // no internal processes
        have.push_back(c);
        for (const auto& k : kids) add_files(k, c);
      } else if (tok[0] == '-' && on) {
        for (const auto& k : kids)
          for (const auto& s : split_ws(get(cg_of(k), "cgroup.subtree_control")))
            if (s == c) return EBUSY;
        have.erase(std::find(have.begin(), have.end(), c));
        for (const auto& k : kids)
          for (const auto& f : controllers().at(c)) ::unlink((k + "/" + f.name).c_str());
      }
    }
    std::sort(have.begin(), have.end());
    std::string s;
    for (const auto& c : have) s += (s.empty() ? "" : " ") + c;
    put(dir(cg) + "/cgroup.subtree_control", s, 0644);
    for (const auto& e : list(dir(cg)))
      if (e.dir) put(dir(cg) + "/" + e.name + "/cgroup.controllers", s, 0444);
    return 0;
  }
  std::set<int> effective_cpus(const std::string& cg) {
    if (cg == "/") {
      bool ok;
      return cpu_list(get("/", "cpuset.cpus.effective"), &ok);
    }
    bool ok;
    auto own = cpu_list(get(cg, "cpuset.cpus"), &ok);
    return own.empty() ? effective_cpus(parent(cg)) : own;
  }
  int check(const std::string& cg, const std::string& f, const std::string& v) {
    if (f == "memory.oom.group" || f == "cpu.idle") return v == "0" || v == "1" ? 0 : EINVAL;
    if (f.rfind("memory.", 0) == 0 || f == "pids.max" || f.rfind("hugetlb.", 0) == 0 || f.rfind("cgroup.max.", 0) == 0)
      return max_or_num(v) ? 0 : EINVAL;
    if (f == "cpu.weight") return is_num(v) && std::atoi(v.c_str()) >= 1 && std::atoi(v.c_str()) <= 10000 ? 0 : ERANGE;
    if (f == "cpu.max") {
      auto w = split_ws(v);
      if (w.empty() || w.size() > 2 || !max_or_num(w[0])) return EINVAL;
      if (w[0] != "max" && std::atol(w[0].c_str()) < 1000) return EINVAL;
      if (w.size() == 2 && (!is_num(w[1]) || std::atol(w[1].c_str()) < 1000)) return EINVAL;
      std::string quota = w[0], burst = get(cg, "cpu.max.burst");
      if (quota != "max" && std::atol(burst.c_str()) > std::atol(quota.c_str())) return EINVAL;
      return 0;
    }
    if (f == "cpu.max.burst") {
      if (!is_num(v)) return EINVAL;
      std::string quota = split_ws(get(cg, "cpu.max"))[0];
      return quota != "max" && std::atol(v.c_str()) > std::atol(quota.c_str()) ? EINVAL : 0;
    }
    if (f == "cpu.uclamp.min" || f == "cpu.uclamp.max") return 0;
    if (f == "cpuset.cpus" || f == "cpuset.mems") {
      bool ok;
      auto want = cpu_list(v, &ok);
      if (!ok) return EINVAL;
      if (f == "cpuset.mems") return want.size() <= 1 && (want.empty() || *want.begin() == 0) ? 0 : EINVAL;
      auto par = effective_cpus(parent(cg));
      for (int c : want)
        if (!par.count(c)) return EINVAL;
      return 0;
    }
    if (f == "cpuset.cpus.partition") {
      if (v == "member") return 0;
      if (v != "root" && v != "isolated") return EINVAL;
      std::string par = parent(cg);
      if (get(cg, "cpuset.cpus").empty()) return EINVAL;
      if (par != "/" && get(par, "cpuset.cpus.partition") != "root") return EINVAL;
      return 0;
    }
    if (f == "io.max" || f == "io.latency" || f == "io.weight") {
      auto w = split_ws(v);
      if (w.size() < 2) return EINVAL;
      if (f == "io.weight" && w[0] == "default") return is_num(w[1]) ? 0 : EINVAL;
      if (w[0] != "8:0" && w[0] != "8:16") return ENODEV;
      return 0;
    }
    return 0;
  }
  void refresh() {  // cgroup.procs / cgroup.threads from where_
    std::map<std::string, std::set<pid_t>> procs, threads;
    for (auto& [t, cg] : where_) {
      threads[cg].insert(t);
      procs[cg].insert(tgid_[t]);
    }
    std::vector<std::string> dirs{"/"};
    for (size_t i = 0; i < dirs.size(); i++) {
      std::string p, th;
      for (pid_t x : procs[dirs[i]]) p += std::to_string(x) + "\n";
      for (pid_t x : threads[dirs[i]]) th += std::to_string(x) + "\n";
      std::ofstream(dir(dirs[i]) + "/cgroup.procs", std::ios::trunc) << p;
      std::ofstream(dir(dirs[i]) + "/cgroup.threads", std::ios::trunc) << th;
      for (const auto& e : list(dir(dirs[i])))
        if (e.dir) dirs.push_back(dirs[i] == "/" ? "/" + e.name : dirs[i] + "/" + e.name);
    }
  }
  void walk(const std::string& d, const std::string& cg, std::map<std::string, std::string>* out) {
    for (const auto& e : list(d)) {
      std::string c = cg == "/" ? "/" + e.name : cg + "/" + e.name;
      if (e.dir) {
        (*out)[c + "/"] = "dir";
        walk(d + "/" + e.name, c, out);
      } else if (e.readable) {
        std::string s;
        read(d + "/" + e.name, &s);
        (*out)[c] = s;
      }
    }
  }

  std::string root_;
  std::map<pid_t, pid_t> tgid_;
  std::map<pid_t, std::string> where_;
  int writes_ = 0;
};

// The tree most tests start from: every controller, a partition, a threaded
// subtree, limits that are below the number of cgroups they cover, a
// frozen cgroup, tasks and a thread elsewhere than its process.
void build(FakeFs& fs) {
  fs.set("/", "cgroup.subtree_control", "+memory +cpu +cpuset +io +pids +hugetlb");
  fs.mk("/ck");
  fs.set("/ck", "cgroup.subtree_control", "+memory +cpu +cpuset +io +pids +hugetlb");
  fs.set("/ck", "cpuset.cpus", "0-5");
  fs.set("/ck", "cpuset.mems", "0");
  fs.set("/ck", "cpuset.cpus.partition", "root");
  fs.mk("/ck/a");
  fs.set("/ck/a", "memory.max", "104857600");
  fs.set("/ck/a", "memory.high", "94371840");
  fs.set("/ck/a", "memory.low", "1048576");
  fs.set("/ck/a", "memory.min", "4096");
  fs.set("/ck/a", "memory.swap.max", "0");
  fs.set("/ck/a", "memory.oom.group", "1");
  fs.set("/ck/a", "cpu.weight", "250");
  fs.set("/ck/a", "cpu.max", "50000 100000");
  fs.set("/ck/a", "cpu.max.burst", "20000");
  fs.set("/ck/a", "cpu.uclamp.min", "10.00");
  fs.set("/ck/a", "cpuset.cpus", "0-3");
  fs.set("/ck/a", "cpuset.cpus.partition", "root");
  fs.set("/ck/a", "io.weight", "default 200");
  fs.set("/ck/a", "io.weight", "8:0 300");
  fs.set("/ck/a", "io.max", "8:0 rbps=1048576 wbps=max riops=max wiops=max");
  fs.set("/ck/a", "io.max", "8:16 rbps=max wbps=2097152 riops=max wiops=max");
  fs.set("/ck/a", "io.latency", "8:0 target=10000");
  fs.set("/ck/a", "pids.max", "50");
  fs.set("/ck/a", "hugetlb.2MB.max", "4194304");
  fs.mk("/ck/d");
  fs.set("/ck/d", "pids.max", "20");
  fs.mk("/ck/d/t");
  fs.set("/ck/d/t", "cgroup.type", "threaded");
  fs.set("/ck/d", "cgroup.subtree_control", "+cpu +pids");
  fs.set("/ck/d/t", "cpu.weight", "42");
  fs.mk("/ck/b");
  fs.mk("/ck/b/c");
  fs.mk("/ck/b/c2");
  fs.set("/ck/b", "cgroup.max.descendants", "1");  // lowered below what exists: allowed
  fs.set("/ck/b/c", "cgroup.max.depth", "0");
  fs.spawn(100, {100, 101, 102}, "/");
  fs.set("/ck/d", "cgroup.procs", "100");
  fs.set("/ck/d/t", "cgroup.threads", "101");
  fs.spawn(200, {200}, "/");
  fs.set("/ck/a", "cgroup.procs", "200");
  fs.spawn(300, {300}, "/");
  fs.set("/ck/b/c", "cgroup.procs", "300");
  fs.set("/ck/b", "cgroup.freeze", "1");
}

// Moves every task to the root and removes /ck, bottom-up.
void destroy(FakeFs& fs) {
  for (pid_t p : {100, 200, 300}) fs.set("/", "cgroup.procs", std::to_string(p));
  for (const char* cg : {"/ck/b/c2", "/ck/b/c", "/ck/b", "/ck/d/t", "/ck/d", "/ck/a", "/ck"})
    CHECK_EQ(fs.remove_dir(fs.dir(cg)), 0);
}

std::vector<Cgroup> dump_subtree(FakeFs& fs, const std::string& cg) {
  ck::CgroupDumper d(fs, fs.root());
  d.add_subtree(cg);
  return d.collect();
}

ck::CgroupRestoreOptions opts(FakeFs& fs) {
  ck::CgroupRestoreOptions o;
  o.fs_root = fs.root();
  return o;
}

void restore(FakeFs& fs, const std::vector<Cgroup>& cgs, const ck::CgroupRestoreOptions& o) {
  ck::CgroupRestorer r(fs);
  r.plan(cgs, o);
  r.create();
  r.place(100, {100, 101, 102});
  r.place(200, {200});
  r.place(300, {300});
  r.finish();
}

void show_diff(const std::map<std::string, std::string>& a, const std::map<std::string, std::string>& b) {
  for (const auto& [k, v] : a)
    if (!b.count(k) || b.at(k) != v)
      std::printf("#   %s: '%s' then '%s'\n", k.c_str(), trim(v).c_str(), b.count(k) ? trim(b.at(k)).c_str() : "<none>");
  for (const auto& [k, v] : b)
    if (!a.count(k)) std::printf("#   %s: <none> then '%s'\n", k.c_str(), trim(v).c_str());
}

const Cgroup* find(const std::vector<Cgroup>& cgs, const std::string& p) {
  for (const auto& c : cgs)
    if (c.path() == p) return &c;
  return nullptr;
}

}  // namespace

TEST(fake_applies_the_kernel_rules) {
  FakeFs fs;
  fs.mk("/x");
  CHECK_EQ(fs.write(fs.dir("/x") + "/memory.max", "1"), ENOENT);  // not enabled by the parent
  CHECK_EQ(fs.write(fs.dir("/") + "/cgroup.subtree_control", "+nosuch"), ENOENT);
  fs.set("/", "cgroup.subtree_control", "+cpu +memory");
  CHECK_EQ(fs.write(fs.dir("/x") + "/memory.max", "lots"), EINVAL);
  fs.set("/x", "cpu.max", "10000 100000");
  CHECK_EQ(fs.write(fs.dir("/x") + "/cpu.max.burst", "20000"), EINVAL);
  CHECK_EQ(fs.write(fs.dir("/x") + "/cpu.weight", "0"), ERANGE);
  fs.set("/x", "cgroup.max.depth", "0");
  CHECK_EQ(fs.make_dir(fs.dir("/x/y")), EAGAIN);
  CHECK_EQ(fs.remove_dir(fs.dir("/x")), 0);
}

TEST(dump_keeps_settings_types_tasks_and_skips_non_state) {
  FakeFs fs;
  build(fs);
  auto cgs = dump_subtree(fs, "/ck");
  const Cgroup* a = find(cgs, "/ck/a");
  CHECK(a != nullptr);
  if (!a) return;
  CHECK_EQ(cgs.front().path(), "/");  // the root, as an ancestor: parents come first
  CHECK(cgs.front().ancestor());
  CHECK_EQ(cgs.front().settings().size(), 1u);
  CHECK_EQ(a->settings().at("memory.max"), "104857600");
  CHECK_EQ(a->settings().at("io.max"),
           "8:0 rbps=1048576 wbps=max riops=max wiops=max\n8:16 rbps=max wbps=2097152 riops=max wiops=max");
  CHECK_EQ(a->settings().at("cpuset.cpus.partition"), "root");
  CHECK(!a->settings().count("memory.current"));   // read-only
  CHECK(!a->settings().count("memory.reclaim"));   // write-only
  CHECK(!a->settings().count("memory.peak"));      // a reset, not state
  CHECK(!a->settings().count("memory.pressure"));  // PSI trigger
  CHECK(!a->settings().count("cpu.weight.nice"));  // alias of cpu.weight
  CHECK(!a->settings().count("cgroup.procs"));
  CHECK_EQ(a->procs_size(), 1);
  const Cgroup* d = find(cgs, "/ck/d");
  const Cgroup* t = find(cgs, "/ck/d/t");
  CHECK(d && t);
  if (!d || !t) return;
  CHECK_EQ(d->settings().at("cgroup.type"), "domain threaded");
  CHECK_EQ(t->settings().at("cgroup.type"), "threaded");
  CHECK_EQ(d->procs_size(), 1);
  CHECK_EQ(d->threads_size(), 2);  // 100 and 102
  CHECK_EQ(t->procs_size(), 0);
  CHECK_EQ(t->threads_size(), 1);
  CHECK_EQ(t->threads(0), 101u);
  CHECK_EQ(find(cgs, "/ck/b")->settings().at("cgroup.freeze"), "1");
}

TEST(dump_of_tasks_takes_their_subtrees_and_ancestors_only) {
  FakeFs fs;
  build(fs);
  ck::CgroupDumper d(fs, fs.root());
  d.add_task(100, {100, 101, 102});
  auto cgs = d.collect();
  std::vector<std::string> paths;
  for (const auto& c : cgs) paths.push_back(c.path() + (c.ancestor() ? "(a)" : ""));
  std::string all;
  for (const auto& p : paths) all += p + " ";
  CHECK_EQ(all, "/(a) /ck(a) /ck/d /ck/d/t ");
  CHECK_EQ(find(cgs, "/ck/d/t")->threads(0), 101u);
}

TEST(round_trip_every_controller_file_by_file) {
  FakeFs fs;
  build(fs);
  auto before = fs.snapshot("/ck");
  auto cgs = dump_subtree(fs, "/ck");
  destroy(fs);
  CHECK(!fs.is_dir(fs.dir("/ck")));
  restore(fs, cgs, opts(fs));
  auto after = fs.snapshot("/ck");
  CHECK(before == after);
  if (before != after) show_diff(before, after);
  CHECK_EQ(fs.get("/ck/b", "cgroup.freeze"), "1");
  CHECK_EQ(fs.cgroup_of(100, 101), "/ck/d/t");
  CHECK_EQ(fs.cgroup_of(100, 102), "/ck/d");
}

TEST(restore_under_another_root) {
  FakeFs fs;
  build(fs);
  auto cgs = dump_subtree(fs, "/ck");
  destroy(fs);
  fs.mk("/other");
  auto o = opts(fs);
  o.cgroup_root = "/other";
  {
    // The image's /ck is a cpuset partition root: under a parent that is
    // not one, the kernel refuses it, and so nothing is left.
    auto before = fs.snapshot();
    ck::CgroupRestorer r(fs);
    r.plan(cgs, o);
    CHECK_THROWS(r.create(), 1, "other/ck/cpuset.cpus.partition");
    CHECK(before == fs.snapshot());
  }
  fs.set("/other", "cpuset.cpus", "0-6");
  fs.set("/other", "cpuset.cpus.partition", "root");
  o.cgroup_root = "/other";
  restore(fs, cgs, o);
  CHECK_EQ(fs.get("/other/ck/a", "memory.max"), "104857600");
  CHECK_EQ(fs.get("/other/ck/d/t", "cgroup.type"), "threaded");
  CHECK_EQ(fs.get("/other", "cgroup.subtree_control"), "cpu cpuset hugetlb io memory pids");
  CHECK_EQ(fs.cgroup_of(200, 200), "/other/ck/a");
}

TEST(strict_refuses_a_conflicting_cgroup_by_name_and_changes_nothing) {
  FakeFs fs;
  build(fs);
  auto cgs = dump_subtree(fs, "/ck");
  fs.set("/ck/a", "memory.max", "1048576");
  auto before = fs.snapshot();
  ck::CgroupRestorer r(fs);
  CHECK_THROWS(r.plan(cgs, opts(fs)), 1, "cgroup '/ck/a' exists");
  CHECK_THROWS(r.plan(cgs, opts(fs)), 1, "memory.max is '1048576', the image has '104857600'");
  CHECK(before == fs.snapshot());
}

TEST(strict_reuses_a_matching_cgroup) {
  FakeFs fs;
  build(fs);
  auto cgs = dump_subtree(fs, "/ck");
  ck::CgroupRestorer r(fs);
  r.plan(cgs, opts(fs));
  r.create();
  CHECK_EQ(r.created(), 0u);
  r.finish();
}

TEST(overwrite_writes_and_rollback_puts_back) {
  FakeFs fs;
  build(fs);
  auto cgs = dump_subtree(fs, "/ck");
  fs.set("/ck/a", "memory.max", "1048576");
  fs.set("/ck/a", "pids.max", "7");
  auto before = fs.snapshot();
  auto o = opts(fs);
  o.mode = ck::CgroupMode::kOverwrite;
  {
    ck::CgroupRestorer r(fs);
    r.plan(cgs, o);
    r.create();
    CHECK_EQ(fs.get("/ck/a", "memory.max"), "104857600");
    CHECK_EQ(fs.get("/ck/a", "pids.max"), "50");
    r.rollback();
  }
  CHECK(before == fs.snapshot());
  ck::CgroupRestorer r(fs);
  r.plan(cgs, o);
  r.create();
  r.finish();
  CHECK_EQ(fs.get("/ck/a", "memory.max"), "104857600");
}

TEST(ignore_reuses_as_is) {
  FakeFs fs;
  build(fs);
  auto cgs = dump_subtree(fs, "/ck");
  fs.set("/ck/a", "memory.max", "1048576");
  auto o = opts(fs);
  o.mode = ck::CgroupMode::kIgnore;
  ck::CgroupRestorer r(fs);
  r.plan(cgs, o);
  r.create();
  r.finish();
  CHECK_EQ(fs.get("/ck/a", "memory.max"), "1048576");
}

TEST(rejected_value_rolls_back_everything) {
  FakeFs fs;
  build(fs);
  auto cgs = dump_subtree(fs, "/ck");
  destroy(fs);
  fs.set("/", "cgroup.subtree_control", "-memory -cpu -cpuset -io -pids -hugetlb");
  for (auto& c : cgs)
    if (c.path() == "/ck/d/t") (*c.mutable_settings())["cpu.weight"] = "0";
  auto before = fs.snapshot();
  {
    ck::CgroupRestorer r(fs);
    r.plan(cgs, opts(fs));
    CHECK_THROWS(r.create(), 1, "unable to write '0' to '");
    CHECK_THROWS(r.create(), 1, "create() called twice");
  }
  auto after = fs.snapshot();
  CHECK(before == after);
  if (before != after) show_diff(before, after);
}

TEST(rollback_after_place_moves_tasks_back) {
  FakeFs fs;
  build(fs);
  auto cgs = dump_subtree(fs, "/ck");
  destroy(fs);
  auto before = fs.snapshot();
  {
    ck::CgroupRestorer r(fs);
    r.plan(cgs, opts(fs));
    r.create();
    r.place(100, {100, 101, 102});
    CHECK_EQ(fs.cgroup_of(100, 101), "/ck/d/t");
    // no finish(): the destructor rolls back
  }
  CHECK_EQ(fs.cgroup_of(100, 101), "/");
  CHECK_EQ(fs.cgroup_of(100, 100), "/");
  CHECK(before == fs.snapshot());
}

TEST(a_setting_this_kernel_lacks_is_named) {
  FakeFs fs;
  build(fs);
  auto cgs = dump_subtree(fs, "/ck");
  destroy(fs);
  for (auto& c : cgs)
    if (c.path() == "/ck/a") (*c.mutable_settings())["memory.zswap.writeback"] = "0";
  auto before = fs.snapshot();
  {
    ck::CgroupRestorer r(fs);
    r.plan(cgs, opts(fs));
    CHECK_THROWS(r.create(), 1, "lacks settings the image has: /ck/a: memory.zswap.writeback");
  }
  CHECK(before == fs.snapshot());
  auto o = opts(fs);
  o.skip_missing = true;
  ck::CgroupRestorer r(fs);
  r.plan(cgs, o);
  r.create();
  r.finish();
  CHECK_EQ(r.missing().size(), 1u);
  CHECK_EQ(fs.get("/ck/a", "memory.max"), "104857600");
}

TEST(a_controller_this_kernel_lacks_is_named) {
  FakeFs src;
  build(src);
  auto cgs = dump_subtree(src, "/ck");
  FakeFs dst("cpu cpuset hugetlb memory pids");  // no io
  auto before = dst.snapshot();
  {
    ck::CgroupRestorer r(dst);
    r.plan(cgs, opts(dst));
    CHECK_THROWS(r.create(), 1, "unable to enable controller 'io'");
  }
  CHECK(before == dst.snapshot());
}

TEST(hostile_images_are_bad_input) {
  FakeFs fs;
  auto try_one = [&](const std::string& path, const std::string& key, const char* want) {
    Cgroup c;
    c.set_path(path);
    if (!key.empty()) (*c.mutable_settings())[key] = "1";
    ck::CgroupRestorer r(fs);
    CHECK_THROWS(r.plan({c}, opts(fs)), 3, "");
    (void)want;
  };
  try_one("/../etc", "", "");
  try_one("relative", "", "");
  try_one("/a//b", "", "");
  try_one("/a/.", "", "");
  try_one("/a", "../passwd", "");
  try_one("/a", "cgroup.procs", "");
  try_one("/a", "cgroup.kill", "");
  try_one("/no/parent", "", "");
  Cgroup c;
  c.set_path("/a");
  c.add_procs(5);
  Cgroup d = c;
  d.set_path("/b");
  ck::CgroupRestorer r(fs);
  CHECK_THROWS(r.plan({c, d}, opts(fs)), 3, "pid 5 is in two cgroups");
  CHECK_THROWS(r.plan({c, c}, opts(fs)), 3, "appears twice");
  CHECK(fs.snapshot().size() == FakeFs().snapshot().size());
}

TEST(setting_order) {
  CHECK(ck::setting_rank("cpuset.cpus") < ck::setting_rank("cpuset.cpus.partition"));
  CHECK(ck::setting_rank("cpu.max") < ck::setting_rank("cpu.max.burst"));
  CHECK(ck::setting_rank("memory.max") < ck::setting_rank("cgroup.max.descendants"));
  CHECK(ck::is_setting_file("hugetlb.1GB.rsvd.max"));
  CHECK(!ck::is_setting_file("cgroup.threads"));
}

UNIT_MAIN()
