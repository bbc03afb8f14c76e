// ck-cgdump's modes: pipeline stage, --cgroup PATH alone, --restore-from.
#include <fcntl.h>
#include <unistd.h>

#include "cgroup.h"
#include "error.h"
#include "fd.h"
#include "log.h"
#include "proc.h"
#include "stream.h"

CK_LOG_MODULE("cgroup");

namespace ck {

namespace {

constexpr size_t kMaxCgroups = 100000;

void write_cgroups(StreamWriter& w, const std::vector<pb::Cgroup>& cgs) {
  for (const auto& cg : cgs) {
    pb::Frame f;
    *f.mutable_cgroup() = cg;
    w.frame(f);
  }
}

int restore_from(const CgdumpOptions& o, int in_fd) {
  ScopedFd own;
  int fd = in_fd;
  std::string what = "stdin";
  if (o.restore_from != "-") {
    own.reset(::open(o.restore_from.c_str(), O_RDONLY | O_CLOEXEC));
    if (!own.valid()) throw_errno("unable to open '" + o.restore_from + "'");
    fd = own.get();
    what = o.restore_from;
  }
  StreamReader r(fd, what);
  r.header();
  std::vector<pb::Cgroup> cgs;
  pb::Frame f;
  while (r.next(&f)) {
    if (!f.has_cgroup()) continue;
    if (cgs.size() >= kMaxCgroups) bad_input(strf("'%s' holds more than %zu cgroups", what.c_str(), kMaxCgroups));
    cgs.push_back(f.cgroup());
  }
  if (cgs.empty()) bad_input("'" + what + "' holds no cgroup");
  CgroupRestoreOptions ro = o.restore;
  if (ro.fs_root.empty()) ro.fs_root = o.fs_root;
  CgroupRestorer rs;
  rs.plan(cgs, ro);
  rs.create();
  size_t placed = 0;
  if (o.place)
    for (pid_t pid : rs.recorded_pids()) {
      if (!pid_alive(pid)) {
        LOG_WARN("pid %d of the image is not running: not placed", pid);
        continue;
      }
      rs.place(pid, list_tids(pid));
      placed++;
    }
  rs.finish();
  LOG_INFO("%zu cgroups restored, %zu created, %zu processes placed", cgs.size(), rs.created(), placed);
  return 0;
}

}  // namespace

int run_cgdump(const CgdumpOptions& o, int in_fd, int out_fd) {
  if (!o.restore_from.empty()) return restore_from(o, in_fd);
  std::string root = o.fs_root.empty() ? default_cgroup_root() : o.fs_root;
  CgroupDumper d(real_cgroup_fs(), root);
  if (!o.cgroup.empty()) {
    d.add_subtree(o.cgroup);
    auto cgs = d.collect();
    StreamWriter w(out_fd);
    w.header(make_header("ck-cgdump"));
    write_cgroups(w, cgs);
    w.finish();
    return 0;
  }
  if (isatty(in_fd)) usage_error("no stream on stdin and no --cgroup PATH (see ck-cgdump --help)");
  StreamReader r(in_fd);
  StreamWriter w(out_fd);
  pb::Header h = r.header();
  h.add_writers(std::string("ck-cgdump ") + kVersion);
  w.header(h);
  std::vector<std::pair<pid_t, std::vector<pid_t>>> procs;
  forward_frames(r, w, [&](const pb::Frame& f) {
    if (f.has_header()) return false;
    if (f.has_process() && !f.process().zombie()) {  // a zombie cannot be moved: it goes where its parent is
      std::vector<pid_t> tids(f.process().tids().begin(), f.process().tids().end());
      procs.emplace_back(static_cast<pid_t>(f.process().pid()), std::move(tids));
    }
    return true;
  });
  for (auto& [pid, tids] : procs) {
    if (pid <= 0) bad_input(strf("process frame with pid %d", pid));
    with_context(strf("pid %d", pid), [&] { d.add_task(pid, tids); });
  }
  auto cgs = d.collect();
  write_cgroups(w, cgs);
  w.finish();
  LOG_INFO("%zu cgroups of %zu processes", cgs.size(), procs.size());
  return 0;
}

}  // namespace ck
