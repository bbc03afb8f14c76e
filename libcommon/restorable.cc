#include "restorable.h"

#include <algorithm>

#include "error.h"
#include "files.h"
#include "kinds.h"
#include "log.h"

CK_LOG_MODULE("restorable");

namespace ck {

RestoreCheck::RestoreCheck(bool sink, RestoreEnv env)
    : sink_(sink), env_(std::move(env)), verb_(sink ? "dump" : "restore") {}

RestoreCheck RestoreCheck::for_sink() { return RestoreCheck(true, RestoreEnv()); }
RestoreCheck RestoreCheck::for_restore(const RestoreEnv& env) { return RestoreCheck(false, env); }

bool RestoreCheck::in_pipeline(const char* stage) const {
  const std::string s = stage;
  for (const auto& w : writers_)
    if (w == s || w.compare(0, s.size() + 1, s + " ") == 0) return true;
  return false;
}

std::string RestoreCheck::fd_subject(const pb::FileDesc& d) const {
  return strf("unable to %s fd %d of pid %u (%s)", verb_, d.owner_fd(), d.owner_pid(), describe(d).c_str());
}

void RestoreCheck::frame(const pb::Frame& f) {
  if (!active_) return;
  switch (f.body_case()) {
    case pb::Frame::kHeader:
      writers_.assign(f.header().writers().begin(), f.header().writers().end());
      root_ = f.header().root_pid();
      // An anonymized stream (ck-anon) has no memory and no true names
      // left: it is for reading, never for a tree.  A store keeps it as it is.
      if (f.header().has_anonymized()) {
        if (!sink_)
          bad_input(strf("unable to restore an anonymized stream (%s): its memory and names are gone; "
                         "it is for ck-crit only",
                         f.header().anonymized().by().empty() ? "ck-anon" : f.header().anonymized().by().c_str()));
        active_ = false;
        return;
      }
      // A sink checks dumps: streams that ck-freeze started.  A pre-dump
      // round (ck-memread -t) or a test's stream is no image of a tree.
      if (sink_ && (writers_.empty() || writers_[0].compare(0, 10, "ck-freeze ") != 0)) {
        active_ = false;
        LOG_DEBUG("not a dump of ck-freeze: stored without the restorability check");
      }
      return;
    case pb::Frame::kProcess:
      if (layouts_) bad_input(strf("the process record of pid %u comes after the memory layouts", f.process().pid()));
      process(f.process());
      return;
    case pb::Frame::kThread: {
      if (layouts_) bad_input(strf("thread %u of pid %u comes after the memory layouts", f.thread().tid(), f.thread().pid()));
      auto it = procs_.find(f.thread().pid());
      if (it == procs_.end())
        bad_input(strf("thread %u of pid %u comes before (or without) its process record", f.thread().tid(), f.thread().pid()));
      ++it->second.threads;
      return;
    }
    case pb::Frame::kFile:
      // ck-restore opens every file before it creates the tasks, at the
      // first layout: one that comes later would never be opened.
      if (layouts_) bad_input(strf("file description %u comes after the memory layouts", f.file().id()));
      file(f.file());
      return;
    case pb::Frame::kFd:
      if (layouts_) bad_input(strf("fd %d of pid %u comes after the memory layouts", f.fd().fd(), f.fd().pid()));
      fds_.push_back(f.fd());
      return;
    case pb::Frame::kMm:
      if (!layouts_) layouts_begin();
      layout(f.mm().pid() ? f.mm().pid() : f.pid(), f.mm());
      return;
    case pb::Frame::kPages:
      pages(f.pages());
      return;
    case pb::Frame::kSocket:
      if (layouts_) bad_input(strf("the socket state of description %u comes after the memory layouts", f.socket().desc()));
      have_state_.insert(f.socket().desc());
      awaiting_state_.erase(f.socket().desc());
      return;
    default:
      return;  // cgroups (checked against this machine at restore), notes, later stages' frames
  }
}

void RestoreCheck::process(const pb::Process& p) {
  if (p.pid() == 0 || p.pid() > 0x7fffffff) bad_input(strf("process record with pid %u", p.pid()));
  Proc& pr = procs_[p.pid()];
  if (pr.seen) bad_input(strf("pid %u has two process records", p.pid()));
  pr.seen = true;
  pr.ppid = p.ppid();
  pr.zombie = p.zombie();
  if (!root_) root_ = p.pid();
  if (!sink_) cgroup_v1(p);
}

void RestoreCheck::file(const pb::FileDesc& in) {
  pb::FileDesc d = in;
  d.clear_contents();  // memory stays bounded: the check keeps the shape only
  d.clear_pipe_data();
  const KindId id = kind_of(d);
  const Kind& k = kind(id);
  switch (k.support) {
    case Support::kRefused:
      refuse_kind(id, fd_subject(d));
    case Support::kNeedsState:
      if (have_state_.count(d.id())) break;
      // Refused once every file is known (at the first layout, before any
      // page), naming all of them: a program has more than one socket, and
      // its user wants to see them all.
      if (!in_pipeline(k.stage)) stageless_.push_back({id, d.id()});
      else awaiting_state_[d.id()] = fd_subject(d);
      break;
    case Support::kExternal:
      if (!sink_ && !env_.inherited.count(d.external()))
        refuse_kind(id, fd_subject(d),
                    strf("its other end is outside the tree: hand it a replacement with --inherit-fd '%s=FD'",
                         d.external().c_str()));
      break;
    case Support::kSupported:
      if (id == KindId::kFdTty && !sink_ && !env_.shell_job)
        refuse_kind(id, fd_subject(d),
                    "it is a terminal: ck gives a restored tree only the caller's terminal, with --shell-job");
      break;
  }
  descs_.push_back(std::move(d));
}

void RestoreCheck::refuse_stageless() const {
  if (stageless_.empty()) return;
  std::string subject, kinds;
  std::set<std::string> stages;
  for (const auto& [id, desc] : stageless_) {
    const pb::FileDesc* d = nullptr;
    for (const auto& x : descs_)
      if (x.id() == desc) d = &x;
    if (subject.empty())
      subject = fd_subject(*d);
    else
      subject += strf(", fd %d of pid %u (%s)", d->owner_fd(), d->owner_pid(), describe(*d).c_str());
    if (kinds.find(kind(id).name) == std::string::npos) kinds += (kinds.empty() ? "" : ", ") + std::string(kind(id).name);
    stages.insert(kind(id).stage);
  }
  std::string st;
  for (const auto& x : stages) st += (st.empty() ? "" : ", ") + x;
  fail(strf("%s: %s from %s, which is not in the pipeline (%s)", subject.c_str(),
            stageless_.size() == 1 ? "its state comes" : "their state comes", st.c_str(), kinds.c_str()));
}

void RestoreCheck::layouts_begin() {
  layouts_ = true;
  refuse_stageless();
  // A stage's state for a file comes before the first layout (ck-stream(5):
  // ck-restore opens every file there, sockets included).
  if (!awaiting_state_.empty()) {
    const pb::FileDesc* d = nullptr;
    for (const auto& x : descs_)
      if (x.id() == awaiting_state_.begin()->first) d = &x;
    const KindId id = kind_of(*d);
    refuse_kind(id, awaiting_state_.begin()->second, strf("%s did not dump its state", kind(id).stage));
  }
  if (!procs_.count(root_)) bad_input(strf("image has no process record for the root pid %u", root_));
  for (auto& [pid, p] : procs_) {
    if (p.zombie) {
      if (pid == root_) bad_input(strf("the root pid %u is a zombie in the image", pid));
      if (p.threads) bad_input(strf("zombie pid %u has threads or memory in the image", pid));
    } else if (!p.threads) {
      bad_input(strf("image has no thread state for pid %u", pid));
    }
    if (pid != root_ && !procs_.count(p.ppid)) bad_input(strf("pid %u: its parent %u is not in the image", pid, p.ppid));
  }
  validate_file_table(descs_, fds_);
}

void RestoreCheck::layout(uint32_t pid, const pb::MemLayout& mm) {
  auto it = procs_.find(pid);
  if (it == procs_.end()) bad_input(strf("memory layout for pid %u, which the image has no process for", pid));
  if (it->second.zombie) bad_input(strf("zombie pid %u has threads or memory in the image", pid));
  if (it->second.mm) bad_input(strf("pid %u has two memory layouts", pid));
  it->second.mm = true;
  mm_pid_ = pid;
  vmas_.clear();
  uint64_t last_end = 0;
  for (const auto& v : mm.vmas()) {
    const KindId id = kind_of(v);
    if (kind(id).support != Support::kSupported)
      refuse_kind(id, strf("unable to %s mapping %s of pid %u", verb_, describe(v).c_str(), pid));
    // A deleted file or memfd is mapped from the inode its description
    // carries (Vma.file); without one ck-restore would look for the path.
    if (v.file() && !file_with_contents(v.file()))
      bad_input(strf("pid %u: mapping %s names file description %u, which carries no file contents", pid,
                     describe(v).c_str(), v.file()));
    if (!v.file() && (id == KindId::kVmaFileDeleted || id == KindId::kVmaMemfd))
      refuse_kind(id, strf("unable to %s mapping %s of pid %u", verb_, describe(v).c_str(), pid),
                  "the stream carries no contents for its file (was ck-freeze first in the pipeline?)");
    if (v.end() <= v.start() || v.start() % kPageSize || v.end() % kPageSize || v.start() < last_end)
      bad_input(strf("pid %u: mapping %s is empty, unaligned or out of order", pid, describe(v).c_str()));
    last_end = v.end();
    vmas_.push_back({v.start(), v.end()});
    if (id == KindId::kVmaSharedAnon) {
      uint64_t& s = shm_seen_[v.shmid()];
      s = std::max(s, v.pgoff() + (v.end() - v.start()));
    }
  }
  // ck-restore creates a shared object at the first mapping of it, as big as
  // the mappings it knows of by then say.
  for (const auto& v : mm.vmas())
    if (kind_of(v) == KindId::kVmaSharedAnon && !shm_size_.count(v.shmid())) shm_size_[v.shmid()] = shm_seen_[v.shmid()];
}

const pb::FileDesc* RestoreCheck::file_with_contents(uint32_t id) const {
  for (const auto& d : descs_)
    if (d.id() == id && (d.kind() == pb::FILE_MEMFD || (d.kind() == pb::FILE_REG && d.deleted()))) return &d;
  return nullptr;
}

void RestoreCheck::pages(const pb::PageRun& run) {
  const uint64_t len = uint64_t{run.npages()} * kPageSize;
  if (run.dropped() && !sink_)  // (a stream that lost its mark, not only its pages)
    bad_input(strf("unable to restore %s: its payload was dropped by ck-anon", describe_run(run).c_str()));
  if (run.file()) {  // contents of a deleted file or memfd, after its description
    const pb::FileDesc* d = file_with_contents(run.file());
    const uint64_t size = d ? (d->size() + kPageSize - 1) / kPageSize * kPageSize : 0;
    if (!d || layouts_ || run.addr() % kPageSize || run.addr() + len < run.addr() || run.addr() + len > size)
      bad_input(strf("page run for file %u at offset %#llx (%u pages): no deleted file or memfd described before "
                     "it, or outside it", run.file(), static_cast<unsigned long long>(run.addr()), run.npages()));
    return;
  }
  if (run.shmid()) {
    auto it = shm_size_.find(run.shmid());
    if (it == shm_size_.end() || run.addr() + len > it->second || run.addr() + len < run.addr())
      bad_input(strf("page run for shared object %#lx outside it", static_cast<unsigned long>(run.shmid())));
    return;
  }
  if (!layouts_ || run.pid() != mm_pid_) bad_input(strf("page run for pid %u outside its memory layout", run.pid()));
  // Inside one mapping or several adjacent ones.
  uint64_t a = run.addr();
  auto v = std::upper_bound(vmas_.begin(), vmas_.end(), a, [](uint64_t x, const Range& r) { return x < r.end; });
  while (v != vmas_.end() && v->start <= a && a < run.addr() + len) a = (v++)->end;
  if (a < run.addr() + len)
    bad_input(strf("page run %#lx+%u pages of pid %u is outside every mapping", static_cast<unsigned long>(run.addr()),
                   run.npages(), run.pid()));
}

void RestoreCheck::end() {
  if (!active_) return;
  refuse_stageless();
  if (!layouts_) bad_input("image has no memory layout (was ck-memread in the pipeline?)");
  for (auto& [pid, p] : procs_)
    if (!p.zombie && !p.mm) bad_input(strf("image has no memory layout for pid %u", pid));
}

// cgroup v1 is the host's, not the image's: ck-restore does not move tasks
// in v1 hierarchies (on a hybrid host they hold everything else too), so a
// restored task sits where ck-restore sits.  Every difference is named.
void RestoreCheck::cgroup_v1(const pb::Process& p) {
  if (p.zombie() || p.cgroup_v1().empty()) return;
  // "ID:CONTROLLERS:PATH" keyed by controllers: hierarchy ids differ between boots.
  auto split = [](const std::string& line, std::string* ctl, std::string* path) {
    size_t a = line.find(':'), b = a == std::string::npos ? a : line.find(':', a + 1);
    if (b == std::string::npos) return false;
    *ctl = line.substr(a + 1, b - a - 1);
    *path = line.substr(b + 1);
    return true;
  };
  std::map<std::string, std::string> own, dumped;
  std::string c, path;
  for (const auto& l : env_.own_cgroup_v1)
    if (split(l, &c, &path) && !c.empty()) own[c] = path;
  for (const auto& l : p.cgroup_v1()) {
    if (!split(l, &c, &path) || c.empty())
      bad_input(strf("pid %u: cgroup v1 line '%s' in the image is not ID:CONTROLLERS:PATH", p.pid(), l.substr(0, 200).c_str()));
    dumped[c] = path;
  }
  std::vector<std::string> diffs;
  for (auto& [ctl, was] : dumped) {
    auto it = own.find(ctl);
    if (it == own.end())
      diffs.push_back(strf("'%s' was %s, and this host has no such v1 hierarchy", ctl.c_str(), was.c_str()));
    else if (it->second != was)
      diffs.push_back(strf("'%s' was %s, is %s here", ctl.c_str(), was.c_str(), it->second.c_str()));
  }
  for (auto& [ctl, now] : own)
    if (!dumped.count(ctl)) diffs.push_back(strf("'%s' was not there, is %s here", ctl.c_str(), now.c_str()));
  for (const auto& d : diffs) {
    std::string w = strf("pid %u: cgroup v1 %s (ck does not restore v1 cgroups)", p.pid(), d.c_str());
    if (env_.cgroup_v1_refuse) fail(strf("unable to restore pid %u: cgroup v1 %s (--cgroup-v1 refuse)", p.pid(), d.c_str()));
    LOG_WARN("%s", w.c_str());
    warnings_.push_back(w);
  }
}

}  // namespace ck
