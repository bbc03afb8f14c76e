// Dump side of file descriptors: reads /proc/PID/fd, /proc/PID/fdinfo and,
// where the state is only reachable through the file itself, a second
// description of it (opened through the /proc magic link) or a duplicate of
// the target's own (pidfd_getfd).  Nothing here changes what the target sees:
//  - pipe and FIFO data is duplicated with tee(2) from a second read end into
//    a private pipe (tee does not consume), then read from there;
//  - deleted files and memfds are read through a new description (so the
//    target's offset does not move), opened O_NOATIME (so the dump does not
//    change their atime either): their data extents (SEEK_DATA/SEEK_HOLE)
//    are hashed through a read-only mapping and spliced to the stream.
#include <dirent.h>
#include <fcntl.h>
#include <linux/kcmp.h>
#include <linux/magic.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstring>

#include "error.h"
#include "fd.h"
#include "files.h"
#include "kinds.h"
#include "log.h"
#include "memread.h"
#include "proc.h"
#include "stream.h"
#include "tty.h"

CK_LOG_MODULE("files");

namespace ck {
namespace {

int kcmp(pid_t p1, pid_t p2, int type, unsigned long i1, unsigned long i2) {
  return static_cast<int>(::syscall(SYS_kcmp, p1, p2, type, i1, i2));
}

std::vector<int> list_fds(pid_t pid) {
  std::string dir = strf("/proc/%d/fd", pid);
  DIR* d = ::opendir(dir.c_str());
  if (!d) throw_errno("unable to read '" + dir + "'");
  std::vector<int> out;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    out.push_back(std::atoi(e->d_name));
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> split_ws(const std::string& s) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
    size_t j = i;
    while (j < s.size() && s[j] != ' ' && s[j] != '\t') ++j;
    if (j > i) out.push_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

bool fdinfo_field(const std::string& info, const std::string& key, std::string* value) {
  size_t at = 0;
  while (at < info.size()) {
    size_t nl = info.find('\n', at);
    if (nl == std::string::npos) nl = info.size();
    if (info.compare(at, key.size(), key) == 0 && at + key.size() < nl && info[at + key.size()] == ':') {
      size_t v = at + key.size() + 1;
      while (v < nl && (info[v] == ' ' || info[v] == '\t')) ++v;
      *value = info.substr(v, nl - v);
      return true;
    }
    at = nl + 1;
  }
  return false;
}

std::string token_value(const std::vector<std::string>& toks, const std::string& key) {
  for (const auto& t : toks)
    if (t.size() > key.size() && t.compare(0, key.size(), key) == 0 && t[key.size()] == ':')
      return t.substr(key.size() + 1);
  return {};
}

// Reads the queued bytes of the pipe or FIFO behind proc_path without taking
// them: a second read end, tee(2) into a private pipe of the same size.
std::string peek_pipe(const std::string& proc_path, uint32_t* size_out) {
  ScopedFd r(::open(proc_path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  if (!r.valid()) throw_errno("unable to open a read end of '" + proc_path + "'");
  int size = ::fcntl(r.get(), F_GETPIPE_SZ);
  if (size < 0) throw_errno("unable to get the pipe size of '" + proc_path + "'");
  *size_out = static_cast<uint32_t>(size);
  int queued = 0;
  if (::ioctl(r.get(), FIONREAD, &queued) < 0) throw_errno("unable to count pipe bytes of '" + proc_path + "'");
  if (queued == 0) return {};
  int pp[2];
  if (::pipe2(pp, O_NONBLOCK | O_CLOEXEC) < 0) throw_errno("unable to create a pipe");
  ScopedFd pr(pp[0]), pw(pp[1]);
  if (::fcntl(pw.get(), F_SETPIPE_SZ, size) < size)
    throw_errno(strf("unable to size a private pipe to %d bytes", size));
  ssize_t t = ::tee(r.get(), pw.get(), static_cast<size_t>(queued), SPLICE_F_NONBLOCK);
  if (t < 0) throw_errno("unable to tee pipe data of '" + proc_path + "'");
  if (t != queued) fail(strf("unable to tee pipe data of '%s': got %zd of %d bytes", proc_path.c_str(), t, queued));
  std::string data(static_cast<size_t>(queued), '\0');
  if (read_full(pr.get(), data.data(), data.size()) != data.size())
    fail("unable to read pipe data of '" + proc_path + "': short read");
  return data;
}

const char kDeletedSuffix[] = " (deleted)";

bool ends_deleted(const std::string& s) {
  const size_t n = sizeof kDeletedSuffix - 1;
  return s.size() > n && s.compare(s.size() - n, n, kDeletedSuffix) == 0;
}

// One lock as lock_get_status() prints it, in fdinfo ("lock:\t1: ...") and
// in /proc/locks ("1: ..."), with the same text from the kind on:
//   POSIX  ADVISORY  WRITE 4242 08:01:1234 0 EOF
//   FLOCK  ADVISORY  READ 4242 00:1a:77 0 EOF
//   OFDLCK ADVISORY  WRITE -1 08:01:1234 100 199
//   LEASE  ACTIVE    READ 4242 08:01:1234 0 EOF
// Waiters ("1: -> POSIX ...") are not locks held and are skipped.
struct LockLine {
  pb::FileLock lock;
  std::string text;     // tokens from the kind on, single-spaced
  std::string inode;    // "08:01:1234"
  long pid = 0;         // as printed (-1 for OFD locks)
  std::string why;      // non-empty: it cannot be taken again, and why
};

bool parse_lock(const std::string& line, LockLine* out) {
  std::vector<std::string> t = split_ws(line);
  if (t.size() < 2 || t[0].empty() || t[0].back() != ':' || t[1] == "->") return false;
  t.erase(t.begin());
  if (t.size() < 7) return false;
  LockLine l;
  for (size_t i = 0; i < t.size(); ++i) l.text += (i ? " " : "") + t[i];
  const std::string& kind = t[0];
  l.pid = std::strtol(t[3].c_str(), nullptr, 10);
  l.inode = t[4];
  if (t[2] == "UNLCK") return false;  // nothing held
  l.lock.set_write(t[2] == "WRITE");
  if (kind == "POSIX" || kind == "OFDLCK") {
    l.lock.set_kind(kind == "POSIX" ? pb::FileLock::POSIX : pb::FileLock::OFD);
    l.lock.set_start(std::strtoull(t[5].c_str(), nullptr, 10));
    if (t[6] == "EOF")
      l.lock.set_to_eof(true);
    else
      l.lock.set_end(std::strtoull(t[6].c_str(), nullptr, 10));
    if (t[1] != "ADVISORY") l.why = "it is not an advisory lock";
  } else if (kind == "FLOCK") {
    l.lock.set_kind(pb::FileLock::FLOCK);
  } else if (kind == "LEASE") {
    l.lock.set_kind(pb::FileLock::LEASE);
    if (t[1] != "ACTIVE") l.why = "a break of the lease is in progress";
  } else {
    l.why = "a lock of kind " + kind;  // DELEG (nfsd), ACCESS, UNKNOWN
  }
  if (l.inode.find("none") != std::string::npos) l.why = "a lock without an inode";
  *out = l;
  return true;
}

// The locks an fdinfo shows.
std::vector<LockLine> fd_locks(const std::string& info) {
  std::vector<LockLine> out;
  size_t at = 0;
  while ((at = info.find("lock:", at)) != std::string::npos) {
    size_t nl = info.find('\n', at);
    std::string line = info.substr(at + 5, nl == std::string::npos ? std::string::npos : nl - at - 5);
    at = nl == std::string::npos ? info.size() : nl + 1;
    LockLine l;
    if (parse_lock(line, &l)) out.push_back(l);
  }
  return out;
}

int64_t ns_of(const struct timespec& t) { return static_cast<int64_t>(t.tv_sec) * 1000000000 + t.tv_nsec; }

// Owner, mode, size and times of the inode, as the description keeps them.
void set_inode(pb::FileDesc* d, const struct stat& st) {
  d->set_dev(st.st_dev);
  d->set_ino(st.st_ino);
  d->set_mode(st.st_mode);
  d->set_size(static_cast<uint64_t>(st.st_size));
  d->set_uid(st.st_uid);
  d->set_gid(st.st_gid);
  d->set_mtime_ns(ns_of(st.st_mtim));
  d->set_atime_ns(ns_of(st.st_atim));
}

// The kernel's internal dev_t (inotify's sdev) -> "maj:min" of mountinfo.
std::string kdev_str(uint64_t kdev) {
  return strf("%u:%u", static_cast<unsigned>(kdev >> 20), static_cast<unsigned>(kdev & 0xfffff));
}

std::string unescape_mount(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && std::isdigit(static_cast<unsigned char>(s[i + 1]))) {
      out.push_back(static_cast<char>(std::strtol(s.substr(i + 1, 3).c_str(), nullptr, 8)));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

// Resolves an inotify watch's file handle to a path, through any mount of
// its filesystem in pid's mount table.
std::string resolve_fhandle(pid_t pid, uint64_t sdev, int type, const std::string& hex) {
  std::vector<unsigned char> raw;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    raw.push_back(static_cast<unsigned char>(std::strtoul(hex.substr(i, 2).c_str(), nullptr, 16)));
  std::vector<char> buf(sizeof(file_handle) + raw.size());
  auto* fh = reinterpret_cast<file_handle*>(buf.data());
  fh->handle_bytes = static_cast<unsigned>(raw.size());
  fh->handle_type = type;
  std::memcpy(fh->f_handle, raw.data(), raw.size());

  std::string want = kdev_str(sdev);
  std::string mi = read_file(strf("/proc/%d/mountinfo", pid));
  size_t at = 0;
  int last_err = ENOENT;
  while (at < mi.size()) {
    size_t nl = mi.find('\n', at);
    if (nl == std::string::npos) nl = mi.size();
    std::vector<std::string> f = split_ws(mi.substr(at, nl - at));
    at = nl + 1;
    if (f.size() < 5 || f[2] != want) continue;
    std::string mnt = strf("/proc/%d/root", pid) + unescape_mount(f[4]);
    // Not O_PATH: open_by_handle_at() does not take an O_PATH mount fd.
    ScopedFd m(::open(mnt.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
    if (!m.valid()) continue;
    ScopedFd h(::open_by_handle_at(m.get(), fh, O_PATH | O_CLOEXEC));
    if (!h.valid()) {
      last_err = errno;
      continue;
    }
    return read_link(strf("/proc/self/fd/%d", h.get()));
  }
  throw_errno("unable to resolve the watched file", last_err);
}

const char* socket_type_name(int type) {
  switch (type) {
    case SOCK_STREAM: return "SOCK_STREAM";
    case SOCK_DGRAM: return "SOCK_DGRAM";
    case SOCK_SEQPACKET: return "SOCK_SEQPACKET";
    case SOCK_RAW: return "SOCK_RAW";
    case SOCK_RDM: return "SOCK_RDM";
    default: return "SOCK_?";
  }
}

// "127.0.0.1:8000", "[::1]:8000", "/run/x.sock", "@abstract", "" (unbound).
std::string sockaddr_text(const sockaddr_storage& ss, socklen_t len) {
  char buf[INET6_ADDRSTRLEN] = "";
  switch (ss.ss_family) {
    case AF_INET: {
      auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
      inet_ntop(AF_INET, &a->sin_addr, buf, sizeof buf);
      return strf("%s:%u", buf, ntohs(a->sin_port));
    }
    case AF_INET6: {
      auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
      inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof buf);
      return strf("[%s]:%u", buf, ntohs(a->sin6_port));
    }
    case AF_UNIX: {
      auto* a = reinterpret_cast<const sockaddr_un*>(&ss);
      size_t n = len > offsetof(sockaddr_un, sun_path) ? len - offsetof(sockaddr_un, sun_path) : 0;
      if (n == 0) return "";  // unnamed (socketpair, unbound)
      if (a->sun_path[0] == '\0') return "@" + std::string(a->sun_path + 1, n - 1);
      return std::string(a->sun_path, strnlen(a->sun_path, n));
    }
    default:
      return "";
  }
}

// What messages name a socket by: family, type, protocol, both addresses,
// listening.  Read through a duplicate of the task's own socket.
void describe_socket(int s, pb::FileDesc* d) {
  int family = 0, type = 0, proto = 0, acc = 0;
  socklen_t len = sizeof family;
  if (::getsockopt(s, SOL_SOCKET, SO_DOMAIN, &family, &len) < 0) throw_errno("unable to get its family");
  d->set_socket_family(socket_family_name(family));
  len = sizeof type;
  if (::getsockopt(s, SOL_SOCKET, SO_TYPE, &type, &len) == 0) d->set_socket_type(socket_type_name(type));
  len = sizeof proto;
  if (::getsockopt(s, SOL_SOCKET, SO_PROTOCOL, &proto, &len) == 0) d->set_socket_protocol(proto);
  len = sizeof acc;
  if (::getsockopt(s, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) == 0) d->set_socket_listening(acc != 0);
  sockaddr_storage ss = {};
  len = sizeof ss;
  if (::getsockname(s, reinterpret_cast<sockaddr*>(&ss), &len) == 0) d->set_socket_addr(sockaddr_text(ss, len));
  ss = {};
  len = sizeof ss;
  if (::getpeername(s, reinterpret_cast<sockaddr*>(&ss), &len) == 0) d->set_socket_peer(sockaddr_text(ss, len));
}

}  // namespace

std::string socket_family_name(int family) {
  switch (family) {
    case AF_UNIX: return "AF_UNIX";
    case AF_INET: return "AF_INET";
    case AF_INET6: return "AF_INET6";
    case AF_NETLINK: return "AF_NETLINK";
    case AF_PACKET: return "AF_PACKET";
    case AF_VSOCK: return "AF_VSOCK";
    case AF_ALG: return "AF_ALG";
    case AF_KEY: return "AF_KEY";
    case AF_BLUETOOTH: return "AF_BLUETOOTH";
    case AF_XDP: return "AF_XDP";
    default: return strf("AF_%d", family);
  }
}

std::string lock_name(const pb::FileLock& l) {
  auto range = [&] {
    return l.to_eof() ? strf(" on %llu-EOF", static_cast<unsigned long long>(l.start()))
                      : strf(" on %llu-%llu", static_cast<unsigned long long>(l.start()), static_cast<unsigned long long>(l.end()));
  };
  switch (l.kind()) {
    case pb::FileLock::FLOCK: return l.write() ? "exclusive flock" : "shared flock";
    case pb::FileLock::POSIX: return std::string(l.write() ? "POSIX write lock" : "POSIX read lock") + range();
    case pb::FileLock::OFD: return std::string(l.write() ? "OFD write lock" : "OFD read lock") + range();
    case pb::FileLock::LEASE: return l.write() ? "write lease" : "read lease";
    default: return strf("lock of kind %d", static_cast<int>(l.kind()));
  }
}

// ---- FileDumper ------------------------------------------------------------------

FileDumper::~FileDumper() {
  for (auto& [pid, fd] : pidfds_) ::close(fd);
}

int FileDumper::pidfd(pid_t pid) {
  auto it = pidfds_.find(pid);
  if (it != pidfds_.end()) return it->second;
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) throw_errno(strf("unable to open a pidfd for pid %d", pid));
  pidfds_[pid] = fd;
  return fd;
}

ScopedFd FileDumper::take(pid_t pid, int fd, const std::string& what) {
  int dup = static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd(pid), fd, 0));
  if (dup < 0) throw_errno(strf("unable to dump fd %d of pid %d (%s): unable to duplicate it", fd, pid, what.c_str()));
  return ScopedFd(dup);
}

void FileDumper::check_process(pid_t pid) {
  for (int fd : list_fds(pid)) one_fd(pid, fd, false);
}

void FileDumper::dump_process(pid_t pid) {
  for (int fd : list_fds(pid)) one_fd(pid, fd, true);
}

void FileDumper::check_external(const std::set<pid_t>& tree, const std::set<std::string>& accepted) {
  std::set<std::string> unused = accepted;
  if (ends_.empty()) {
    for (const auto& n : unused) LOG_WARN("--external '%s': the tree holds no such pipe or FIFO", n.c_str());
    return;
  }
  // Every process of the machine, by its fds: a pipe shows as "pipe:[INO]",
  // a FIFO as its path (then checked by inode).  Nothing here opens a file.
  std::map<std::string, std::pair<uint64_t, uint64_t>> by_link;
  for (const auto& [key, e] : ends_) by_link[e.name.compare(0, 5, "fifo:") == 0 ? e.name.substr(5) : e.name] = key;
  DIR* proc = ::opendir("/proc");
  if (!proc) throw_errno("unable to read '/proc'");
  std::map<std::pair<uint64_t, uint64_t>, std::pair<pid_t, int>> outside;
  while (dirent* de = ::readdir(proc)) {
    if (de->d_name[0] < '0' || de->d_name[0] > '9') continue;
    const pid_t q = std::atoi(de->d_name);
    if (tree.count(q)) continue;
    std::vector<int> qfds;
    try {
      qfds = list_fds(q);
    } catch (const Error&) {
      continue;  // exited, or a kernel thread
    }
    for (int qfd : qfds) {
      const std::string path = strf("/proc/%d/fd/%d", q, qfd);
      char buf[4096];
      ssize_t n = ::readlink(path.c_str(), buf, sizeof buf);
      if (n <= 0) continue;
      const std::string link(buf, static_cast<size_t>(n));
      auto it = by_link.find(link);
      if (it == by_link.end()) continue;
      struct stat st;
      if (ends_[it->second].name.compare(0, 5, "fifo:") == 0 &&
          (::stat(path.c_str(), &st) != 0 || std::make_pair(static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)) != it->second))
        continue;
      outside.emplace(it->second, std::make_pair(q, qfd));
    }
  }
  ::closedir(proc);
  for (auto& [key, e] : ends_) {
    auto o = outside.find(key);
    if (o == outside.end()) continue;
    if (accepted.count(e.name)) {
      e.accepted = e.name;
      unused.erase(e.name);
      LOG_INFO("%s of fd %d of pid %d is external (fd %d of pid %d holds it too): accepted", e.name.c_str(), e.fd, e.pid,
               o->second.second, o->second.first);
      continue;
    }
    const KindId k = e.name.compare(0, 5, "fifo:") == 0 ? KindId::kFdFifoExternal : KindId::kFdPipeExternal;
    std::string comm;
    try_read_file(strf("/proc/%d/comm", o->second.first), &comm);
    while (!comm.empty() && comm.back() == '\n') comm.pop_back();
    refuse_kind(k, strf("unable to dump fd %d of pid %d (%s)", e.fd, e.pid, e.name.c_str()),
                strf("fd %d of pid %d (%s), outside the tree, holds it too: accept it with --external '%s'",
                     o->second.second, o->second.first, comm.c_str(), e.name.c_str()));
  }
  for (const auto& n : unused) LOG_WARN("--external '%s': no process outside the tree holds it", n.c_str());
}

void FileDumper::one_fd(pid_t pid, int fd, bool record) {
  const std::string proc_path = strf("/proc/%d/fd/%d", pid, fd);
  std::string link;
  std::string info;
  struct stat st;
  // The fd may be gone only if the process is not frozen; name it anyway.
  try {
    link = read_link(proc_path);
    info = read_file(strf("/proc/%d/fdinfo/%d", pid, fd));
  } catch (const Error& e) {
    throw e.wrap(strf("unable to dump fd %d of pid %d", fd, pid));
  }
  if (::stat(proc_path.c_str(), &st) < 0) throw_errno(strf("unable to dump fd %d of pid %d: unable to stat '%s'", fd, pid, link.c_str()));
  auto refuse = [&](const std::string& what, const std::string& why) {
    fail(strf("unable to dump fd %d of pid %d (%s): %s", fd, pid, what.c_str(), why.c_str()));
  };
  std::string v;
  uint32_t flags = 0;
  uint64_t pos = 0;
  if (fdinfo_field(info, "flags", &v)) flags = static_cast<uint32_t>(std::strtoul(v.c_str(), nullptr, 8));
  if (fdinfo_field(info, "pos", &v)) pos = std::strtoull(v.c_str(), nullptr, 10);
  const bool cloexec = flags & O_CLOEXEC;
  flags &= ~static_cast<uint32_t>(O_CLOEXEC);
  const auto key = std::make_pair(static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino));

  if (record) {
    for (const Rep& r : by_inode_[key]) {
      int same = kcmp(pid, r.pid, KCMP_FILE, static_cast<unsigned long>(fd), static_cast<unsigned long>(r.fd));
      if (same < 0) throw_errno(strf("unable to dump fd %d of pid %d: unable to compare it with fd %d of pid %d", fd, pid, r.fd, r.pid));
      if (same == 0) {
        // POSIX locks belong to the process: this one's, through the
        // shared description, are its own (flock, OFD locks and leases
        // belong to the description and were recorded with it).
        for (const LockLine& l : fd_locks(info)) {
          if (!l.why.empty()) refuse(link, "it holds a " + lock_name(l.lock) + ", " + l.why + ": not supported");
          if (l.lock.kind() != pb::FileLock::POSIX || !posix_seen_.insert({r.id, l.text}).second) continue;
          pb::FileLock* k = descs_[r.id - 1].add_locks();
          *k = l.lock;
          k->set_pid(static_cast<uint32_t>(pid));
          k->set_fd(fd);
        }
        pb::Fd f;
        f.set_pid(static_cast<uint32_t>(pid));
        f.set_fd(fd);
        f.set_desc(r.id);
        f.set_cloexec(cloexec);
        fds_.push_back(f);
        LOG_DEBUG("fd %d of pid %d shares description %u", fd, pid, r.id);
        return;
      }
    }
  }

  pb::FileDesc d;
  d.set_path(link);
  d.set_flags(flags);
  d.set_pos(pos);
  set_inode(&d, st);
  d.set_owner_pid(static_cast<uint32_t>(pid));
  d.set_owner_fd(fd);
  d.set_id(static_cast<uint32_t>(descs_.size() + 1));
  for (const LockLine& l : fd_locks(info)) {
    if (!l.why.empty()) refuse(link, "it holds a " + lock_name(l.lock) + ", " + l.why + ": not supported");
    if (!record) continue;
    if (l.lock.kind() == pb::FileLock::POSIX) posix_seen_.insert({d.id(), l.text});
    pb::FileLock* k = d.add_locks();
    *k = l.lock;
    // POSIX locks and leases are taken again by this process through this
    // fd; a flock by the process that took it (its pid shows in the lock)
    // if it holds the description too, else by this one.
    k->set_pid(static_cast<uint32_t>(k->kind() == pb::FileLock::FLOCK && l.pid > 0 ? l.pid : pid));
    k->set_fd(fd);
  }

  auto starts = [&](const char* p) { return link.compare(0, std::strlen(p), p) == 0; };
  const std::string deleted_suffix = kDeletedSuffix;
  const bool marked_deleted = ends_deleted(link);
  // Whether the inode behind a link marked deleted has really lost its path
  // (a file may be named "x (deleted)"; another may have its old name now).
  auto really_deleted = [&](const std::string& real) {
    struct stat now;
    return st.st_nlink == 0 || ::stat(real.c_str(), &now) < 0 || now.st_ino != st.st_ino || now.st_dev != st.st_dev;
  };

  if (starts("socket:[")) {
    ScopedFd s = take(pid, fd, "socket");
    d.set_kind(pb::FILE_SOCKET);
    with_context(strf("unable to dump fd %d of pid %d (socket)", fd, pid), [&] { describe_socket(s.get(), &d); });
  } else if (starts("pipe:[") || (S_ISFIFO(st.st_mode) && link[0] == '/')) {
    bool fifo = !starts("pipe:[");
    d.set_kind(fifo ? pb::FILE_FIFO : pb::FILE_PIPE);
    d.set_pipe_id(st.st_ino);
    if (fifo && marked_deleted) {
      std::string real = link.substr(0, link.size() - deleted_suffix.size());
      if (really_deleted(real)) {
        d.set_path(real);
        d.set_deleted(true);  // made again for the restore, and unlinked again
      }
    }
    auto ext = ends_.find(key);
    if (record && (ext == ends_.end() || ext->second.accepted.empty())) {
      uint32_t size = 0;
      std::string data = with_context(strf("unable to dump fd %d of pid %d (%s)", fd, pid, link.c_str()),
                                       [&] { return peek_pipe(proc_path, &size); });
      d.set_pipe_size(size);
      if (pipes_with_data_.insert(key).second) d.set_pipe_data(data);
    }
  } else if (link == "anon_inode:[pidfd]" || starts("pidfd:")) {
    d.set_kind(pb::FILE_PIDFD);
  } else if (link == "anon_inode:[eventfd]") {
    d.set_kind(pb::FILE_EVENTFD);
    if (!fdinfo_field(info, "eventfd-count", &v)) refuse(link, "no eventfd-count in fdinfo");
    d.set_eventfd_count(std::strtoull(v.c_str(), nullptr, 16));
    uint32_t ef = flags & O_NONBLOCK;
    if (fdinfo_field(info, "eventfd-semaphore", &v) && std::atoi(v.c_str()) != 0) ef |= 1;  // EFD_SEMAPHORE
    d.set_eventfd_flags(ef);
  } else if (link == "anon_inode:[eventpoll]") {
    d.set_kind(pb::FILE_EPOLL);
    size_t at = 0;
    while ((at = info.find("tfd:", at)) != std::string::npos) {
      size_t nl = info.find('\n', at);
      std::vector<std::string> t = split_ws(info.substr(at, nl == std::string::npos ? std::string::npos : nl - at));
      at = nl == std::string::npos ? info.size() : nl + 1;
      // "tfd: 5 events: 19 data: 1 pos:0 ino:.. sdev:.."
      if (t.size() < 6 || t[0] != "tfd:" || t[2] != "events:" || t[4] != "data:") refuse(link, "unreadable epoll fdinfo");
      pb::EpollTarget* e = d.add_epoll();
      e->set_tfd(std::atoi(t[1].c_str()));
      e->set_events(static_cast<uint32_t>(std::strtoul(t[3].c_str(), nullptr, 16)));
      e->set_data(std::strtoull(t[5].c_str(), nullptr, 16));
      // The target is registered under (file, fd number); the number must
      // still name that file in this process or we cannot rebuild it.
      struct kcmp_epoll_slot slot = {static_cast<__u32>(fd), static_cast<__u32>(e->tfd()), 0};
      if (kcmp(pid, pid, KCMP_EPOLL_TFD, static_cast<unsigned long>(e->tfd()), reinterpret_cast<unsigned long>(&slot)) != 0)
        refuse(link, strf("target fd %d is closed or replaced: not supported", e->tfd()));
    }
  } else if (link == "anon_inode:[signalfd]") {
    d.set_kind(pb::FILE_SIGNALFD);
    if (!fdinfo_field(info, "sigmask", &v)) refuse(link, "no sigmask in fdinfo");
    d.set_signalfd_mask(std::strtoull(v.c_str(), nullptr, 16));
  } else if (link == "anon_inode:[timerfd]") {
    d.set_kind(pb::FILE_TIMERFD);
    if (!fdinfo_field(info, "clockid", &v)) refuse(link, "no clockid in fdinfo");
    d.set_timer_clock(std::atoi(v.c_str()));
    if (fdinfo_field(info, "ticks", &v)) d.set_timer_ticks(std::strtoull(v.c_str(), nullptr, 10));
    auto ts = [&](const char* k) -> uint64_t {
      if (!fdinfo_field(info, k, &v)) refuse(link, strf("no %s in fdinfo", k));
      unsigned long long s = 0, ns = 0;
      if (std::sscanf(v.c_str(), "(%llu, %llu)", &s, &ns) != 2) refuse(link, strf("unreadable %s in fdinfo", k));
      return s * 1000000000ull + ns;
    };
    d.set_timer_value_ns(ts("it_value"));
    d.set_timer_interval_ns(ts("it_interval"));
  } else if (link == "anon_inode:inotify") {
    d.set_kind(pb::FILE_INOTIFY);
    size_t at = 0;
    while ((at = info.find("inotify wd:", at)) != std::string::npos) {
      size_t nl = info.find('\n', at);
      std::vector<std::string> t = split_ws(info.substr(at, nl == std::string::npos ? std::string::npos : nl - at));
      at = nl == std::string::npos ? info.size() : nl + 1;
      pb::InotifyWatch* w = d.add_watches();
      w->set_wd(static_cast<int32_t>(std::strtol(token_value(t, "wd").c_str(), nullptr, 16)));
      w->set_mask(static_cast<uint32_t>(std::strtoul(token_value(t, "mask").c_str(), nullptr, 16)));
      std::string hex = token_value(t, "f_handle");
      if (hex.empty()) refuse(link, strf("watch %d has no file handle in fdinfo", w->wd()));
      uint64_t sdev = std::strtoull(token_value(t, "sdev").c_str(), nullptr, 16);
      int type = static_cast<int>(std::strtol(token_value(t, "fhandle-type").c_str(), nullptr, 16));
      w->set_path(with_context(strf("unable to dump fd %d of pid %d (inotify watch %d)", fd, pid, w->wd()),
                               [&] { return resolve_fhandle(pid, sdev, type, hex); }));
      const std::string& wp = w->path();
      if (wp.empty() || wp[0] != '/' ||
          ends_deleted(wp))
        refuse(link, strf("watch %d is on '%s', which has no path: not supported", w->wd(), wp.c_str()));
    }
  } else if (starts("/memfd:") && st.st_nlink == 0 && S_ISREG(st.st_mode)) {
    d.set_kind(pb::FILE_MEMFD);
    std::string name = link.substr(std::strlen("/memfd:"));
    if (marked_deleted) name.resize(name.size() - deleted_suffix.size());
    d.set_path(name);
    d.set_deleted(true);
    struct statfs sf;
    if (::statfs(proc_path.c_str(), &sf) == 0 && sf.f_type == HUGETLBFS_MAGIC)
      refuse_kind(KindId::kFdMemfdHugetlb, strf("unable to dump fd %d of pid %d (memfd '%s')", fd, pid, name.c_str()));
    // Seals live on the inode; any description shows them.
    ScopedFd m(::open(proc_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!m.valid()) throw_errno(strf("unable to dump fd %d of pid %d (memfd '%s'): unable to open it", fd, pid, name.c_str()));
    int seals = ::fcntl(m.get(), F_GET_SEALS);
    d.set_seals(seals < 0 ? 0 : static_cast<uint32_t>(seals));
    if (record) with_context(strf("unable to dump fd %d of pid %d", fd, pid), [&] { keep_contents(d, proc_path); });
  } else if (S_ISREG(st.st_mode)) {
    d.set_kind(pb::FILE_REG);
    if (marked_deleted) {
      std::string real = link.substr(0, link.size() - deleted_suffix.size());
      if (really_deleted(real)) {
        d.set_path(real);
        d.set_deleted(true);
        if (record) with_context(strf("unable to dump fd %d of pid %d", fd, pid), [&] { keep_contents(d, proc_path); });
      }
    }
  } else if (S_ISDIR(st.st_mode)) {
    d.set_kind(pb::FILE_DIR);
    if (marked_deleted) {
      std::string real = link.substr(0, link.size() - deleted_suffix.size());
      if (really_deleted(real)) {
        d.set_path(real);
        d.set_deleted(true);  // made again for the restore, and removed again
      }
    }
  } else if (S_ISCHR(st.st_mode) && link[0] == '/') {
    d.set_kind(pb::FILE_CHR);
    d.set_rdev(static_cast<uint32_t>(st.st_rdev));
    if (marked_deleted) d.set_deleted(true);  // refused as fd.device.deleted below
    // A terminal (anything but the memory devices may be one): its
    // settings, read through a duplicate of the task's own open file.  In
    // the check too: what is not a terminal here is refused as a device.
    if (major(st.st_rdev) != 1 && st.st_rdev != makedev(5, 2)) {
      ScopedFd t = take(pid, fd, link);
      std::string termios, winsize;
      bool is_tty = false;
      with_context(strf("unable to dump fd %d of pid %d (%s)", fd, pid, link.c_str()),
                   [&] { is_tty = tty_state(t.get(), &termios, &winsize); });
      if (is_tty) {
        d.set_tty(true);
        d.set_termios(termios);
        d.set_winsize(winsize);
      }
    }
  } else {
    d.set_kind(pb::FILE_OTHER);  // refused below by what kinds.h makes of its path
  }

  // What ck cannot rebuild is refused here, by its kind, before anything
  // is written; what a later stage or the sink decides (sockets, external
  // ends) is recorded.
  const KindId kid = kind_of(d);
  if (kind(kid).support == Support::kRefused)
    refuse_kind(kid, strf("unable to dump fd %d of pid %d (%s)", fd, pid, describe(d).c_str()));
  if (d.kind() == pb::FILE_PIPE || d.kind() == pb::FILE_FIFO) {
    auto& e = ends_[key];
    if (e.name.empty()) {
      e.name = d.kind() == pb::FILE_PIPE ? describe(d) : "fifo:" + d.path();
      e.pid = pid;
      e.fd = fd;
    }
    if (!e.accepted.empty()) d.set_external(e.accepted);
  }

  if (!record) return;
  by_inode_[key].push_back({pid, fd, d.id()});
  pb::Fd f;
  f.set_pid(static_cast<uint32_t>(pid));
  f.set_fd(fd);
  f.set_desc(d.id());
  f.set_cloexec(cloexec);
  fds_.push_back(f);
  LOG_DEBUG("fd %d of pid %d: description %u kind %d '%s'", fd, pid, d.id(), static_cast<int>(d.kind()), d.path().c_str());
  descs_.push_back(std::move(d));
}


void FileDumper::keep_contents(const pb::FileDesc& d, const std::string& proc_path) {
  const auto key = std::make_pair(d.dev(), d.ino());
  if (contents_of_.count(key)) return;  // another description of the inode carries them
  // O_NOATIME: reading the contents must not change the file's atime.
  ScopedFd f(::open(proc_path.c_str(), O_RDONLY | O_NOATIME | O_CLOEXEC));
  if (!f.valid() && errno == EPERM) f.reset(::open(proc_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!f.valid()) throw_errno("unable to open '" + proc_path + "' to read its contents");
  contents_of_[key] = d.id();
  contents_fd_[d.id()] = std::move(f);
}

void FileDumper::dump_mappings(pid_t pid) {
  std::string maps;
  if (!try_read_file(strf("/proc/%d/maps", pid), &maps)) throw_errno(strf("unable to read the mappings of pid %d", pid));
  size_t at = 0;
  while (at < maps.size()) {
    size_t nl = maps.find('\n', at);
    if (nl == std::string::npos) nl = maps.size();
    std::string line = maps.substr(at, nl - at);
    at = nl + 1;
    std::vector<std::string> t = split_ws(line);
    if (t.size() < 6 || t[5][0] != '/') continue;
    std::string path = line.substr(line.find(t[5], line.find(t[4]) + t[4].size()));
    const bool memfd = path.compare(0, 7, "/memfd:") == 0;
    // Only what the restore could not find by its path: a deleted file or
    // a memfd.  Shared anonymous memory and SysV segments look deleted too,
    // but are memory (ck-memread carries them).
    if (!ends_deleted(path) || path == "/dev/zero (deleted)" || path == "/anon_hugepage (deleted)" ||
        path.compare(0, 5, "/SYSV") == 0)
      continue;
    const std::string range = t[0];
    const std::string mf = strf("/proc/%d/map_files/%s", pid, range.c_str());
    struct stat st;
    if (::stat(mf.c_str(), &st) != 0) throw_errno(strf("unable to dump mapping %s '%s' of pid %d: unable to stat it", range.c_str(), path.c_str(), pid));
    const auto key = std::make_pair(static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino));
    if (contents_of_.count(key)) continue;  // a description of it is recorded already
    std::string real = path.substr(0, path.size() - (sizeof kDeletedSuffix - 1));
    if (!memfd) {
      struct stat now;
      if (st.st_nlink != 0 && ::stat(real.c_str(), &now) == 0 && now.st_ino == st.st_ino && now.st_dev == st.st_dev)
        continue;  // named "x (deleted)" and still there
    }
    const std::string what = memfd ? "memfd '" + real.substr(7) + "'" : "deleted file '" + real + "'";
    auto refuse = [&](const std::string& why) {
      fail(strf("unable to dump mapping %s of pid %d (%s): %s", range.c_str(), pid, what.c_str(), why.c_str()));
    };
    if (!S_ISREG(st.st_mode)) refuse("not a regular file: not supported");
    struct statfs sf;
    if (::statfs(mf.c_str(), &sf) == 0 && sf.f_type == HUGETLBFS_MAGIC) refuse("hugetlb files are not supported");
    pb::FileDesc d;
    d.set_id(static_cast<uint32_t>(descs_.size() + 1));
    d.set_kind(memfd ? pb::FILE_MEMFD : pb::FILE_REG);
    d.set_path(memfd ? real.substr(7) : real);
    d.set_deleted(true);
    d.set_flags(O_RDONLY);
    set_inode(&d, st);
    d.set_owner_pid(static_cast<uint32_t>(pid));
    d.set_owner_fd(-1);
    d.set_map_start(std::strtoull(range.c_str(), nullptr, 16));
    if (memfd) {
      ScopedFd m(::open(mf.c_str(), O_RDONLY | O_CLOEXEC));
      int seals = m.valid() ? ::fcntl(m.get(), F_GET_SEALS) : -1;
      d.set_seals(seals < 0 ? 0 : static_cast<uint32_t>(seals));
    }
    with_context(strf("unable to dump mapping %s of pid %d", range.c_str(), pid), [&] { keep_contents(d, mf); });
    LOG_DEBUG("pid %d maps %s '%s': description %u (no fd)", pid, range.c_str(), path.c_str(), d.id());
    descs_.push_back(std::move(d));
  }
}

uint32_t FileDumper::removed_dir(pid_t pid, const char* which) {
  const std::string proc_path = strf("/proc/%d/%s", pid, which);
  std::string link = read_link(proc_path);
  if (!ends_deleted(link)) return 0;
  struct stat st, now;
  if (::stat(proc_path.c_str(), &st) != 0) throw_errno(strf("unable to dump the %s of pid %d: unable to stat '%s'", which, pid, link.c_str()));
  std::string real = link.substr(0, link.size() - (sizeof kDeletedSuffix - 1));
  if (st.st_nlink != 0 && ::stat(real.c_str(), &now) == 0 && now.st_ino == st.st_ino && now.st_dev == st.st_dev)
    return 0;  // a directory named "x (deleted)"
  const auto key = std::make_pair(static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino));
  auto it = dirs_.find(key);
  if (it != dirs_.end()) return it->second;
  pb::FileDesc d;
  d.set_id(static_cast<uint32_t>(descs_.size() + 1));
  d.set_kind(pb::FILE_DIR);
  d.set_path(real);
  d.set_deleted(true);
  d.set_flags(O_RDONLY | O_DIRECTORY);
  set_inode(&d, st);
  d.set_owner_pid(static_cast<uint32_t>(pid));
  d.set_owner_fd(-1);
  dirs_[key] = d.id();
  LOG_DEBUG("the %s of pid %d is the removed directory '%s': description %u", which, pid, real.c_str(), d.id());
  descs_.push_back(std::move(d));
  return descs_.back().id();
}

void FileDumper::check_locks(const std::vector<pid_t>& pids) {
  std::set<long> tree(pids.begin(), pids.end());
  // Every lock an fd of the tree shows, once (a lock of a description shows
  // in every fd of it).
  std::map<std::string, int> shown;
  std::set<std::string> seen;
  for (pid_t pid : pids) {
    for (int fd : list_fds(pid)) {
      std::string info;
      if (!try_read_file(strf("/proc/%d/fdinfo/%d", pid, fd), &info)) continue;
      std::vector<LockLine> locks = fd_locks(info);
      if (locks.empty()) continue;
      struct stat st;
      if (::stat(strf("/proc/%d/fd/%d", pid, fd).c_str(), &st) != 0) continue;
      for (const LockLine& l : locks) {
        // The same lock through another fd of the same description: once.
        bool dup = false;
        for (int other : list_fds(pid)) {
          if (other >= fd) break;
          if (kcmp(pid, pid, KCMP_FILE, static_cast<unsigned long>(fd), static_cast<unsigned long>(other)) == 0) dup = true;
        }
        if (!dup && seen.insert(strf("%d/%d ", pid, fd) + l.text).second) ++shown[l.text];
        // A lock of a description that a process outside the tree took,
        // and still holds through the same description, stays with that
        // process when the tree ends: the restored one could never be had.
        if (l.lock.kind() == pb::FileLock::POSIX || l.pid <= 0 || tree.count(l.pid)) continue;
        std::vector<int> theirs;
        try {
          theirs = list_fds(static_cast<pid_t>(l.pid));
        } catch (const Error&) {
          continue;  // gone: the lock is the tree's alone
        }
        for (int t : theirs) {
          struct stat ts;
          if (::stat(strf("/proc/%ld/fd/%d", l.pid, t).c_str(), &ts) != 0 || ts.st_dev != st.st_dev || ts.st_ino != st.st_ino)
            continue;
          if (kcmp(static_cast<pid_t>(l.pid), pid, KCMP_FILE, static_cast<unsigned long>(t), static_cast<unsigned long>(fd)) == 0)
            fail(strf("unable to dump fd %d of pid %d (%s on '%s'): its description is shared with pid %ld outside the tree, "
                      "which holds the lock too: not supported",
                      fd, pid, lock_name(l.lock).c_str(), read_link(strf("/proc/%d/fd/%d", pid, fd)).c_str(), l.pid));
        }
      }
    }
  }
  std::string text;
  if (!try_read_file("/proc/locks", &text)) return;  // no /proc/locks: fdinfo is all there is
  std::map<std::string, int> held;
  size_t at = 0;
  while (at < text.size()) {
    size_t nl = text.find('\n', at);
    if (nl == std::string::npos) nl = text.size();
    LockLine l;
    bool ok = parse_lock(text.substr(at, nl - at), &l);
    at = nl + 1;
    if (!ok || !tree.count(l.pid)) continue;
    if (++held[l.text] > shown[l.text])
      fail(strf("unable to dump pid %ld: it holds a %s on inode %s through no open fd (a mapping, or an fd in flight): "
                "not supported", l.pid, lock_name(l.lock).c_str(), l.inode.c_str()));
  }
}

void FileDumper::write(StreamWriter& w) {
  for (const auto& d : descs_) {
    pb::Frame f;
    f.set_pid(d.owner_pid());
    *f.mutable_file() = d;
    w.frame(f);
    auto it = contents_fd_.find(d.id());
    if (it != contents_fd_.end())
      with_context(d.owner_fd() >= 0 ? strf("unable to dump fd %d of pid %u", d.owner_fd(), d.owner_pid())
                                     : strf("unable to dump the mapping at %#llx of pid %u",
                                            static_cast<unsigned long long>(d.map_start()), d.owner_pid()),
                   [&] { write_contents(w, d, it->second.get()); });
  }
  for (const auto& fd : fds_) {
    pb::Frame f;
    f.set_pid(fd.pid());
    *f.mutable_fd() = fd;
    w.frame(f);
  }
  contents_fd_.clear();
}

// The data extents of the file (SEEK_DATA/SEEK_HOLE; a file system without
// them is all data), page by page as PageRuns: runs of zeros without
// payload, the others hashed through a read-only mapping of the file and
// spliced from the file into the stream (no copy of ours).  The last page
// is padded with zeros past the end of the file, as a mapping shows it.
void FileDumper::write_contents(StreamWriter& w, const pb::FileDesc& d, int fd) {
  const uint64_t size = d.size();
  const uint64_t end = (size + kPageSize - 1) / kPageSize * kPageSize;
  int pp[2];
  if (::pipe2(pp, O_CLOEXEC) != 0) throw_errno("unable to create a pipe");
  ScopedFd pr(pp[0]), pw(pp[1]);
  ::fcntl(pw.get(), F_SETPIPE_SZ, 1 << 20);  // fewer, longer runs where it is allowed
  const int cap = ::fcntl(pw.get(), F_GETPIPE_SZ);
  if (cap < static_cast<int>(2 * kPageSize)) fail("unable to size a pipe for file contents");
  // One pipe slot stays free for the padding of a last, partial page.
  const uint64_t chunk = static_cast<uint64_t>(cap) - kPageSize;
  static const char zeros[kPageSize] = {};
  pb::PageRun run;
  run.set_pid(d.owner_pid());
  run.set_file(d.id());
  uint64_t pages = 0, data_pages = 0;
  for (uint64_t at = 0; at < end;) {
    off_t data = ::lseek(fd, static_cast<off_t>(at), SEEK_DATA);
    off_t hole;
    if (data < 0) {
      if (errno == ENXIO) break;  // nothing but holes from here
      data = static_cast<off_t>(at), hole = static_cast<off_t>(end);  // no SEEK_DATA here: all of it is data
    } else {
      hole = ::lseek(fd, data, SEEK_HOLE);
      if (hole < 0) hole = static_cast<off_t>(end);
    }
    uint64_t from = static_cast<uint64_t>(data) / kPageSize * kPageSize;
    uint64_t to = std::min<uint64_t>((static_cast<uint64_t>(hole) + kPageSize - 1) / kPageSize * kPageSize, end);
    if (to <= from) break;
    for (uint64_t o = from; o < to;) {
      const uint64_t len = std::min(to - o, chunk);
      void* m = ::mmap(nullptr, len, PROT_READ, MAP_SHARED, fd, static_cast<off_t>(o));
      if (m == MAP_FAILED) throw_errno(strf("unable to map '%s' at offset %llu", d.path().c_str(), static_cast<unsigned long long>(o)));
      const char* base = static_cast<const char*>(m);
      try {
        for (uint64_t i = 0, n = len / kPageSize; i < n;) {
          const bool zero = page_is_zero(base + i * kPageSize);
          uint64_t j = i + 1;
          while (j < n && page_is_zero(base + j * kPageSize) == zero) ++j;
          run.set_addr(o + i * kPageSize);
          run.set_npages(static_cast<uint32_t>(j - i));
          run.set_has_payload(!zero);
          const uint64_t bytes = (j - i) * kPageSize;
          if (zero) {
            run.clear_digest();
            w.pages(run, nullptr, 0);
          } else {
            run.set_digest(ck64(base + i * kPageSize, bytes));
            loff_t off = static_cast<loff_t>(run.addr());
            uint64_t left = std::min<uint64_t>(bytes, size - run.addr());
            while (left) {
              ssize_t k = ::splice(fd, &off, pw.get(), nullptr, left, 0);
              if (k < 0 && errno == EINTR) continue;
              if (k < 0) throw_errno("unable to splice the contents of '" + d.path() + "'");
              if (k == 0) fail("'" + d.path() + "' became shorter while it was read");
              left -= static_cast<uint64_t>(k);
            }
            uint64_t pad = run.addr() + bytes - std::min<uint64_t>(run.addr() + bytes, size);
            if (pad) write_full(pw.get(), zeros, pad);
            w.pages_spliced(run, pr.get());
            data_pages += j - i;
          }
          pages += j - i;
          i = j;
        }
      } catch (...) {
        ::munmap(m, len);
        throw;
      }
      ::munmap(m, len);
      o += len;
    }
    at = to;
  }
  LOG_DEBUG("%s '%s': %llu bytes, %llu pages of data (%llu of them not zeros)", d.kind() == pb::FILE_MEMFD ? "memfd" : "file",
            d.path().c_str(), static_cast<unsigned long long>(size), static_cast<unsigned long long>(pages),
            static_cast<unsigned long long>(data_pages));
}

}  // namespace ck
