// Dump side of file descriptors: reads /proc/PID/fd, /proc/PID/fdinfo and,
// where the state is only reachable through the file itself, a second
// description of it (opened through the /proc magic link) or a duplicate of
// the target's own (pidfd_getfd).  Nothing here changes what the target sees:
//  - pipe and FIFO data is duplicated with tee(2) from a second read end into
//    a private pipe (tee does not consume), then read from there;
//  - deleted files and memfds are read with pread through a new description,
//    so the target's offset does not move.
#include <dirent.h>
#include <fcntl.h>
#include <linux/kcmp.h>
#include <linux/magic.h>
#include <sys/ioctl.h>
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
#include "proc.h"
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

std::string mib(uint64_t n) { return strf("%llu MiB", static_cast<unsigned long long>(n >> 20)); }

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

std::string read_contents(const std::string& proc_path, uint64_t size) {
  ScopedFd f(::open(proc_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!f.valid()) throw_errno("unable to open '" + proc_path + "'");
  std::string data(size, '\0');
  size_t got = 0;
  while (got < size) {
    ssize_t n = ::pread(f.get(), data.data() + got, size - got, static_cast<off_t>(got));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("unable to read '" + proc_path + "'");
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  data.resize(got);
  return data;
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
  d.set_dev(st.st_dev);
  d.set_ino(st.st_ino);
  d.set_mode(st.st_mode);
  d.set_size(static_cast<uint64_t>(st.st_size));
  d.set_mtime_ns(static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec);
  d.set_owner_pid(static_cast<uint32_t>(pid));
  d.set_owner_fd(fd);

  auto starts = [&](const char* p) { return link.compare(0, std::strlen(p), p) == 0; };
  const std::string deleted_suffix = " (deleted)";
  const bool marked_deleted = link.size() > deleted_suffix.size() &&
                              link.compare(link.size() - deleted_suffix.size(), deleted_suffix.size(), deleted_suffix) == 0;

  if (starts("socket:[")) {
    ScopedFd s = take(pid, fd, "socket");
    d.set_kind(pb::FILE_SOCKET);
    with_context(strf("unable to dump fd %d of pid %d (socket)", fd, pid), [&] { describe_socket(s.get(), &d); });
  } else if (starts("pipe:[") || (S_ISFIFO(st.st_mode) && link[0] == '/')) {
    bool fifo = !starts("pipe:[");
    d.set_kind(fifo ? pb::FILE_FIFO : pb::FILE_PIPE);
    d.set_pipe_id(st.st_ino);
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
          (wp.size() > deleted_suffix.size() && wp.compare(wp.size() - deleted_suffix.size(), deleted_suffix.size(), deleted_suffix) == 0))
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
    if (static_cast<uint64_t>(st.st_size) > kMaxFileContents)
      refuse("memfd '" + name + "'", strf("larger than %s: not supported", mib(kMaxFileContents).c_str()));
    // Seals live on the inode; any description shows them.
    ScopedFd m(::open(proc_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!m.valid()) throw_errno(strf("unable to dump fd %d of pid %d (memfd '%s'): unable to open it", fd, pid, name.c_str()));
    int seals = ::fcntl(m.get(), F_GET_SEALS);
    d.set_rdev(seals < 0 ? 0 : static_cast<uint32_t>(seals));  // seals kept in rdev for memfds
    if (record && inodes_with_contents_.insert(key).second)
      d.set_contents(read_contents(proc_path, static_cast<uint64_t>(st.st_size)));
  } else if (S_ISREG(st.st_mode)) {
    d.set_kind(pb::FILE_REG);
    bool deleted = false;
    if (marked_deleted) {
      std::string real = link.substr(0, link.size() - deleted_suffix.size());
      struct stat now;
      deleted = st.st_nlink == 0 || ::stat(real.c_str(), &now) < 0 || now.st_ino != st.st_ino || now.st_dev != st.st_dev;
      if (deleted) d.set_path(real);
    }
    if (deleted) {
      d.set_deleted(true);
      if (static_cast<uint64_t>(st.st_size) > kMaxFileContents)
        refuse("deleted file '" + d.path() + "'", strf("larger than %s: not supported", mib(kMaxFileContents).c_str()));
      if (record && inodes_with_contents_.insert(key).second)
        d.set_contents(with_context(strf("unable to dump fd %d of pid %d", fd, pid),
                                    [&] { return read_contents(proc_path, static_cast<uint64_t>(st.st_size)); }));
    }
  } else if (S_ISDIR(st.st_mode)) {
    d.set_kind(pb::FILE_DIR);
    if (marked_deleted) d.set_deleted(true);  // refused as fd.dir.deleted below
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
  d.set_id(static_cast<uint32_t>(descs_.size() + 1));
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

}  // namespace ck
