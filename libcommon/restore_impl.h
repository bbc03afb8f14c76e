// Inside ck-restore: the plan of the tree (Restorer, Task), and the builder
// of one process (TaskBuilder), shared by the orchestrator (restore.cc) and
// the rooms it calls: mem_restore.cc rebuilds an address space and fills it,
// task_restore.cc gives the task its signals, timers, credentials, threads'
// state and registers.  Not an API: nothing outside ck-restore includes it.
#pragma once
#include <sys/types.h>
#include <sys/user.h>

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "cgroup.h"
#include "ck.pb.h"
#include "error.h"
#include "fd.h"
#include "files.h"
#include "ptrace.h"
#include "sock_restore.h"

namespace ck {

constexpr uint64_t kPage = 4096;

struct Task {
  pb::Process proc;
  std::vector<pb::Thread> threads;  // leader first
  std::vector<pid_t> children;
  std::vector<pb::Vma> vmas;
  uint64_t tramp = 0;
  bool mm_seen = false;
};

struct ShmObject {
  char* base = nullptr;
  size_t size = 0;
  int fd = -1;
};

struct Restorer {
  std::map<pid_t, Task> tasks;
  pid_t root = 0;
  std::vector<pb::FileDesc> descs;
  std::vector<pb::Fd> fds;
  SockRestorer sock;  // declared before files: its sockets outlive the file restorer's fds
  FileRestorer files;
  std::map<uint64_t, ShmObject> shm;
  std::vector<pb::Cgroup> cgroups;
  std::unique_ptr<CgroupRestorer> cg;  // rolled back (after the kills) on failure
  std::set<pid_t> created;   // pids we made (as this process sees them); killed on failure
  std::set<pid_t> seized;
  bool committed = false;
  bool winch = false;  // --shell-job: the terminal's size is not the dumped one
  // --pidns: the tree lives in a new pid namespace under an init of ours
  // (pid 1 there).  Image pids are the ones inside it; everything the
  // restorer does from outside (ptrace, /proc, prlimit, cgroups) takes the
  // outer pid that `outer` maps them to.
  // The restorer's own credentials (with securebits), which every helper
  // starts with, and the highest capability number of this kernel.
  pb::Creds own_creds;
  int last_cap = 0;
  bool pidns = false;
  pid_t init = 0;
  int go_w = -1;  // init waits on this: a byte once the tree runs, EOF if the restore failed
  // -d without --pidns: the root's parent while it is restored is a
  // process of ours that ends before the root's parent-death signal is
  // set, so the root has the parent it keeps (the reaper, as once
  // ck-restore exits) when the signal is armed.  It ends at EOF on
  // proxy_w (or when the restorer dies).
  bool use_proxy = false;
  pid_t proxy = 0;
  int proxy_w = -1;
  std::map<pid_t, pid_t> outer_of;
  pid_t outer(pid_t inner) const {
    if (!pidns) return inner;
    auto it = outer_of.find(inner);
    if (it == outer_of.end()) fail(strf("internal: no outer pid known for pid %d", inner));
    return it->second;
  }

  // Refuses, before anything is created, a task this caller could not give
  // its credentials or its pid (task_restore.cc).
  void check_caller_may_restore(const pb::Process& p) const;

  ~Restorer();  // unless committed: kills what it created, rolls cgroups back
};

// ---- one process ----------------------------------------------------------

struct MapLine {
  uint64_t start, end;
  std::string name;
};
std::vector<MapLine> read_maps(pid_t pid);
inline bool overlaps(uint64_t s, uint64_t e, uint64_t s2, uint64_t e2) { return s < e2 && s2 < e; }
inline bool is_vdso_group(const std::string& n) { return n == "[vdso]" || n == "[vvar]" || n == "[vvar_vclock]"; }

// Rebuilds one seized process from outside with remote syscalls run from a
// one-page trampoline: start() replaces the helper's layout with the
// image's, put_pages() fills it as the page runs come, finish_memory() sets
// the final protections and mm fields, finish_task() everything else, the
// registers last.
struct TaskBuilder {
  Restorer& R;
  Task& t;
  pid_t pid;   // in the image (and inside the task's pid namespace)
  pid_t opid;  // as the restorer sees it
  std::unique_ptr<RemoteSyscalls> rs;
  uint64_t scratch = 0;  // tramp + 1024: strings and structs for syscalls
  // Anonymous memory is filled with UFFDIO_COPY through a userfaultfd of
  // the task's: each page is allocated with its contents, never zeroed
  // first (process_vm_writev faults in a zero page, then copies).
  ScopedFd uffd;
  std::vector<std::pair<uint64_t, uint64_t>> registered;  // sorted ranges
  // --lazy: the registered ranges stay registered and empty; the uffd goes
  // to ck-uffd-serve, which fills them from the image.
  bool lazy = false;
  bool all_registered(uint64_t addr, uint64_t len) const;

  // mem_restore.cc
  void start();
  void put_pages(uint64_t addr, const char* src, uint64_t len);
  const pb::Vma* vma_at(uint64_t addr) const;
  void finish_memory();
  // task_restore.cc
  void finish_task();
  // The end, once the task has the parent it keeps: its parent-death
  // signal (after the credentials, whose change clears it), the
  // trampoline unmapped, every thread's registers, XSAVE and mask.
  void finish_registers();
  void clear_pdeathsig();  // the helper's "die with the restorer", before its parent goes

  uint64_t put(const void* data, size_t len);  // into the scratch area
  uint64_t put_str(const std::string& s);

 private:
  void open_uffd();
  void close_uffd();
  void uffd_copy(uint64_t addr, const char* src, uint64_t len);
  void move_vdso(const std::vector<MapLine>& cur);
  void map_vma(const pb::Vma& v);
  void advise(const pb::Vma& v);
  ShmObject& shm_object(const pb::Vma& v);
  long take_fd(int fd);
  void set_creds(RemoteSyscalls& r, const pb::Creds& c);
  static void restartable(user_regs_struct& r);
};

}  // namespace ck
