// Restore side of file descriptors.  Every description is opened once in the
// restorer at a high fd number; the forked tasks inherit them and install()
// moves each to its target number.  Kernel facts this relies on:
//  - a second description of a pipe end, memfd or unlinked file is had by
//    opening /proc/self/fd/N: it refers to the same inode;
//  - inotify hands out watch descriptors cyclically (last + 1), so a wanted
//    wd is reached by adding and removing a throwaway watch; each removal
//    queues an IN_IGNORED event, drained before the fd is handed on;
//  - epoll registers a target under (file, fd number), so targets can only be
//    added once the task's fd numbers are in place (install());
//  - a deleted file, removed directory or deleted FIFO is made again by name,
//    opened, and unlinked at once: the open fd keeps the inode, and /proc
//    names it "PATH (deleted)" as it did.  An fd on a removed directory
//    works for fchdir and for opening it again through /proc/self/fd;
//  - flock and OFD locks belong to the open file description, so the
//    restorer takes them on its copy and the task inherits them; POSIX
//    locks belong to the process and are dropped when it closes any fd of
//    the file, so the task takes them itself, last (task_locks()).
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstring>

#include "error.h"
#include "fd.h"
#include "files.h"
#include "kinds.h"
#include "log.h"
#include "stream.h"
#include "sock_restore.h"

CK_LOG_MODULE("files");

#ifndef TFD_IOC_SET_TICKS
#define TFD_IOC_SET_TICKS _IOW('T', 0, uint64_t)
#endif

namespace ck {
namespace {

constexpr int kMaxTargetFd = 1 << 20;
constexpr uint32_t kOpenFlagMask = O_ACCMODE | O_APPEND | O_NONBLOCK | O_DSYNC | O_SYNC | O_DIRECT | O_NOATIME |
                                   O_LARGEFILE | O_DIRECTORY | O_PATH | O_NOFOLLOW;
constexpr uint32_t kStatusFlagMask = O_APPEND | O_NONBLOCK | O_NOATIME;  // what F_SETFL may change here

std::string inode_key(const pb::FileDesc& d) {
  return strf("%d:%llu:%llu", static_cast<int>(d.kind()), static_cast<unsigned long long>(d.dev()),
              static_cast<unsigned long long>(d.kind() == pb::FILE_PIPE || d.kind() == pb::FILE_FIFO ? d.pipe_id() : d.ino()));
}

void write_all_nb(int fd, const std::string& data, const std::string& what) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) fail(strf("%s: %zu bytes of data do not fit in the pipe", what.c_str(), data.size()));
      throw_errno(what);
    }
    off += static_cast<size_t>(n);
  }
}

void set_status_flags(int fd, uint32_t flags, const std::string& what) {
  int cur = ::fcntl(fd, F_GETFL);
  if (cur < 0) throw_errno(what);
  int want = (cur & ~static_cast<int>(kStatusFlagMask)) | static_cast<int>(flags & kStatusFlagMask);
  if (want != cur && ::fcntl(fd, F_SETFL, want) < 0) throw_errno(what);
}

// Makes the missing directories above path (its directory was removed
// too); returns them, outermost first, for remove_dirs().
std::vector<std::string> make_parents(const std::string& path) {
  std::vector<std::string> made;
  for (size_t at = path.find('/', 1); at != std::string::npos; at = path.find('/', at + 1)) {
    std::string dir = path.substr(0, at);
    if (::mkdir(dir.c_str(), 0700) == 0)
      made.push_back(dir);
    else if (errno != EEXIST)
      break;
  }
  return made;
}

void remove_dirs(const std::vector<std::string>& dirs) {
  for (auto it = dirs.rbegin(); it != dirs.rend(); ++it)
    if (::rmdir(it->c_str()) != 0) LOG_WARN("unable to remove the directory '%s' made for the restore: %s", it->c_str(), std::strerror(errno));
}

// Runs make(path) (which returns an fd or -1 with errno) where path's
// directory may have been removed too: parents are made for the moment.
// Then unlinks it with `unmake` (unlink or rmdir) and removes the parents.
template <class Make>
int make_at_path(const std::string& path, Make make, int (*unmake)(const char*)) {
  int fd = make(path);
  std::vector<std::string> parents;
  if (fd < 0 && errno == ENOENT) {
    parents = make_parents(path);
    fd = make(path);
  }
  int err = errno;
  if (fd >= 0 && unmake(path.c_str()) != 0) {
    err = errno;
    ::close(fd);
    fd = -1;
  }
  remove_dirs(parents);
  errno = err;
  return fd;
}

std::string dir_of(const std::string& path) {
  std::string dir = path.substr(0, path.rfind('/'));
  return dir.empty() ? "/" : dir;
}

bool needs_inode(const pb::FileDesc& d) {
  switch (d.kind()) {
    case pb::FILE_MEMFD: return true;
    case pb::FILE_REG:
    case pb::FILE_DIR:
    case pb::FILE_FIFO: return d.deleted();
    default: return false;
  }
}

}  // namespace

FileRestorer::~FileRestorer() {
  close_all();
  release_inodes();
}

void FileRestorer::prepare(const pb::FileDesc& d) {
  if (!needs_inode(d)) return;
  const std::string key = inode_key(d);
  made_key_[d.id()] = key;
  if (made_.count(key)) return;
  const std::string w = d.owner_fd() >= 0 ? strf("fd %d of pid %u", d.owner_fd(), d.owner_pid())
                                          : strf("description %u of pid %u", d.id(), d.owner_pid());
  if (d.kind() != pb::FILE_MEMFD && (d.path().empty() || d.path()[0] != '/'))
    bad_input(strf("%s has a relative or empty path '%s'", w.c_str(), d.path().c_str()));
  if (d.contents().size() > kMaxInlineContents) bad_input(w + " carries more contents than the limit");
  const mode_t perm = d.mode() & 07777;
  int h = -1;
  switch (d.kind()) {
    case pb::FILE_MEMFD:
      h = ::memfd_create(d.path().c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING);
      if (h < 0) throw_errno("unable to create memfd '" + d.path() + "' for " + w);
      break;
    case pb::FILE_REG:
      h = make_at_path(d.path(), [&](const std::string& p) { return ::open(p.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600); }, ::unlink);
      if (h < 0) {  // its name is taken now (or its directory cannot be had): nameless
        LOG_INFO("recreating deleted '%s' without a name: %s", d.path().c_str(), std::strerror(errno));
        h = ::open(dir_of(d.path()).c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        if (h < 0) h = ::open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
      }
      if (h < 0) throw_errno("unable to recreate deleted file '" + d.path() + "' for " + w);
      break;
    case pb::FILE_DIR: {
      auto mk = [&](const std::string& p) {
        return ::mkdir(p.c_str(), 0700) == 0 ? ::open(p.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
      };
      h = make_at_path(d.path(), mk, ::rmdir);
      if (h < 0 && errno == EEXIST) {  // another directory has its name now: one beside it
        std::string tmpl = d.path() + ".ck-XXXXXX";
        if (::mkdtemp(tmpl.data())) {
          h = ::open(tmpl.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
          ::rmdir(tmpl.c_str());
        }
      }
      if (h < 0) throw_errno("unable to recreate removed directory '" + d.path() + "' for " + w);
      break;
    }
    case pb::FILE_FIFO: {
      auto mk = [&](const std::string& p) {
        return ::mkfifo(p.c_str(), 0600) == 0 ? ::open(p.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC) : -1;
      };
      h = make_at_path(d.path(), mk, ::unlink);
      if (h < 0 && errno == EEXIST) {
        std::string tmpl = d.path() + ".ck-XXXXXX";
        if (::mkdtemp(tmpl.data())) {  // a private directory for the name
          std::string f = tmpl + "/fifo";
          if (::mkfifo(f.c_str(), 0600) == 0) {
            h = ::open(f.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC);
            ::unlink(f.c_str());
          }
          ::rmdir(tmpl.c_str());
        }
      }
      if (h < 0) throw_errno("unable to recreate deleted FIFO '" + d.path() + "' for " + w);
      break;
    }
    default:
      return;
  }
  ScopedFd hold(h);
  (void)perm;
  Made m;
  m.file = d.kind() == pb::FILE_MEMFD || d.kind() == pb::FILE_REG;
  m.size = d.size();
  if (m.file && d.size() > 0 && ::ftruncate(h, static_cast<off_t>(d.size())) < 0)
    throw_errno("unable to size '" + d.path() + "' for " + w);
  if (!d.contents().empty()) {  // a 1.1 image: the contents inline
    if (d.contents().size() > d.size() && m.file) bad_input(w + " carries more contents than its size");
    ssize_t n = ::pwrite(h, d.contents().data(), d.contents().size(), 0);
    if (n != static_cast<ssize_t>(d.contents().size())) throw_errno("unable to write the contents of '" + d.path() + "' for " + w);
  }
  m.fd = hold.extract();
  made_[key] = m;
  LOG_DEBUG("made the inode of %s ('%s', %s)", w.c_str(), d.path().c_str(), pb::FileKind_Name(d.kind()).c_str());
}

void FileRestorer::write_contents(const pb::PageRun& run, const char* data, uint64_t len, uint64_t offset_in_run) {
  auto k = made_key_.find(run.file());
  auto it = k == made_key_.end() ? made_.end() : made_.find(k->second);
  if (it == made_.end() || !it->second.file)
    bad_input(strf("page run for file %u, which is no deleted file or memfd described before it", run.file()));
  Made& m = it->second;
  if (m.finished) bad_input(strf("page run for file %u after the tree's files were opened", run.file()));
  const uint64_t run_len = uint64_t{run.npages()} * kPageSize;
  if (run.addr() % kPageSize || run.addr() + run_len < run.addr() || run.addr() >= (m.size + kPageSize - 1) / kPageSize * kPageSize ||
      run.addr() + run_len > (m.size + kPageSize - 1) / kPageSize * kPageSize || offset_in_run + len > run_len)
    bad_input(strf("page run for file %u at offset %#llx (%u pages) lies outside its %llu bytes", run.file(),
                   static_cast<unsigned long long>(run.addr()), run.npages(), static_cast<unsigned long long>(m.size)));
  static const char zeros[1 << 16] = {};
  uint64_t at = run.addr() + offset_in_run;
  uint64_t n = std::min(len, m.size > at ? m.size - at : 0);  // nothing past the end of the file
  while (n) {
    size_t piece = data ? n : std::min<uint64_t>(n, sizeof zeros);
    ssize_t k2 = ::pwrite(m.fd, data ? data : zeros, piece, static_cast<off_t>(at));
    if (k2 < 0 && errno == EINTR) continue;
    if (k2 <= 0) throw_errno(strf("unable to write the contents of file %u", run.file()));
    at += static_cast<uint64_t>(k2), n -= static_cast<uint64_t>(k2);
    if (data) data += k2;
  }
}

// Owner, then mode (chown clears set-id bits), times (after the contents:
// writing sets mtime), seals last (a sealed memfd takes no more writes).
int FileRestorer::made_fd(const pb::FileDesc& d) {
  prepare(d);  // (if no frame did it: a description of an older image, a test)
  Made& m = made_.at(made_key_.at(d.id()));
  if (!m.finished) {
    finish_inode(d, m.fd);
    m.finished = true;
    if (m.file) {
      // Read-only from here: a file open for writing cannot become a
      // process's exe (PR_SET_MM_MAP: EACCES) nor be executed (ETXTBSY).
      int ro = ::open(strf("/proc/self/fd/%d", m.fd).c_str(), O_RDONLY | O_CLOEXEC);
      if (ro < 0) throw_errno("unable to reopen '" + d.path() + "' read-only for " + who(d.id()));
      ::close(m.fd);
      m.fd = ro;
    }
  }
  return m.fd;
}

void FileRestorer::finish_inode(const pb::FileDesc& d, int fd) {
  const std::string w = who(d.id());
  if (::fchown(fd, d.uid(), d.gid()) != 0 && errno != EPERM)
    throw_errno(strf("unable to give '%s' for %s its owner %u:%u", d.path().c_str(), w.c_str(), d.uid(), d.gid()));
  if (::fchmod(fd, d.mode() & 07777) != 0)
    throw_errno(strf("unable to give '%s' for %s its mode %o", d.path().c_str(), w.c_str(), d.mode() & 07777));
  if (d.kind() == pb::FILE_REG || d.kind() == pb::FILE_MEMFD || d.kind() == pb::FILE_DIR) {
    struct timespec ts[2] = {{static_cast<time_t>(d.atime_ns() / 1000000000), static_cast<long>(d.atime_ns() % 1000000000)},
                             {static_cast<time_t>(d.mtime_ns() / 1000000000), static_cast<long>(d.mtime_ns() % 1000000000)}};
    if ((d.atime_ns() || d.mtime_ns()) && ::futimens(fd, ts) != 0)
      LOG_WARN("unable to set the times of '%s' for %s: %s", d.path().c_str(), w.c_str(), std::strerror(errno));
  }
  const uint32_t seals = d.has_seals() ? d.seals() : d.rdev();  // 1.1 images kept them in rdev
  if (d.kind() == pb::FILE_MEMFD && seals != 0 && ::fcntl(fd, F_ADD_SEALS, static_cast<int>(seals)) < 0)
    throw_errno(strf("unable to seal memfd '%s' for %s", d.path().c_str(), w.c_str()));
}

int FileRestorer::inode_fd(uint32_t desc_id) const {
  auto k = made_key_.find(desc_id);
  if (k == made_key_.end()) return -1;
  auto it = made_.find(k->second);
  return it == made_.end() ? -1 : it->second.fd;
}

void FileRestorer::release_inodes() {
  for (auto& [key, m] : made_)
    if (m.fd >= 0) ::close(m.fd);
  made_.clear();
  made_key_.clear();
}

void FileRestorer::lock_call(const pb::FileLock& l, int* cmd, struct flock* fl, long* arg) {
  std::memset(fl, 0, sizeof *fl);
  fl->l_type = l.write() ? F_WRLCK : F_RDLCK;
  fl->l_whence = SEEK_SET;
  fl->l_start = static_cast<off_t>(l.start());
  fl->l_len = l.to_eof() ? 0 : static_cast<off_t>(l.end() - l.start() + 1);
  *arg = l.write() ? F_WRLCK : F_RDLCK;
  switch (l.kind()) {
    case pb::FileLock::POSIX: *cmd = F_SETLK; break;
    case pb::FileLock::OFD: *cmd = F_OFD_SETLK; break;
    case pb::FileLock::LEASE: *cmd = F_SETLEASE; break;
    default: *cmd = -1;  // flock(2), not fcntl
  }
}

std::string FileRestorer::lock_who(const pb::FileLock& l, uint32_t desc_id) const {
  auto it = desc_by_id_.find(desc_id);
  std::string path = it == desc_by_id_.end() ? "" : " ('" + it->second->path() + "')";
  if (l.kind() == pb::FileLock::POSIX || l.kind() == pb::FileLock::LEASE)
    return lock_name(l) + strf(" of fd %d of pid %u", l.fd(), l.pid()) + path;
  return lock_name(l) + " of " + who(desc_id) + path;
}

void FileRestorer::take_locks(const pb::FileDesc& d, int fd) {
  for (const auto& l : d.locks()) {
    if (l.kind() != pb::FileLock::OFD) continue;  // the tasks' (install(), task_locks())
    int cmd;
    struct flock fl;
    long arg;
    lock_call(l, &cmd, &fl, &arg);
    int r = ::fcntl(fd, cmd, &fl);
    if (r != 0) {
      int err = errno;
      if (err == EAGAIN || err == EWOULDBLOCK || err == EACCES)
        fail("unable to take the " + lock_who(l, d.id()) + " again: another process holds a lock in its way");
      throw_errno("unable to take the " + lock_who(l, d.id()) + " again", err);
    }
    LOG_DEBUG("took the %s", lock_who(l, d.id()).c_str());
  }
}

std::vector<FileRestorer::TaskLock> FileRestorer::task_locks(pid_t pid) const {
  auto it = task_locks_.find(pid);
  return it == task_locks_.end() ? std::vector<TaskLock>() : it->second;
}

std::string FileRestorer::who(uint32_t id) const {
  auto it = first_fd_.find(id);
  if (it == first_fd_.end()) return strf("description %u", id);
  return strf("fd %d of pid %d", it->second.second, it->second.first);
}

int FileRestorer::place(int fd) {
  int n = ::fcntl(fd, F_DUPFD, next_);
  int err = errno;
  ::close(fd);
  if (n < 0) throw_errno(strf("unable to move a restored fd to %d or above", next_), err);
  next_ = n + 1;
  return n;
}

int FileRestorer::fd_of(uint32_t desc_id) const {
  auto it = open_.find(desc_id);
  return it == open_.end() ? -1 : it->second;
}

// The checks of a file table that no ck-freeze would write otherwise.
void validate_file_table(const std::vector<pb::FileDesc>& descs, const std::vector<pb::Fd>& fds) {
  std::map<uint32_t, const pb::FileDesc*> by_id;
  for (const auto& d : descs)
    if (d.id() == 0 || !by_id.emplace(d.id(), &d).second) bad_input(strf("file description %u is duplicated or zero", d.id()));
  std::set<std::pair<pid_t, int>> seen;
  std::map<uint32_t, std::pair<pid_t, int>> first;
  for (const auto& f : fds) {
    if (f.fd() < 0 || f.fd() >= kMaxTargetFd) bad_input(strf("fd %d of pid %u is out of range", f.fd(), f.pid()));
    if (!by_id.count(f.desc())) bad_input(strf("fd %d of pid %u names file description %u, which the image lacks", f.fd(), f.pid(), f.desc()));
    if (!seen.insert({static_cast<pid_t>(f.pid()), f.fd()}).second) bad_input(strf("fd %d of pid %u appears twice", f.fd(), f.pid()));
    first.emplace(f.desc(), std::make_pair(static_cast<pid_t>(f.pid()), f.fd()));
  }
  auto who = [&](uint32_t id) {
    auto it = first.find(id);
    return it == first.end() ? strf("description %u", id) : strf("fd %d of pid %d", it->second.second, it->second.first);
  };
  for (const auto& d : descs) {
    switch (d.kind()) {
      case pb::FILE_REG:
      case pb::FILE_DIR:
      case pb::FILE_FIFO:
      case pb::FILE_CHR:
        if (d.path().empty() || d.path()[0] != '/') bad_input(strf("%s has a relative or empty path '%s'", who(d.id()).c_str(), d.path().c_str()));
        break;
      default:
        break;
    }
    if (d.contents().size() > kMaxInlineContents) bad_input(who(d.id()) + " carries more contents than the limit");
    if (d.pipe_data().size() > (16u << 20)) bad_input(who(d.id()) + " carries more pipe data than a pipe holds");
    for (const auto& l : d.locks()) {
      const bool by_fd = l.kind() == pb::FileLock::POSIX || l.kind() == pb::FileLock::LEASE;
      if (!by_fd && l.kind() != pb::FileLock::FLOCK && l.kind() != pb::FileLock::OFD)
        bad_input(strf("%s has a lock of unknown kind %d", who(d.id()).c_str(), static_cast<int>(l.kind())));
      if (!l.to_eof() && l.end() < l.start()) bad_input(who(d.id()) + ": a lock that ends before it starts");
      bool found = false;
      for (const auto& f : fds) found |= f.desc() == d.id() && (!by_fd || (f.pid() == l.pid() && f.fd() == l.fd()));
      if (!found && by_fd)
        bad_input(strf("%s: its %s is held through fd %d of pid %u, which is not in the image", who(d.id()).c_str(),
                       l.kind() == pb::FileLock::POSIX ? "POSIX lock" : "lease", l.fd(), l.pid()));
      if (!found) bad_input(who(d.id()) + ": a " + lock_name(l) + " on a description that no fd names");
    }
    if (d.kind() == pb::FILE_EPOLL) {
      bool found = false;
      for (const auto& f : fds) found |= f.pid() == d.owner_pid() && f.fd() == d.owner_fd() && f.desc() == d.id();
      if (!found && !d.epoll().empty()) bad_input(strf("%s: its owner fd %d of pid %u is not in the image", who(d.id()).c_str(), d.owner_fd(), d.owner_pid()));
      for (const auto& t : d.epoll())
        if (!seen.count({static_cast<pid_t>(d.owner_pid()), t.tfd()}))
          bad_input(strf("%s: epoll target fd %d is not in the image", who(d.id()).c_str(), t.tfd()));
    }
  }
}

void FileRestorer::inherit(const std::string& name, int fd) { inherited_[name] = fd; }

void FileRestorer::open_all(const std::vector<pb::FileDesc>& descs, const std::vector<pb::Fd>& fds, int base) {
  close_all();
  validate_file_table(descs, fds);
  for (const auto& d : descs) desc_by_id_.emplace(d.id(), &d);
  int max_target = -1;
  for (const auto& f : fds) {
    first_fd_.emplace(f.desc(), std::make_pair(static_cast<pid_t>(f.pid()), f.fd()));
    max_target = std::max(max_target, f.fd());
  }
  std::map<std::string, const std::string*> contents;  // pipe key -> data carried by one desc
  std::map<std::string, uint32_t> pipe_sizes;
  task_locks_.clear();
  flocks_.clear();
  for (const auto& d : descs) {
    const std::string key = inode_key(d);
    if (!d.pipe_data().empty() && !contents.count(key)) contents[key] = &d.pipe_data();
    pipe_sizes[key] = std::max(pipe_sizes[key], d.pipe_size());
    for (const auto& l : d.locks()) {  // (checked by validate_file_table)
      if (l.kind() == pb::FileLock::FLOCK) {
        // Taken in install() by the process that took it, if it holds the
        // description, else by the first that does: /proc/locks shows a
        // flock's taker.
        pid_t by = 0;
        int at_fd = -1;
        for (const auto& f : fds)
          if (f.desc() == d.id() && (by == 0 || (f.pid() == l.pid() && static_cast<pid_t>(f.pid()) != by))) {
            by = static_cast<pid_t>(f.pid());
            at_fd = f.fd();
          }
        flocks_[by].push_back({at_fd, l.write(), lock_who(l, d.id())});
      } else if (l.kind() == pb::FileLock::POSIX || l.kind() == pb::FileLock::LEASE) {
        task_locks_[static_cast<pid_t>(l.pid())].push_back({l, lock_who(l, d.id())});
      }
    }
  }
  next_ = std::max(base, max_target + 1);

  std::string inotify_dummy;  // throwaway directory for burning inotify wds
  try {
    std::set<std::string> used_ends;
    // Everything but sockets and epolls first, in id order; then sockets
    // (their queues may carry the others in flight); then epolls (targets
    // are added by install()).
    std::vector<const pb::FileDesc*> order;
    for (const auto& d : descs) if (d.kind() != pb::FILE_EPOLL && d.kind() != pb::FILE_SOCKET) order.push_back(&d);
    for (const auto& d : descs) if (d.kind() == pb::FILE_EPOLL) order.push_back(&d);
    bool sockets_done = false;
    auto open_sockets = [&] {
      sockets_done = true;
      if (!sockets_ || sockets_->empty()) return;
      auto made = sockets_->open_all(descs, [&](uint32_t id) { return fd_of(id); }, [&](uint32_t id) { return who(id); });
      for (auto& [id, fd] : made) open_[id] = place(fd);
    };

    for (const pb::FileDesc* dp : order) {
      const pb::FileDesc& d = *dp;
      if (d.kind() == pb::FILE_EPOLL && !sockets_done) open_sockets();
      const std::string w = who(d.id());
      // A mapped file, a removed cwd (a process owns it, no fd names it):
      // the inode is all.  A file in flight (no owner) is opened for its
      // socket.
      if (!first_fd_.count(d.id()) && d.owner_pid() != 0) {
        if (needs_inode(d)) made_fd(d);
        continue;
      }
      const std::string key = inode_key(d);
      const uint32_t oflags = d.flags() & kOpenFlagMask;
      auto nb = (d.flags() & O_NONBLOCK) != 0;
      int fd = -1;
      // What ck-restore rebuilds is what the restorability check accepted
      // (restorable.h): one case per supported kind of kinds.h.
      const KindId kid = kind_of(d);
      switch (kid) {
        case KindId::kFdPipeExternal:
        case KindId::kFdFifoExternal: {
          auto it = inherited_.find(d.external());
          if (it == inherited_.end()) fail(strf("internal: no replacement for the external %s of %s", d.external().c_str(), w.c_str()));
          fd = ::fcntl(it->second, F_DUPFD_CLOEXEC, 0);
          if (fd < 0) throw_errno(strf("unable to take the replacement of %s for %s", d.external().c_str(), w.c_str()));
          break;
        }
        case KindId::kFdFile:
        case KindId::kFdFileDeleted:
        case KindId::kFdMemfd: {
          if (d.kind() == pb::FILE_REG && !d.deleted()) {
            fd = ::open(d.path().c_str(), static_cast<int>(oflags));
            if (fd < 0) throw_errno("unable to open '" + d.path() + "' for " + w);
            break;
          }
          std::string again = strf("/proc/self/fd/%d", made_fd(d));
          fd = ::open(again.c_str(), static_cast<int>(oflags));
          if (fd < 0) throw_errno("unable to reopen '" + d.path() + "' for " + w);
          break;
        }
        case KindId::kFdDirDeleted: {
          std::string again = strf("/proc/self/fd/%d", made_fd(d));
          fd = ::open(again.c_str(), static_cast<int>(oflags));
          if (fd < 0) throw_errno("unable to reopen removed directory '" + d.path() + "' for " + w);
          break;
        }
        case KindId::kFdTty:
        case KindId::kFdDevice:
          if (d.tty()) {  // only ever the caller's terminal (--shell-job)
            if (terminal_.empty())  // the restorability check refuses it without --shell-job
              fail(strf("internal: %s is the terminal '%s' and ck-restore has none to give", w.c_str(), d.path().c_str()));
            const std::string& path = d.path() == "/dev/tty" ? d.path() : terminal_;
            fd = ::open(path.c_str(), static_cast<int>(oflags | O_NOCTTY));
            if (fd < 0) throw_errno("unable to open the terminal '" + path + "' for " + w);
            if (!::isatty(fd)) {
              ::close(fd);
              fail("unable to open the terminal '" + path + "' for " + w + ": not a terminal");
            }
            break;
          }
          [[fallthrough]];
        case KindId::kFdDir:
          fd = ::open(d.path().c_str(), static_cast<int>(oflags | (d.kind() == pb::FILE_CHR ? O_NOCTTY : 0)));
          if (fd < 0) throw_errno("unable to open '" + d.path() + "' for " + w);
          if (d.kind() == pb::FILE_CHR && d.rdev() != 0) {
            struct stat st;
            if (::fstat(fd, &st) == 0 && st.st_rdev != d.rdev()) {
              ::close(fd);
              fail(strf("unable to open '%s' for %s: it is device %u:%u, the image has %u:%u", d.path().c_str(), w.c_str(),
                        major(st.st_rdev), minor(st.st_rdev), major(d.rdev()), minor(d.rdev())));
            }
          }
          break;
        case KindId::kFdPipe:
        case KindId::kFdFifo: {
          auto it = pipes_.find(key);
          if (it == pipes_.end()) {
            int pp[2];
            if (d.kind() == pb::FILE_PIPE) {
              if (::pipe2(pp, O_NONBLOCK | O_CLOEXEC) < 0) throw_errno("unable to create a pipe for " + w);
            } else {
              pp[0] = pp[1] = d.deleted() ? ::fcntl(made_fd(d), F_DUPFD_CLOEXEC, 0)
                                          : ::open(d.path().c_str(), O_RDWR | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
              if (pp[0] < 0) throw_errno("unable to open '" + d.path() + "' for " + w);
              struct stat st;
              if (::fstat(pp[0], &st) < 0 || !S_ISFIFO(st.st_mode)) {  // never write pipe data into a file
                ::close(pp[0]);
                fail("unable to open '" + d.path() + "' for " + w + ": not a FIFO");
              }
            }
            holders_.push_back(pp[0]);
            if (pp[1] != pp[0]) holders_.push_back(pp[1]);
            it = pipes_.emplace(key, std::make_pair(pp[0], pp[1])).first;
            uint32_t size = pipe_sizes[key];
            int cur = ::fcntl(pp[1], F_GETPIPE_SZ);
            if (size > 0 && cur >= 0 && static_cast<uint32_t>(cur) != size && ::fcntl(pp[1], F_SETPIPE_SZ, size) < 0)
              LOG_WARN("unable to set the pipe size of %s to %u (keeping %d): %s", w.c_str(), size, cur, std::strerror(errno));
            if (contents.count(key))
              write_all_nb(pp[1], *contents[key], "unable to refill the pipe of " + w);
          }
          bool write_end = (d.flags() & O_ACCMODE) == O_WRONLY;
          int end = write_end ? it->second.second : it->second.first;
          if (d.kind() == pb::FILE_PIPE && used_ends.insert(key + (write_end ? "w" : "r")).second) {
            fd = ::fcntl(end, F_DUPFD_CLOEXEC, 0);  // the pipe's own description
            if (fd < 0) throw_errno("unable to duplicate the pipe for " + w);
          } else {
            std::string again = strf("/proc/self/fd/%d", end);
            fd = ::open(again.c_str(), static_cast<int>((oflags & ~O_NONBLOCK) | O_NONBLOCK));
            if (fd < 0) throw_errno("unable to open '" + (d.kind() == pb::FILE_FIFO ? d.path() : again) + "' for " + w);
          }
          set_status_flags(fd, d.flags(), "unable to set the flags of the pipe for " + w);
          break;
        }
        case KindId::kFdEventfd: {
          int f = EFD_CLOEXEC | EFD_NONBLOCK | ((d.eventfd_flags() & 1) ? EFD_SEMAPHORE : 0);
          fd = ::eventfd(0, f);
          if (fd < 0) throw_errno("unable to create an eventfd for " + w);
          uint64_t c = d.eventfd_count();
          if (c == UINT64_MAX) bad_input(w + ": eventfd count out of range");
          if (c > 0 && ::write(fd, &c, sizeof c) != sizeof c) {
            ::close(fd);
            throw_errno("unable to set the eventfd count for " + w);
          }
          set_status_flags(fd, nb ? O_NONBLOCK : 0, "unable to set the flags of the eventfd for " + w);
          break;
        }
        case KindId::kFdSignalfd: {
          uint64_t mask = d.signalfd_mask();
          fd = static_cast<int>(::syscall(SYS_signalfd4, -1, &mask, sizeof mask, SFD_CLOEXEC | (nb ? SFD_NONBLOCK : 0)));
          if (fd < 0) throw_errno("unable to create a signalfd for " + w);
          break;
        }
        case KindId::kFdTimerfd: {
          fd = ::timerfd_create(d.timer_clock(), TFD_CLOEXEC | (nb ? TFD_NONBLOCK : 0));
          if (fd < 0) throw_errno(strf("unable to create a timerfd (clock %d) for %s", d.timer_clock(), w.c_str()));
          itimerspec its = {};
          its.it_value.tv_sec = static_cast<time_t>(d.timer_value_ns() / 1000000000);
          its.it_value.tv_nsec = static_cast<long>(d.timer_value_ns() % 1000000000);
          its.it_interval.tv_sec = static_cast<time_t>(d.timer_interval_ns() / 1000000000);
          its.it_interval.tv_nsec = static_cast<long>(d.timer_interval_ns() % 1000000000);
          if (d.timer_value_ns() != 0 && ::timerfd_settime(fd, 0, &its, nullptr) < 0) {
            ::close(fd);
            throw_errno("unable to arm the timerfd for " + w);
          }
          uint64_t ticks = d.timer_ticks();
          if (ticks > 0 && ::ioctl(fd, TFD_IOC_SET_TICKS, &ticks) < 0)
            LOG_WARN("unable to restore %llu expirations of the timerfd for %s: %s", static_cast<unsigned long long>(ticks),
                     w.c_str(), std::strerror(errno));
          break;
        }
        case KindId::kFdInotify: {
          fd = ::inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
          if (fd < 0) throw_errno("unable to create an inotify instance for " + w);
          ScopedFd guard(fd);
          std::vector<pb::InotifyWatch> ws(d.watches().begin(), d.watches().end());
          std::sort(ws.begin(), ws.end(), [](const auto& a, const auto& b) { return a.wd() < b.wd(); });
          int last = 0;
          for (const auto& wt : ws) {
            if (wt.path().empty() || wt.path()[0] != '/') bad_input(w + ": inotify watch with a relative path");
            // Burn watch numbers until the next one handed out is wt.wd().
            for (int n = 0; last + 1 < wt.wd() && n < 65536; ++n) {
              if (inotify_dummy.empty()) {
                char tmpl[] = "/tmp/ck-inotify-XXXXXX";
                if (!::mkdtemp(tmpl)) throw_errno("unable to create a directory in '/tmp'");
                inotify_dummy = tmpl;
              }
              int k = ::inotify_add_watch(fd, inotify_dummy.c_str(), IN_ATTRIB);
              if (k < 0) throw_errno("unable to add an inotify watch for " + w);
              ::inotify_rm_watch(fd, k);
              last = k;
            }
            int got = ::inotify_add_watch(fd, wt.path().c_str(), wt.mask());
            if (got < 0) throw_errno(strf("unable to watch '%s' for %s", wt.path().c_str(), w.c_str()));
            if (got != wt.wd()) LOG_WARN("inotify watch on '%s' for %s is wd %d, was %d", wt.path().c_str(), w.c_str(), got, wt.wd());
            last = got;
          }
          char buf[4096];  // drop the IN_IGNORED events of the throwaway watches
          while (::read(fd, buf, sizeof buf) > 0) {
          }
          set_status_flags(fd, nb ? O_NONBLOCK : 0, "unable to set the flags of the inotify instance for " + w);
          guard.extract();
          break;
        }
        case KindId::kFdEpoll:
          fd = ::epoll_create1(EPOLL_CLOEXEC);
          if (fd < 0) throw_errno("unable to create an epoll instance for " + w);
          break;
        default:
          fail(strf("internal: %s is of kind %s, which nothing rebuilds", w.c_str(), kind(kid).name));
      }
      if (d.kind() == pb::FILE_REG || d.kind() == pb::FILE_MEMFD || d.kind() == pb::FILE_DIR) {
        if (!(d.flags() & O_PATH) && d.pos() != 0 && ::lseek(fd, static_cast<off_t>(d.pos()), SEEK_SET) < 0) {
          int err = errno;
          ::close(fd);
          throw_errno(strf("unable to seek '%s' to %llu for %s", d.path().c_str(), static_cast<unsigned long long>(d.pos()), w.c_str()), err);
        }
      }
      open_[d.id()] = place(fd);
      take_locks(d, open_[d.id()]);
    }
    if (!sockets_done) open_sockets();
    if (!inotify_dummy.empty()) ::rmdir(inotify_dummy.c_str());
  } catch (...) {
    if (!inotify_dummy.empty()) ::rmdir(inotify_dummy.c_str());
    close_all();
    throw;
  }
  for (int h : holders_) ::close(h);
  holders_.clear();
  pipes_.clear();

  for (const auto& f : fds)
    slots_[static_cast<pid_t>(f.pid())].push_back({f.fd(), open_.at(f.desc()), f.cloexec()});
  for (const auto& d : descs) {
    if (d.kind() != pb::FILE_EPOLL) continue;
    for (const auto& t : d.epoll())
      epoll_adds_[static_cast<pid_t>(d.owner_pid())].push_back({d.owner_fd(), t.tfd(), t.events(), t.data()});
  }
  LOG_DEBUG("opened %zu descriptions for %zu fds at %d and above", open_.size(), fds.size(), std::max(base, max_target + 1));
}

void FileRestorer::install(pid_t pid, const std::vector<int>& keep) {
  std::vector<int> keepers(keep);
  auto sit = slots_.find(pid);
  if (sit != slots_.end()) {
    for (const Slot& s : sit->second) {
      if (::dup2(s.from, s.target) < 0) throw_errno(strf("unable to install fd %d of pid %d", s.target, pid));
      if (s.cloexec && ::fcntl(s.target, F_SETFD, FD_CLOEXEC) < 0) throw_errno(strf("unable to set cloexec on fd %d of pid %d", s.target, pid));
      keepers.push_back(s.target);
    }
  }
  std::sort(keepers.begin(), keepers.end());
  unsigned lo = 0;
  for (int k : keepers) {
    if (k < 0) continue;
    if (static_cast<unsigned>(k) > lo) ::syscall(SYS_close_range, lo, static_cast<unsigned>(k) - 1, 0);
    lo = static_cast<unsigned>(k) + 1;
  }
  ::syscall(SYS_close_range, lo, ~0u, 0);
  // The restorer-side fds are gone in this process: forget them so that
  // close_all() or the destructor cannot close a number reused since.
  open_.clear();
  holders_.clear();
  for (auto& [key, m] : made_) m.fd = -1;
  auto fit = flocks_.find(pid);
  if (fit != flocks_.end())
    for (const Flock& f : fit->second)
      if (::flock(f.fd, (f.exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) != 0) {
        int err = errno;
        if (err == EWOULDBLOCK) fail("unable to take the " + f.what + " again: another process holds a lock in its way");
        throw_errno("unable to take the " + f.what + " again", err);
      }
  auto eit = epoll_adds_.find(pid);
  if (eit != epoll_adds_.end()) {
    for (const EpollAdd& a : eit->second) {
      epoll_event ev = {};
      ev.events = a.events;
      ev.data.u64 = a.data;
      if (::epoll_ctl(a.epfd, EPOLL_CTL_ADD, a.tfd, &ev) < 0)
        throw_errno(strf("unable to add target fd %d to epoll fd %d of pid %d", a.tfd, a.epfd, pid));
    }
  }
}

void FileRestorer::close_all() {
  for (auto& [id, fd] : open_) ::close(fd);
  for (int h : holders_) ::close(h);
  open_.clear();
  holders_.clear();
  pipes_.clear();
  desc_by_id_.clear();
  first_fd_.clear();
  slots_.clear();
  epoll_adds_.clear();
}

}  // namespace ck
