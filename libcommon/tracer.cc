#include "tracer.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "error.h"
#include "log.h"
#include "parasite.h"
#include "ptrace.h"

CK_LOG_MODULE("tracer");

namespace ck {
namespace {

enum Op : uint32_t { kOpen = 1, kRun = 2, kClose = 3 };

void send_msg(int sock, const void* msg, size_t len, int fd) {
  struct iovec iov = {const_cast<void*>(msg), len};
  struct msghdr mh;
  std::memset(&mh, 0, sizeof mh);
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  alignas(struct cmsghdr) char ctl[CMSG_SPACE(sizeof(int))];
  if (fd >= 0) {
    std::memset(ctl, 0, sizeof ctl);
    mh.msg_control = ctl;
    mh.msg_controllen = sizeof ctl;
    struct cmsghdr* c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  }
  while (::sendmsg(sock, &mh, MSG_NOSIGNAL) < 0)
    if (errno != EINTR) throw_errno("unable to talk to the tracer");
}

// Returns the bytes received (0: the other end is gone); *fd gets a passed
// descriptor, if any.
size_t recv_msg(int sock, void* msg, size_t len, ScopedFd* fd) {
  struct iovec iov = {msg, len};
  struct msghdr mh;
  std::memset(&mh, 0, sizeof mh);
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  alignas(struct cmsghdr) char ctl[CMSG_SPACE(sizeof(int))];
  mh.msg_control = ctl;
  mh.msg_controllen = sizeof ctl;
  ssize_t n;
  while ((n = ::recvmsg(sock, &mh, MSG_CMSG_CLOEXEC)) < 0)
    if (errno != EINTR) throw_errno("unable to talk to the tracer");
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      int got;
      std::memcpy(&got, CMSG_DATA(c), sizeof got);
      if (fd)
        fd->reset(got);
      else
        ::close(got);
    }
  return static_cast<size_t>(n);
}

}  // namespace

struct TracerService::Conn {
  ScopedFd sock;
  std::map<pid_t, std::unique_ptr<Parasite>> parasites;
};

TracerService::TracerService(std::map<pid_t, pid_t> procs) : procs_(std::move(procs)) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) throw_errno("unable to create a socket pair");
  ours_.reset(sv[0]);
  theirs_.reset(sv[1]);
}

TracerService::~TracerService() { shutdown(); }

void TracerService::shutdown() {
  for (auto& c : conns_) c->parasites.clear();
  conns_.clear();
  busy_.clear();
}

void TracerService::accept() {
  ScopedFd conn;
  char hello[8];
  if (recv_msg(ours_.get(), hello, sizeof hello, &conn) == 0 || !conn.valid()) return;
  auto c = std::make_unique<Conn>();
  c->sock = std::move(conn);
  conns_.push_back(std::move(c));
  LOG_DEBUG("a stage connected (%zu connections)", conns_.size());
}

TracerMsg TracerService::handle(Conn& c, const TracerMsg& req, int* pass_fd) {
  TracerMsg rep;
  rep.op = req.op;
  rep.pid = req.pid;
  auto it = procs_.find(req.pid);
  if (it == procs_.end()) fail(strf("pid %d is not a frozen process of this dump", req.pid));
  auto have = c.parasites.find(req.pid);
  switch (req.op) {
    case kOpen: {
      if (busy_.count(req.pid)) fail(strf("pid %d has a parasite already", req.pid));
      auto p = std::make_unique<Parasite>(req.pid, it->second, find_syscall_insn(req.pid));
      rep.args = p->args_addr();
      rep.remote_pipe = p->remote_pipe_fd();
      rep.pipe_size = static_cast<uint32_t>(p->pipe_size());
      *pass_fd = p->pipe_fd();
      c.parasites[req.pid] = std::move(p);
      busy_.insert(req.pid);
      break;
    }
    case kRun:
      if (have == c.parasites.end()) fail(strf("pid %d has no parasite of this connection", req.pid));
      try {
        rep.result = have->second->run();
      } catch (...) {
        c.parasites.erase(have);
        busy_.erase(req.pid);
        throw;
      }
      break;
    case kClose:
      if (have != c.parasites.end()) {
        c.parasites.erase(have);
        busy_.erase(req.pid);
      }
      break;
    default:
      fail(strf("unknown tracer request %u", req.op));
  }
  return rep;
}

bool TracerService::serve(Conn& c) {
  TracerMsg req;
  size_t n = recv_msg(c.sock.get(), &req, sizeof req, nullptr);
  if (n == 0) return false;
  TracerMsg rep;
  int pass_fd = -1;
  if (n != sizeof req) {
    rep.result = -1;
    std::snprintf(rep.error, sizeof rep.error, "tracer request of %zu bytes, not %zu", n, sizeof req);
  } else {
    try {
      rep = handle(c, req, &pass_fd);
    } catch (const std::exception& e) {
      rep = TracerMsg();
      rep.op = req.op, rep.pid = req.pid, rep.result = -1;
      std::snprintf(rep.error, sizeof rep.error, "%s", e.what());
      LOG_DEBUG("request %u for pid %d refused: %s", req.op, req.pid, e.what());
    }
  }
  try {
    send_msg(c.sock.get(), &rep, sizeof rep, pass_fd);
  } catch (const Error&) {
    return false;
  }
  return true;
}

int TracerService::serve_until_exit(pid_t child) {
  ScopedFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, child, 0)));
  if (!pidfd.valid()) throw_errno(strf("unable to open a pidfd for pid %d", child));
  for (;;) {
    std::vector<struct pollfd> fds;
    fds.push_back({pidfd.get(), POLLIN, 0});
    fds.push_back({ours_.get(), POLLIN, 0});
    for (auto& c : conns_) fds.push_back({c->sock.get(), POLLIN, 0});
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      throw_errno("unable to poll");
    }
    if (fds[0].revents) break;
    // Connections first (their indexes move once one is added or removed).
    for (size_t i = conns_.size(); i-- > 0;) {
      short ev = fds[2 + i].revents;
      if (!ev) continue;
      if ((ev & POLLIN) && serve(*conns_[i])) continue;
      if (ev & (POLLIN | POLLHUP | POLLERR)) {
        LOG_DEBUG("a stage hung up: taking out its %zu parasites", conns_[i]->parasites.size());
        for (auto& [pid, p] : conns_[i]->parasites) busy_.erase(pid);
        conns_.erase(conns_.begin() + static_cast<long>(i));
      }
    }
    if (fds[1].revents & POLLIN) accept();
  }
  shutdown();
  int st;
  while (::waitpid(child, &st, 0) < 0)
    if (errno != EINTR) throw_errno("unable to wait for the command");
  return st;
}

std::unique_ptr<TracerClient> TracerClient::from_env() {
  const char* e = std::getenv(kTracerEnv);
  if (!e || !*e) return nullptr;
  char* end = nullptr;
  long fd = std::strtol(e, &end, 10);
  if (*end || fd < 0 || fd > 1 << 20 || ::fcntl(static_cast<int>(fd), F_GETFD) < 0) {
    LOG_DEBUG("%s=%s: no tracer there", kTracerEnv, e);
    return nullptr;
  }
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) throw_errno("unable to create a socket pair");
  ScopedFd mine(sv[0]), theirs(sv[1]);
  try {
    send_msg(static_cast<int>(fd), "connect", 8, theirs.get());
  } catch (const Error& err) {
    LOG_DEBUG("no tracer at fd %ld: %s", fd, err.what());
    return nullptr;
  }
  return std::make_unique<TracerClient>(mine.extract());
}

TracerMsg TracerClient::call(const TracerMsg& req, ScopedFd* fd_out) {
  send_msg(conn_.get(), &req, sizeof req, -1);
  TracerMsg rep;
  size_t n = recv_msg(conn_.get(), &rep, sizeof rep, fd_out);
  if (n != sizeof rep) fail("the tracer hung up");
  if (rep.result == -1 && rep.error[0]) {
    rep.error[sizeof rep.error - 1] = 0;
    fail(std::string("tracer: ") + rep.error);
  }
  return rep;
}

TracerClient::Opened TracerClient::open(pid_t pid) {
  TracerMsg req;
  req.op = kOpen, req.pid = pid;
  Opened o;
  TracerMsg rep = call(req, &o.pipe);
  if (!o.pipe.valid()) fail(strf("the tracer sent no pipe for pid %d", pid));
  o.args = rep.args, o.remote_pipe = rep.remote_pipe, o.pipe_size = rep.pipe_size;
  return o;
}

long TracerClient::run(pid_t pid) {
  TracerMsg req;
  req.op = kRun, req.pid = pid;
  return static_cast<long>(call(req, nullptr).result);
}

void TracerClient::close(pid_t pid) {
  TracerMsg req;
  req.op = kClose, req.pid = pid;
  call(req, nullptr);
}

}  // namespace ck
