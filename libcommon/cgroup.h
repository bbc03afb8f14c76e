// cgroup v2: dump a hierarchy (directories, types, controllers, settings,
// freeze state, which task is where) into pb::Cgroup frames, and restore it.
// See man/ck-cgdump.1 and docs/cgroups.md.
//
// Paths.  A pb::Cgroup path is a cgroup path as /proc/PID/cgroup shows it:
// "/" is the root cgroup, "/a/b" a descendant.  On disk it lives under the
// cgroup2 mount (the "filesystem root", CgroupFs-independent: a string such
// as "/sys/fs/cgroup/unified", or a temp directory for a fake tree).
//
// Settings.  Cgroup.settings maps a file name to its contents (trailing
// newline removed): cgroup.type, cgroup.subtree_control, cgroup.freeze,
// cgroup.max.depth, cgroup.max.descendants and every readable and writable
// controller file (memory.max, cpu.weight, hugetlb.2MB.max, io.max ...).
// Files that are not state are never kept: cgroup.procs, cgroup.threads,
// cgroup.kill, PSI trigger files (cpu/io/memory/irq.pressure), memory.reclaim,
// memory.peak, memory.swap.peak, cpu.weight.nice (an alias of cpu.weight).
//
// Tasks.  Cgroup.procs holds the processes whose main thread is in the
// cgroup, Cgroup.threads every thread (main threads included) in it.
//
// Filesystem access goes through CgroupFs so that the controllers this
// machine cannot enable in v2 (memory, cpu, cpuset, io, pids) are tested
// against a fake tree that applies the kernel's rules (tests/unit/cgroup_test.cc).
#pragma once
#include <sys/types.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "ck.pb.h"

namespace ck {

struct CgroupEntry {
  std::string name;
  bool dir = false;
  bool readable = false;  // owner read bit
  bool writable = false;  // owner write bit
};

// The filesystem operations the cgroup code uses.  Paths are absolute.
// Operations that can fail the way the kernel's files fail return 0 or an
// errno value instead of throwing, so callers can name the file and value.
class CgroupFs {
 public:
  virtual ~CgroupFs() = default;
  virtual bool is_dir(const std::string& path);
  virtual std::vector<CgroupEntry> list(const std::string& dir);  // throws
  virtual int read(const std::string& path, std::string* out);    // 0 or errno
  virtual int write(const std::string& path, const std::string& value);  // one write(2)
  virtual int make_dir(const std::string& path);
  virtual int remove_dir(const std::string& path);
  // The thread group of a task (0 if it is gone): /proc/TID/status Tgid.
  virtual pid_t tgid_of(pid_t tid);
  // The cgroup path of a task ("0::PATH" of /proc/PID/task/TID/cgroup).
  virtual std::string cgroup_of(pid_t pid, pid_t tid);
};
CgroupFs& real_cgroup_fs();

// $CK_CGROUP_ROOT if set; else /sys/fs/cgroup/unified if it is a cgroup2
// mount; else /sys/fs/cgroup if it is one; else fails.
std::string default_cgroup_root();

// The cgroup v1 lines of a /proc/PID/cgroup text: those with controllers
// ("4:memory:/x", "1:name=systemd:/y"), not the v2 "0::/z".
std::vector<std::string> cgroup_v1_lines(const std::string& proc_cgroup);

// Setting-file names in the order restore writes them (lower rank first).
int setting_rank(const std::string& name);
// True if `name` is a file ck keeps as a setting (given it is rw).
bool is_setting_file(const std::string& name);

// Collects cgroups and writes them as frames.
class CgroupDumper {
 public:
  CgroupDumper(CgroupFs& fs, std::string fs_root);
  // A task of the tree: its cgroup and its threads' cgroups, their subtrees
  // and ancestors are dumped; only the tree's tasks are recorded in them.
  void add_task(pid_t pid, const std::vector<pid_t>& tids);
  // A whole subtree (--cgroup PATH): every task found in cgroup.threads is
  // recorded.  `path` is a cgroup path ("/ck/a").
  void add_subtree(const std::string& path);
  // Every cgroup, parents before children, ancestors marked.  Reading
  // a cgroup that vanished meanwhile fails naming it.
  std::vector<pb::Cgroup> collect();

 private:
  CgroupFs& fs_;
  std::string root_;
  std::map<std::string, bool> with_tasks_;    // subtree root -> record its tasks
  std::map<std::string, std::set<uint32_t>> procs_, threads_;  // from add_task
};

enum class CgroupMode { kStrict, kOverwrite, kIgnore };
CgroupMode parse_cgroup_mode(const std::string& s);  // usage error if bad

struct CgroupRestoreOptions {
  std::string fs_root;          // cgroup2 mount; empty: default_cgroup_root()
  std::string cgroup_root = "/";  // restore "/a/b" as cgroup_root + "/a/b"; must exist
  // An existing cgroup of the image (not one of its ancestors):
  //   strict    reused only if every setting matches, else refused by name
  //   overwrite the image's settings are written over it (undone by rollback)
  //   ignore    reused as it is; only tasks are placed in it
  CgroupMode mode = CgroupMode::kStrict;
  // A setting whose file the destination lacks is an error naming it; with
  // skip_missing it is a warning naming it.
  bool skip_missing = false;
};

// Restores what CgroupDumper::collect wrote.  Use:
//   CgroupRestorer r;                 // or CgroupRestorer r(fake_fs)
//   r.plan(cgroups, opts);            // validates; nothing changed yet
//   r.create();                       // before any task is restored
//   r.place(pid, tids) ...            // each task before it runs
//   r.finish();                       // freezes what was frozen; commits
// On any failure after create(): r.rollback() (the destructor calls it too
// when finish() was not reached) moves placed tasks back to where they were,
// removes every cgroup it created, puts back overwritten settings and
// disables controllers it enabled in cgroups that existed before.
// Errors name the cgroup and the file: "cgroup '/ck/a' exists with other
// settings: hugetlb.2MB.max is '0', the image has '2097152'".
class CgroupRestorer {
 public:
  explicit CgroupRestorer(CgroupFs& fs = real_cgroup_fs());
  ~CgroupRestorer();
  CgroupRestorer(const CgroupRestorer&) = delete;
  CgroupRestorer& operator=(const CgroupRestorer&) = delete;

  // Checks the image (hostile paths and names: bad_input, status 3) and the
  // existing cgroups against the mode (conflict: status 1).
  void plan(const std::vector<pb::Cgroup>& cgroups, const CgroupRestoreOptions& o);
  // Creates the hierarchy top-down (mkdir, cgroup.type), enables controllers
  // top-down, then writes settings in rank order, cgroup.max.* last.
  void create();
  // Moves process `pid` (dumped pid, same as restored) into its cgroup via
  // cgroup.procs, then each thread that sat elsewhere via cgroup.threads.
  // A pid the image does not place is left where it is.
  void place(pid_t pid, const std::vector<pid_t>& tids);
  // Every process the image recorded (for a standalone restore of live tasks).
  std::vector<pid_t> recorded_pids() const;
  void finish();
  void rollback();

  // The directory a cgroup path of the image restores to.
  std::string dir_of(const std::string& cg_path) const;
  // Settings reported missing (skip_missing), "PATH: NAME".
  const std::vector<std::string>& missing() const { return missing_; }
  size_t created() const { return created_.size(); }

 private:
  struct Item {
    pb::Cgroup cg;
    bool exists = false;  // before create()
  };
  void check_existing(Item& it);
  void write_setting(const Item& it, const std::string& key, const std::string& value, bool undo);
  void enable_controllers(const Item& it);

  CgroupFs& fs_;
  CgroupRestoreOptions o_;
  std::vector<Item> items_;  // parents first
  std::map<uint32_t, std::string> proc_cg_, thread_cg_;
  std::vector<std::string> created_;  // dirs, creation order
  struct Undo {
    std::string file, value;
  };
  std::vector<Undo> undo_;  // settings and subtree_control to put back
  std::vector<std::pair<pid_t, std::string>> moved_;  // tid -> old cgroup dir
  std::vector<std::string> missing_;
  bool planned_ = false, started_ = false, done_ = false;
};

// ck-cgdump's entry points (tools/ck-cgdump/main.cc).
struct CgdumpOptions {
  std::string fs_root;   // empty: default_cgroup_root()
  std::string cgroup;    // alone: dump this subtree
  std::string restore_from;  // hidden test entry: restore a stream's cgroups
  CgroupRestoreOptions restore;
  bool place = false;    // with restore_from: move the recorded live tasks back
};
int run_cgdump(const CgdumpOptions& o, int in_fd, int out_fd);

}  // namespace ck
