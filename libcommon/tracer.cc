#include "tracer.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "ck.pb.h"
#include "error.h"
#include "log.h"
#include "parasite.h"
#include "ptrace.h"
#include "round.h"
#include "sock.h"

CK_LOG_MODULE("tracer");

namespace ck {
namespace {

enum Op : uint32_t { kOpen = 1, kRun = 2, kClose = 3, kUndoAdd = 4, kUndoSet = 5, kUndoDrop = 6, kRound = 7 };

void send_msg(int sock, const void* msg, size_t len, const std::vector<int>& fds = {}, const std::string& extra = {}) {
  struct iovec iov[2] = {{const_cast<void*>(msg), len}, {const_cast<char*>(extra.data()), extra.size()}};
  struct msghdr mh;
  std::memset(&mh, 0, sizeof mh);
  mh.msg_iov = iov;
  mh.msg_iovlen = extra.empty() ? 1 : 2;
  alignas(struct cmsghdr) char ctl[CMSG_SPACE(sizeof(int) * kMaxUndoFds)];
  if (!fds.empty()) {
    if (fds.size() > kMaxUndoFds) fail("internal: too many fds for one message");
    std::memset(ctl, 0, sizeof ctl);
    mh.msg_control = ctl;
    mh.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    struct cmsghdr* c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  while (::sendmsg(sock, &mh, MSG_NOSIGNAL) < 0)
    if (errno != EINTR) throw_errno("unable to talk to the tracer");
}

// Returns the bytes received (0: the other end is gone); *fds gets the
// descriptors passed along, if any (closed when fds is null).
size_t recv_msg(int sock, void* msg, size_t len, std::vector<ScopedFd>* fds, std::string* extra = nullptr) {
  if (extra) extra->resize(kMaxTracerPayload);
  struct iovec iov[2] = {{msg, len}, {extra ? extra->data() : nullptr, extra ? extra->size() : 0}};
  struct msghdr mh;
  std::memset(&mh, 0, sizeof mh);
  mh.msg_iov = iov;
  mh.msg_iovlen = extra ? 2 : 1;
  alignas(struct cmsghdr) char ctl[CMSG_SPACE(sizeof(int) * kMaxUndoFds)];
  mh.msg_control = ctl;
  mh.msg_controllen = sizeof ctl;
  ssize_t n;
  while ((n = ::recvmsg(sock, &mh, MSG_CMSG_CLOEXEC)) < 0)
    if (errno != EINTR) throw_errno("unable to talk to the tracer");
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < k; ++i) {
      int got;
      std::memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof got);
      if (fds)
        fds->emplace_back(got);
      else
        ::close(got);
    }
  }
  if (extra) extra->resize(static_cast<size_t>(n) > len ? static_cast<size_t>(n) - len : 0);
  return static_cast<size_t>(n);
}

}  // namespace

struct TracerService::UndoEntry {
  pb::Undo rec;
  ScopedFd fd, fd2;
};

struct TracerService::Conn {
  ScopedFd sock;
  bool gone = false;  // hung up while another stage's parasite ran (erased by the main loop)
  std::map<pid_t, std::unique_ptr<Parasite>> parasites;
};

TracerService::TracerService(std::map<pid_t, pid_t> procs) : procs_(std::move(procs)) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) throw_errno("unable to create a socket pair");
  ours_.reset(sv[0]);
  theirs_.reset(sv[1]);
}

TracerService::~TracerService() {
  // Never leave a side effect behind: a tree released without a word from
  // freeze_tree (an exception on the way) gets it undone too.
  undo_all();
  shutdown();
}

void TracerService::undo_all() {
  if (!undo_.empty()) LOG_INFO("undoing %zu side effects of the stages", undo_.size());
  for (size_t i = undo_.size(); i-- > 0;) {
    UndoEntry& e = *undo_[i];
    try {
      run_undo(e.rec, e.fd.get(), e.fd2.get());
    } catch (const std::exception& ex) {
      LOG_ERROR("unable to undo a side effect (%s): %s", undo_name(e.rec).c_str(), ex.what());
    }
  }
  undo_.clear();
}

void TracerService::drop_undo() {
  if (!undo_.empty()) LOG_DEBUG("dropping %zu undo records: the dump is committed", undo_.size());
  undo_.clear();
}

TracerMsg TracerService::handle_undo(const TracerMsg& req, const std::string& payload, std::vector<ScopedFd>& fds) {
  TracerMsg rep;
  rep.op = req.op;
  pb::UndoBatch b;
  if (!b.ParseFromString(payload)) fail("unreadable undo records");
  auto find = [&](uint64_t id) -> size_t {
    for (size_t i = 0; i < undo_.size(); ++i)
      if (undo_[i]->rec.id() == id) return i;
    fail(strf("no undo record %llu", static_cast<unsigned long long>(id)));
  };
  switch (req.op) {
    case kUndoAdd: {
      auto idx = [&](int32_t i) -> ScopedFd {
        if (i < 0) return ScopedFd();
        if (static_cast<size_t>(i) >= fds.size() || !fds[i].valid()) fail(strf("undo record names fd %d, not passed", i));
        int d = ::fcntl(fds[i].get(), F_DUPFD_CLOEXEC, 3);
        if (d < 0) throw_errno("unable to keep an fd of an undo record");
        return ScopedFd(d);
      };
      rep.result = static_cast<int64_t>(next_undo_);
      for (const auto& u : b.undo()) {
        auto e = std::make_unique<UndoEntry>();
        e->rec = u;
        e->rec.set_id(next_undo_++);
        e->fd = idx(u.fd());
        e->fd2 = idx(u.fd2());
        undo_.push_back(std::move(e));
      }
      LOG_DEBUG("%d undo records registered (%zu in all)", b.undo_size(), undo_.size());
      break;
    }
    case kUndoSet:
      for (const auto& u : b.undo()) {
        UndoEntry& e = *undo_[find(u.id())];
        int32_t f1 = e.rec.fd(), f2 = e.rec.fd2();
        e.rec = u;
        e.rec.set_fd(f1), e.rec.set_fd2(f2);
      }
      break;
    case kUndoDrop:
      for (const auto& u : b.undo()) undo_.erase(undo_.begin() + static_cast<long>(find(u.id())));
      break;
  }
  return rep;
}

void TracerService::shutdown() {
  for (auto& c : conns_) c->parasites.clear();
  conns_.clear();
  busy_.clear();
}

bool TracerService::accept() {
  std::vector<ScopedFd> got;
  char hello[8];
  if (recv_msg(ours_.get(), hello, sizeof hello, &got) == 0 || got.size() != 1) return false;
  auto c = std::make_unique<Conn>();
  c->sock = std::move(got[0]);
  conns_.push_back(std::move(c));
  LOG_DEBUG("a stage connected (%zu connections)", conns_.size());
  return true;
}

TracerMsg TracerService::handle(Conn& c, const TracerMsg& req, std::vector<ScopedFd>& got, std::vector<int>* pass) {
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
      rep.remote[0] = p->remote_pages(), rep.remote[1] = p->remote_bell(), rep.remote[2] = p->remote_ack();
      rep.pipe_size = static_cast<uint32_t>(p->pipe_size());
      rep.rseq_addr = p->rseq_addr(), rep.rseq_len = p->rseq_len();
      Parasite::Ends e = p->ends();
      *pass = {e.pages, e.bell, e.ack};
      c.parasites[req.pid] = std::move(p);
      busy_.insert(req.pid);
      break;
    }
    case kRun:
      if (have == c.parasites.end()) fail(strf("pid %d has no parasite of this connection", req.pid));
      try {
        // The other stages go on meanwhile: one that waits for the
        // tracer (ck-sockdump registering an undo record) while the
        // stage running the parasite waits for it to read its pipe
        // would otherwise never get its answer.
        // A stage that connects only now (its hello still queued on our
        // socket) is one of them: it is accepted here, not after the run.
        rep.result = have->second->run(c.sock.get(), [&] {
          for (size_t i = 0; i < conns_.size(); ++i) {
            Conn& o = *conns_[i];
            if (&o == &c || o.gone) continue;
            struct pollfd one = {o.sock.get(), POLLIN, 0};
            while (!o.gone && ::poll(&one, 1, 0) > 0 && (one.revents & POLLIN))
              if (!serve(o)) o.gone = true;
          }
          // Once every holder of the command's end is gone the socket
          // reads as hung up, with nothing to accept: no loop on it.
          struct pollfd hello = {ours_.get(), POLLIN, 0};
          while (::poll(&hello, 1, 0) > 0 && (hello.revents & POLLIN) && accept()) {
          }
        });
      } catch (...) {
        c.parasites.erase(have);
        busy_.erase(req.pid);
        throw;
      }
      if (rep.result < 0) {
        // Out with it: the stage may be waiting on its pipe for pages that
        // will not come; without the target's write end it sees the end.
        c.parasites.erase(have);
        busy_.erase(req.pid);
      }
      break;
    case kClose:
      if (have != c.parasites.end()) {
        c.parasites.erase(have);
        busy_.erase(req.pid);
      }
      break;
    case kRound:
      if (got.size() != 1 || req.args == 0 || req.args > UINT32_MAX) fail("a ROUND request needs one directory and a round");
      rounds_.emplace_back(std::move(got[0]), static_cast<uint32_t>(req.args));
      LOG_DEBUG("round %u of pid %d registered", rounds_.back().second, req.pid);
      break;
    default:
      fail(strf("unknown tracer request %u", req.op));
  }
  return rep;
}

bool TracerService::serve(Conn& c) {
  TracerMsg req;
  std::string payload;
  std::vector<ScopedFd> got;
  size_t n = recv_msg(c.sock.get(), &req, sizeof req, &got, &payload);
  if (n == 0) return false;
  TracerMsg rep;
  std::vector<int> pass;
  if (n >= sizeof req && (req.op == kUndoAdd || req.op == kUndoSet || req.op == kUndoDrop)) {
    try {
      rep = handle_undo(req, payload, got);
    } catch (const std::exception& e) {
      rep = TracerMsg();
      rep.op = req.op, rep.result = -1;
      std::snprintf(rep.error, sizeof rep.error, "%s", e.what());
    }
  } else if (n != sizeof req) {
    rep.result = -1;
    std::snprintf(rep.error, sizeof rep.error, "tracer request of %zu bytes, not %zu", n, sizeof req);
  } else {
    try {
      rep = handle(c, req, got, &pass);
    } catch (const std::exception& e) {
      rep = TracerMsg();
      rep.op = req.op, rep.pid = req.pid, rep.result = -1;
      std::snprintf(rep.error, sizeof rep.error, "%s", e.what());
      LOG_DEBUG("request %u for pid %d refused: %s", req.op, req.pid, e.what());
    }
  }
  try {
    send_msg(c.sock.get(), &rep, sizeof rep, pass);
  } catch (const Error&) {
    return false;
  }
  return true;
}

void TracerService::settle_rounds(bool stored) {
  for (auto& [fd, gen] : rounds_) {
    char path[4096];
    std::string link = strf("/proc/self/fd/%d", fd.get());
    ssize_t n = ::readlink(link.c_str(), path, sizeof path - 1);
    try {
      if (n <= 0) throw_errno("unable to read '" + link + "'");
      path[n] = 0;
      if (stored)
        Round::confirm(path, gen);
      else
        Round::rollback(path, gen);
    } catch (const std::exception& e) {
      LOG_WARN("unable to settle pre-dump round %u: %s", gen, e.what());
    }
  }
  rounds_.clear();
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
    if (fds[0].revents) {
      // The command is gone; what its stages said before is still queued
      // (a registration is acknowledged, so nothing unacknowledged was
      // acted on, but read it all: the last word may be an UNDO_SET).
      for (size_t i = 0; i < conns_.size(); ++i) {
        struct pollfd one = {conns_[i]->sock.get(), POLLIN, 0};
        while (::poll(&one, 1, 0) > 0 && (one.revents & POLLIN) && serve(*conns_[i])) {
        }
      }
      break;
    }
    // Connections first (their indexes move once one is removed).  Those
    // accepted while a parasite ran come after the ones polled: fds holds
    // no entry for them yet.
    for (size_t i = std::min(conns_.size(), fds.size() - 2); i-- > 0;) {
      short ev = fds[2 + i].revents;
      if (!ev) continue;
      if (ev & POLLIN) {
        // What poll saw may have been served already, while a parasite
        // ran (Parasite::run's idle): look again rather than block.
        struct pollfd one = {conns_[i]->sock.get(), POLLIN, 0};
        if (::poll(&one, 1, 0) <= 0) continue;
        ev = one.revents;
      }
      if ((ev & POLLIN) && serve(*conns_[i])) continue;
      if (ev & (POLLIN | POLLHUP | POLLERR)) {
        LOG_DEBUG("a stage hung up: taking out its %zu parasites", conns_[i]->parasites.size());
        for (auto& [pid, p] : conns_[i]->parasites) busy_.erase(pid);
        conns_.erase(conns_.begin() + static_cast<long>(i));
      }
    }
    if (fds[1].revents & POLLIN) {
      // A parasite's run may have accepted that stage meanwhile: look
      // again rather than block in accept() on an empty socket.
      struct pollfd one = {ours_.get(), POLLIN, 0};
      if (::poll(&one, 1, 0) > 0 && (one.revents & POLLIN)) accept();
    }
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
    send_msg(static_cast<int>(fd), "connect", 8, {theirs.get()});
  } catch (const Error& err) {
    // A socket that no longer takes a connection is ck-freeze's, and
    // ck-freeze is gone (killed): the tree is not frozen any more, and a
    // stage that went on without it would store a torn image of a tree
    // that runs on.  Anything else is not a tracer at all.
    struct stat st;
    if (::fstat(static_cast<int>(fd), &st) == 0 && S_ISSOCK(st.st_mode))
      fail(strf("the tracer (ck-freeze, %s=%ld) is gone, so the tree is no longer frozen: %s", kTracerEnv, fd,
                err.what()));
    LOG_DEBUG("no tracer at fd %ld: %s", fd, err.what());
    return nullptr;
  }
  return std::make_unique<TracerClient>(mine.extract());
}

void TracerClient::check_alive() const {
  struct pollfd p = {conn_.get(), POLLIN, 0};
  int n;
  while ((n = ::poll(&p, 1, 0)) < 0 && errno == EINTR) {
  }
  if (n > 0 && (p.revents & (POLLHUP | POLLERR)))
    fail("the tracer (ck-freeze) is gone, so the tree is no longer frozen: this dump is not of one instant");
}

TracerMsg TracerClient::reply(std::vector<ScopedFd>* fds_out) {
  TracerMsg rep;
  size_t n = recv_msg(conn_.get(), &rep, sizeof rep, fds_out);
  if (n != sizeof rep) fail("the tracer hung up");
  if (rep.result == -1 && rep.error[0]) {
    rep.error[sizeof rep.error - 1] = 0;
    fail(std::string("tracer: ") + rep.error);
  }
  return rep;
}

TracerMsg TracerClient::call(const TracerMsg& req, std::vector<ScopedFd>* fds_out) {
  send_msg(conn_.get(), &req, sizeof req);
  return reply(fds_out);
}

TracerClient::Opened TracerClient::open(pid_t pid) {
  TracerMsg req;
  req.op = kOpen, req.pid = pid;
  std::vector<ScopedFd> fds;
  TracerMsg rep = call(req, &fds);
  if (fds.size() != 3) fail(strf("the tracer sent %zu fds for pid %d, not 3", fds.size(), pid));
  Opened o;
  o.args = rep.args, o.pipe_size = rep.pipe_size;
  o.rseq_addr = rep.rseq_addr, o.rseq_len = rep.rseq_len;
  for (int i = 0; i < 3; ++i) o.remote[i] = rep.remote[i];
  o.pages = std::move(fds[0]), o.bell = std::move(fds[1]), o.ack = std::move(fds[2]);
  return o;
}

void TracerClient::start_run(pid_t pid) {
  TracerMsg req;
  req.op = kRun, req.pid = pid;
  send_msg(conn_.get(), &req, sizeof req);
}

long TracerClient::finish_run() { return static_cast<long>(reply(nullptr).result); }

void TracerClient::hold_round(pid_t root, int dir_fd, uint32_t gen) {
  TracerMsg req;
  req.op = kRound, req.pid = root, req.args = gen;
  send_msg(conn_.get(), &req, sizeof req, {dir_fd});
  reply(nullptr);
}

uint64_t TracerClient::undo_add(const pb::UndoBatch& b, const std::vector<int>& fds) {
  TracerMsg req;
  req.op = kUndoAdd;
  std::string payload = b.SerializeAsString();
  if (payload.size() > kMaxTracerPayload) fail("internal: undo records too large for one message");
  send_msg(conn_.get(), &req, sizeof req, fds, payload);
  return static_cast<uint64_t>(reply(nullptr).result);
}

void TracerClient::undo_set(const pb::UndoBatch& b) {
  TracerMsg req;
  req.op = kUndoSet;
  send_msg(conn_.get(), &req, sizeof req, {}, b.SerializeAsString());
  reply(nullptr);
}

void TracerClient::undo_drop(const std::vector<uint64_t>& ids) {
  TracerMsg req;
  req.op = kUndoDrop;
  pb::UndoBatch b;
  for (uint64_t id : ids) b.add_undo()->set_id(id);
  send_msg(conn_.get(), &req, sizeof req, {}, b.SerializeAsString());
  reply(nullptr);
}

void TracerClient::close(pid_t pid) {
  TracerMsg req;
  req.op = kClose, req.pid = pid;
  call(req, nullptr);
}

}  // namespace ck
