// The client side of the store service's protocol (store_proto.h).
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zstd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "error.h"
#include "log.h"
#include "store_proto.h"

CK_LOG_MODULE("store");

namespace ck {
namespace {

std::string quote(const std::string& s) { return "'" + s + "'"; }

sockaddr_un unix_addr(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof a.sun_path)
    usage_error("store socket path " + quote(path) + " is empty or too long for a unix socket");
  std::memcpy(a.sun_path, path.data(), path.size());
  return a;
}

// Connects; returns an invalid fd with errno set when nothing listens.
ScopedFd try_connect(const std::string& path) {
  sockaddr_un a = unix_addr(path);
  ScopedFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s.valid()) throw_errno("unable to create a unix socket");
  if (::connect(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    int e = errno;
    if (e == ENOENT || e == ECONNREFUSED) {
      errno = e;
      return ScopedFd();
    }
    throw_errno("unable to connect to the store service at " + quote(path), e);
  }
  return s;
}

// Starts `ck-store serve --socket path` in a session of its own, with no fd
// of ours but a pipe it says it is ready on.  Returns its pid, or 0 if it
// ended before it was ready (another one may have won the race).
pid_t start_service(const std::string& path) {
  char self[4096];
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) throw_errno("unable to find ck-store's own executable (/proc/self/exe)");
  self[n] = '\0';
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) throw_errno("unable to create a pipe");
  ScopedFd rd(p[0]), wr(p[1]);
  pid_t c = ::fork();
  if (c < 0) throw_errno("unable to fork");
  if (c == 0) {
    ::setsid();
    pid_t g = ::fork();
    if (g != 0) ::_exit(g < 0 ? 1 : 0);
    if (::chdir("/") != 0) ::_exit(127);  // it must not keep the caller's directory busy
    int nul = ::open("/dev/null", O_RDWR);
    if (nul < 0 || ::dup2(nul, 0) < 0 || ::dup2(nul, 1) < 0 || ::dup2(nul, 2) < 0 || ::dup2(wr.get(), 3) < 0)
      ::_exit(127);
    // Nothing else of the caller's: a test harness or a pipeline would
    // otherwise wait for the service to close it.
    if (::syscall(SYS_close_range, 4u, ~0u, 0u) != 0)
      for (int fd = 4; fd < 1024; ++fd) ::close(fd);
    ::execl(self, "ck-store", "serve", "--socket", path.c_str(), "--ready-fd", "3", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  wr.reset();
  int st;
  while (::waitpid(c, &st, 0) < 0 && errno == EINTR) {
  }
  char line[32] = {};
  size_t got = read_full(rd.get(), line, sizeof line - 1);
  if (got == 0 || line[got - 1] != '\n') return 0;
  return static_cast<pid_t>(std::atoi(line));
}

pb::StoreReply call(int fd, const std::string& path, const pb::StoreRequest& req) {
  pb::StoreReply rep;
  bool sent = send_store_msg(fd, req);
  if (!recv_store_msg(fd, &rep))
    fail("the store service at " + quote(path) + (sent ? " closed the connection without a reply" : " went away"));
  if (rep.status() != 0) throw Error(rep.status(), rep.error());
  return rep;
}

void copy_to(int from, int to, const char* what) {
  std::vector<char> buf(1 << 20);
  for (;;) {
    ssize_t n = ::read(from, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno(strf("unable to read %s", what));
    if (n == 0) return;
    write_full(to, buf.data(), static_cast<size_t>(n));
  }
}

}  // namespace

std::string store_socket_path(const std::string& flag) {
  if (!flag.empty()) return flag;
  const char* e = std::getenv("CK_STORE_SOCKET");
  if (e && *e) return e;
  const char* xdg = std::getenv("XDG_RUNTIME_DIR");
  if (::geteuid() != 0 && xdg && *xdg == '/') return std::string(xdg) + "/ck/store.sock";
  return kDefaultStoreSocket;
}

bool send_store_msg(int fd, const google::protobuf::MessageLite& m) {
  std::string b(4, '\0');
  uint32_t len = static_cast<uint32_t>(m.ByteSizeLong());
  for (int i = 0; i < 4; ++i) b[i] = static_cast<char>(len >> (8 * i));
  m.AppendToString(&b);
  size_t off = 0;
  while (off < b.size()) {
    ssize_t n = ::send(fd, b.data() + off, b.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) return false;
    if (n < 0) throw_errno("unable to write to the store service's socket");
    off += static_cast<size_t>(n);
  }
  return true;
}

bool recv_store_msg(int fd, google::protobuf::MessageLite* m) {
  unsigned char lb[4];
  size_t got = read_full(fd, lb, 4);
  if (got == 0) return false;
  if (got < 4) bad_input("a store service message is cut short");
  uint32_t len = lb[0] | lb[1] << 8 | lb[2] << 16 | static_cast<uint32_t>(lb[3]) << 24;
  if (len > kMaxStoreMsg) bad_input(strf("a store service message of %u bytes is over the %u limit", len, kMaxStoreMsg));
  std::string b(len, '\0');
  if (read_full(fd, b.data(), len) != len) bad_input("a store service message is cut short");
  if (!m->ParseFromString(b)) bad_input("a store service message does not parse");
  return true;
}

void check_store_name(const std::string& name) {
  bool ok = !name.empty() && name.size() <= 100 && name[0] != '.' && name[0] != '-';
  for (char c : name)
    ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
                c == '-' || c == '+' || c == '@');
  if (!ok)
    usage_error("image name " + quote(name) + " is not one the store takes (1 to 100 of A-Z a-z 0-9 . _ - + @, "
                "not starting with '.' or '-')");
}

ScopedFd store_connect(const std::string& path, bool start) {
  ScopedFd s = try_connect(path);
  if (s.valid()) return s;
  if (!start) fail("no store service at " + quote(path) + " (ck-store serve starts one)");
  pid_t pid = start_service(path);
  s = try_connect(path);
  if (!s.valid()) fail("unable to start a store service at " + quote(path) + " (run ck-store serve to see why)");
  if (pid > 0) std::fprintf(stderr, "ck-store: started the store service at '%s' (pid %d)\n", path.c_str(), pid);
  return s;
}

pb::StoreReply store_client_put(const std::string& path, const std::string& name, bool force, int in_fd,
                                int compress) {
  if (!name.empty()) check_store_name(name);
  ScopedFd s = store_connect(path, true);
  pb::StoreRequest req;
  req.set_op(pb::StoreRequest::PUT);
  req.set_name(name);
  req.set_force(force);
  pb::StoreReply rep;
  bool open = send_store_msg(s.get(), req);
  // The stream goes on as it comes (zstd-compressed with compress); the
  // service reads and checks it.  If it stops reading (a refusal), the
  // reply says why.
  auto send_all = [&](const char* p, size_t n) {
    size_t off = 0;
    while (open && off < n) {
      ssize_t w = ::send(s.get(), p + off, n - off, MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0 && (errno == EPIPE || errno == ECONNRESET)) {
        open = false;
        break;
      }
      if (w < 0) throw_errno("unable to write to the store service at " + quote(path));
      off += static_cast<size_t>(w);
    }
  };
  std::unique_ptr<ZSTD_CCtx, size_t (*)(ZSTD_CCtx*)> z(nullptr, ZSTD_freeCCtx);
  std::vector<char> zbuf;
  if (compress > 0) {
    z.reset(ZSTD_createCCtx());
    if (!z) fail("unable to create a zstd compressor");
    ZSTD_CCtx_setParameter(z.get(), ZSTD_c_compressionLevel, compress);
    ZSTD_CCtx_setParameter(z.get(), ZSTD_c_checksumFlag, 1);
    zbuf.resize(ZSTD_CStreamOutSize());
  }
  auto squeeze = [&](const char* p, size_t n, ZSTD_EndDirective mode) {
    ZSTD_inBuffer in{p, n, 0};
    for (;;) {
      ZSTD_outBuffer out{zbuf.data(), zbuf.size(), 0};
      size_t left = ZSTD_compressStream2(z.get(), &out, &in, mode);
      if (ZSTD_isError(left)) fail(std::string("zstd: ") + ZSTD_getErrorName(left));
      send_all(zbuf.data(), out.pos);
      if (!open) return;
      if (mode == ZSTD_e_end ? left == 0 : in.pos == in.size) return;
    }
  };
  std::vector<char> buf(1 << 20);
  while (open) {
    ssize_t n = ::read(in_fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("unable to read stdin");  // the service sees the stream cut short and drops it
    if (n == 0) break;
    if (z)
      squeeze(buf.data(), static_cast<size_t>(n), ZSTD_e_continue);
    else
      send_all(buf.data(), static_cast<size_t>(n));
  }
  if (z && open) squeeze(nullptr, 0, ZSTD_e_end);
  ::shutdown(s.get(), SHUT_WR);
  if (!recv_store_msg(s.get(), &rep))
    fail("the store service at " + quote(path) + " closed the connection without a reply (nothing was stored)");
  if (rep.status() != 0) throw Error(rep.status(), rep.error());
  return rep;
}

ScopedFd store_client_open(const std::string& path, const std::string& name) {
  check_store_name(name);
  ScopedFd s = store_connect(path);
  pb::StoreRequest req;
  req.set_op(pb::StoreRequest::GET);
  req.set_name(name);
  call(s.get(), path, req);
  return s;
}

void store_client_get(const std::string& path, const std::string& name, int out_fd) {
  if (::isatty(out_fd)) usage_error("refusing to write a binary stream to a terminal (redirect it or pipe it)");
  ScopedFd s = store_client_open(path, name);
  copy_to(s.get(), out_fd, ("the store service at " + quote(path)).c_str());
}

pb::StoreReply store_client_list(const std::string& path, const std::string& name) {
  if (!name.empty()) check_store_name(name);
  ScopedFd s = store_connect(path);
  pb::StoreRequest req;
  req.set_op(pb::StoreRequest::LIST);
  req.set_name(name);
  return call(s.get(), path, req);
}

pb::StoreReply store_client_remove(const std::string& path, const std::string& name) {
  check_store_name(name);
  ScopedFd s = store_connect(path);
  pb::StoreRequest req;
  req.set_op(pb::StoreRequest::REMOVE);
  req.set_name(name);
  return call(s.get(), path, req);
}

}  // namespace ck
