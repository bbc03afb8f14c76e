// ck-store serve: the in-memory store service (store_service.h).
#include "store_service.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>
#include <zstd.h>

#include <cinttypes>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "error.h"
#include "image.h"
#include "log.h"
#include "store_proto.h"
#include "stream.h"

CK_LOG_MODULE("store");

namespace ck {
namespace {

std::string quote(const std::string& s) { return "'" + s + "'"; }

// ---- pages ------------------------------------------------------------------

// The service's own page memory: 2 MiB slabs it maps itself, cut into
// page-aligned slots.  A freed slot goes back to the kernel at once
// (MADV_DONTNEED) and is reused by the next page held.
class PageArena {
 public:
  static constexpr size_t kSlabPages = 512;
  char* alloc() {
    if (free_.empty()) {
      void* m = ::mmap(nullptr, kSlabPages * kPageSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (m == MAP_FAILED) throw_errno("unable to map memory for the store's pages");
      for (size_t i = kSlabPages; i-- > 0;) free_.push_back(static_cast<char*>(m) + i * kPageSize);
    }
    char* p = free_.back();
    free_.pop_back();
    return p;
  }
  void release(char* p) {
    ::madvise(p, kPageSize, MADV_DONTNEED);
    free_.push_back(p);
  }

 private:
  std::vector<char*> free_;
};

struct Page {
  char* data;
  uint64_t hash;
  uint64_t refs;
};

bool is_zero_page(const char* p) {
  const auto* w = reinterpret_cast<const uint64_t*>(p);
  if (w[0] | w[kPageSize / 8 - 1]) return false;
  return std::memcmp(p, p + 8, kPageSize - 8) == 0;
}

// The pages held for one uid.  Candidates for a page are those with the
// same ck64; one of them is the page only if its bytes are equal.
struct Pool {
  std::unordered_multimap<uint64_t, Page*> by_hash;
  uint64_t pages = 0;
};

// ---- images -----------------------------------------------------------------

// A stored stream: its frames as they came (header first), each with the
// pages of its payload (nullptr: a page of zeros), then its trailer.
struct Image {
  std::string name;
  uid_t uid = 0;
  pb::Header header;
  uint64_t created_ns = 0;
  struct Item {
    std::string raw;
    size_t first = 0, npages = 0;  // its payload: pages[first, first + npages)
  };
  std::vector<Item> items;
  std::vector<Page*> pages;
  std::string trailer;
  uint64_t zero_pages = 0;
};

class Store {
 public:
  explicit Store(uint64_t max) : max_(max) {}

  // PUT: the stream on fd, as ck-store put -D takes it (store_put_checked),
  // into an image that becomes visible only once all of it was read.
  void put(int fd, uid_t uid, const pb::StoreRequest& req, pb::StoreReply* rep);
  // GET: the image name of uid, kept alive while it is written out.
  std::shared_ptr<Image> find(uid_t uid, const std::string& name);
  void list(uid_t uid, const std::string& name, pb::StoreReply* rep);
  void remove(uid_t uid, const std::string& name, pb::StoreReply* rep);

 private:
  // What a put that did not commit, or an image no one uses, gives back.
  void release_locked(Image& im);
  void add_page_locked(Image& im, const char* p);
  pb::StoreImageInfo info_locked(const Image& im) const;
  pb::Header receive(StreamReader& r, Image& im);
  std::shared_ptr<Image> share(std::unique_ptr<Image> im) {
    return std::shared_ptr<Image>(im.release(), [this](Image* i) {
      {
        std::lock_guard<std::mutex> l(mu_);
        release_locked(*i);
      }
      delete i;
    });
  }

  std::mutex mu_;
  const uint64_t max_;
  uint64_t held_pages_ = 0;  // of every uid
  PageArena arena_;
  std::map<uid_t, Pool> pools_;
  std::map<std::pair<uid_t, std::string>, std::shared_ptr<Image>> images_;
};

void Store::add_page_locked(Image& im, const char* p) {
  if (is_zero_page(p)) {
    im.pages.push_back(nullptr);
    ++im.zero_pages;
    return;
  }
  Pool& pool = pools_[im.uid];
  uint64_t h = ck64(p, kPageSize);
  auto range = pool.by_hash.equal_range(h);
  for (auto it = range.first; it != range.second; ++it) {
    if (std::memcmp(it->second->data, p, kPageSize) == 0) {
      ++it->second->refs;
      im.pages.push_back(it->second);
      return;
    }
  }
  if (max_ && (held_pages_ + 1) * kPageSize > max_)
    fail(strf("the store is full (it holds %" PRIu64 " page bytes, --max-memory %" PRIu64 "): nothing was stored",
              held_pages_ * kPageSize, max_));
  auto* pg = new Page{arena_.alloc(), h, 1};
  std::memcpy(pg->data, p, kPageSize);
  pool.by_hash.emplace(h, pg);
  ++pool.pages;
  ++held_pages_;
  im.pages.push_back(pg);
}

void Store::release_locked(Image& im) {
  Pool& pool = pools_[im.uid];
  for (Page* pg : im.pages) {
    if (!pg || --pg->refs) continue;
    auto range = pool.by_hash.equal_range(pg->hash);
    for (auto it = range.first; it != range.second; ++it)
      if (it->second == pg) {
        pool.by_hash.erase(it);
        break;
      }
    arena_.release(pg->data);
    delete pg;
    --pool.pages;
    --held_pages_;
  }
  im.pages.clear();
}

// Whether what follows the request on fd starts as a zstd frame does.
bool compressed(int fd) {
  unsigned char m[4];
  ssize_t n;
  do n = ::recv(fd, m, sizeof m, MSG_PEEK | MSG_WAITALL);
  while (n < 0 && errno == EINTR);
  return n == 4 && m[0] == 0x28 && m[1] == 0xb5 && m[2] == 0x2f && m[3] == 0xfd;
}

// Decompresses the zstd frame on in into out until in ends.  Returns ""
// or what was wrong with the compressed data; a reader of out that went
// away (a refused stream) just ends it.
std::string unzstd(int in, int out) {
  std::unique_ptr<ZSTD_DCtx, size_t (*)(ZSTD_DCtx*)> z(ZSTD_createDCtx(), ZSTD_freeDCtx);
  if (!z) return "unable to create a zstd decompressor";
  std::vector<char> ib(ZSTD_DStreamInSize()), ob(ZSTD_DStreamOutSize());
  size_t last = 1;
  bool ended = false;  // a frame ended: only another frame may follow
  for (;;) {
    ssize_t n = ::read(in, ib.data(), ib.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return strf("stdin: unable to read the compressed stream: %s", std::strerror(errno));
    if (n == 0) break;
    ZSTD_inBuffer zi{ib.data(), static_cast<size_t>(n), 0};
    while (zi.pos < zi.size) {
      ZSTD_outBuffer zo{ob.data(), ob.size(), 0};
      last = ZSTD_decompressStream(z.get(), &zo, &zi);
      if (ZSTD_isError(last)) return std::string("stdin: the zstd stream is corrupt: ") + ZSTD_getErrorName(last);
      ended = last == 0;
      try {
        write_full(out, ob.data(), zo.pos);
      } catch (const Error&) {
        return "";
      }
    }
  }
  if (!ended) return "stdin: the zstd stream is cut short";
  return "";
}

// store_put_checked of the zstd frame on fd: a thread decompresses it into
// a pipe that the checked reader reads.  A fault in the compressed data is
// reported as that (status 3), not as the cut stream the reader then sees.
pb::Header put_unzstd(int fd, const std::function<pb::Header(StreamReader&)>& sink) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) throw_errno("unable to create a pipe");
  ScopedFd rd(p[0]);
  int wr = p[1];
  std::string zerr;
  std::thread t([&zerr, fd, wr] {
    ScopedFd w(wr);
    zerr = unzstd(fd, w.get());
  });
  pb::Header h;
  try {
    h = store_put_checked(rd.get(), sink);
  } catch (...) {
    rd.reset();  // the decompressor's writes fail now, and it ends
    t.join();
    if (!zerr.empty()) bad_input(zerr);
    throw;
  }
  rd.reset();
  t.join();
  if (!zerr.empty()) bad_input(zerr);
  return h;
}

pb::Header Store::receive(StreamReader& r, Image& im) {
  pb::Frame f;
  pb::Header h;
  constexpr size_t kBatch = 256;
  std::vector<char> buf(kBatch * kPageSize);
  while (r.next(&f)) {
    if (f.has_header()) {
      h = f.header();
      if (h.incremental())
        usage_error("the stream is a pre-dump round computed against another: it goes on its parent with "
                    "ck-store put --parent, which the store service does not take yet (use -D)");
    }
    Image::Item it;
    it.raw = r.raw();
    it.first = im.pages.size();
    if (r.payload_left() % kPageSize)
      bad_input(strf("stdin: a page run's payload of %" PRIu64 " bytes is not a whole number of pages", r.payload_left()));
    while (r.payload_left()) {
      size_t n = std::min<uint64_t>(r.payload_left(), buf.size());
      r.read_payload(buf.data(), n);  // the last piece checks the run's digest
      std::lock_guard<std::mutex> l(mu_);
      for (size_t off = 0; off < n; off += kPageSize) add_page_locked(im, buf.data() + off);
    }
    it.npages = im.pages.size() - it.first;
    im.items.push_back(std::move(it));
  }
  im.trailer = r.raw();  // read and verified
  return h;
}

void Store::put(int fd, uid_t uid, const pb::StoreRequest& req, pb::StoreReply* rep) {
  if (!req.name().empty()) {
    check_store_name(req.name());
    std::lock_guard<std::mutex> l(mu_);
    if (!req.force() && images_.count({uid, req.name()}))
      fail("image " + quote(req.name()) + " is already in the store (--force replaces it)");
  }
  auto im = std::make_unique<Image>();
  im->uid = uid;
  // Whatever ends the put before the commit gives its pages back.
  struct Undo {
    Store* s;
    Image* im;
    ~Undo() {
      if (!im) return;
      std::lock_guard<std::mutex> l(s->mu_);
      s->release_locked(*im);
    }
  } undo{this, im.get()};
  auto sink = [&](StreamReader& r) { return receive(r, *im); };
  pb::Header h = compressed(fd) ? put_unzstd(fd, sink) : store_put_checked(fd, sink);
  im->header = h;
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  im->created_ns = static_cast<uint64_t>(ts.tv_sec) * 1000000000u + static_cast<uint64_t>(ts.tv_nsec);
  std::shared_ptr<Image> old;  // destroyed after the lock is let go (its deleter takes it)
  std::lock_guard<std::mutex> l(mu_);
  std::string name = req.name();
  if (name.empty()) {
    name = strf("img-%u", h.root_pid());
    for (unsigned n = 2; images_.count({uid, name}); ++n) name = strf("img-%u-%u", h.root_pid(), n);
  } else if (!req.force() && images_.count({uid, name})) {
    fail("image " + quote(name) + " is already in the store (--force replaces it)");
  }
  im->name = name;
  undo.im = nullptr;
  auto& slot = images_[{uid, name}];
  old = std::move(slot);
  LOG_INFO("put image '%s' of uid %u: %zu frames, %zu pages (%" PRIu64 " of zeros), %" PRIu64 " pages held for all",
           name.c_str(), uid, im->items.size(), im->pages.size(), im->zero_pages, held_pages_);
  slot = share(std::move(im));
  rep->set_name(name);
  *rep->add_images() = info_locked(*slot);
}

std::shared_ptr<Image> Store::find(uid_t uid, const std::string& name) {
  check_store_name(name);
  std::lock_guard<std::mutex> l(mu_);
  auto it = images_.find({uid, name});
  if (it == images_.end()) fail("no image " + quote(name) + " in the store");
  return it->second;
}

pb::StoreImageInfo Store::info_locked(const Image& im) const {
  pb::StoreImageInfo i;
  i.set_name(im.name);
  i.set_uid(im.uid);
  i.set_root_pid(im.header.root_pid());
  i.set_frames(im.items.size());
  i.set_logical_bytes(im.pages.size() * kPageSize);
  i.set_zero_bytes(im.zero_pages * kPageSize);
  i.set_created_ns(im.created_ns);
  if (names_round(im.header)) i.set_round(round_id(im.header));
  std::unordered_map<const Page*, uint64_t> uses;
  for (const Page* p : im.pages)
    if (p) ++uses[p];
  uint64_t own = 0;
  for (auto& [p, n] : uses)
    if (n == p->refs) ++own;
  i.set_held_bytes(uses.size() * kPageSize);
  i.set_own_bytes(own * kPageSize);
  return i;
}

void Store::list(uid_t uid, const std::string& name, pb::StoreReply* rep) {
  std::lock_guard<std::mutex> l(mu_);
  uint64_t logical = 0;
  for (auto& [key, im] : images_) {
    if (key.first != uid) continue;
    logical += im->pages.size() * kPageSize;
    if (name.empty() || key.second == name) *rep->add_images() = info_locked(*im);
  }
  if (!name.empty() && rep->images_size() == 0) fail("no image " + quote(name) + " in the store");
  auto p = pools_.find(uid);
  rep->set_held_bytes(p == pools_.end() ? 0 : p->second.pages * kPageSize);
  rep->set_logical_bytes(logical);
  rep->set_max_memory(max_);
}

void Store::remove(uid_t uid, const std::string& name, pb::StoreReply* rep) {
  check_store_name(name);
  std::shared_ptr<Image> gone;  // released after the lock is let go
  std::lock_guard<std::mutex> l(mu_);
  auto it = images_.find({uid, name});
  if (it == images_.end()) fail("no image " + quote(name) + " in the store");
  rep->set_held_bytes(info_locked(*it->second).own_bytes());
  gone = std::move(it->second);
  images_.erase(it);
  LOG_INFO("removed image '%s' of uid %u", name.c_str(), uid);
}

void write_image(const Image& im, int fd) {
  static const char zeros[kPageSize] = {};
  RawStreamOut out(fd);
  out.magic();
  for (const auto& it : im.items) {
    out.frame(it.raw);
    for (size_t i = 0; i < it.npages; ++i) {
      const Page* p = im.pages[it.first + i];
      out.payload(p ? p->data : zeros, kPageSize);
    }
  }
  out.finish_with(im.trailer);
}

// ---- connections --------------------------------------------------------------

// One request on fd from uid, in a thread of its own.
void session(Store* st, int raw_fd, uid_t uid) {
  ScopedFd fd(raw_fd);
  pb::StoreReply rep;
  bool streaming = false;
  try {
    pb::StoreRequest req;
    if (!recv_store_msg(fd.get(), &req)) return;
    switch (req.op()) {
      case pb::StoreRequest::PUT:
        st->put(fd.get(), uid, req, &rep);
        break;
      case pb::StoreRequest::GET: {
        std::shared_ptr<Image> im = st->find(uid, req.name());
        rep.set_name(im->name);
        if (!send_store_msg(fd.get(), rep)) return;
        streaming = true;
        write_image(*im, fd.get());
        return;
      }
      case pb::StoreRequest::LIST:
        st->list(uid, req.name(), &rep);
        break;
      case pb::StoreRequest::REMOVE:
        st->remove(uid, req.name(), &rep);
        break;
      default:
        bad_input(strf("a request of unknown kind %d (a newer client?)", static_cast<int>(req.op())));
    }
  } catch (const Error& e) {
    if (streaming) {
      LOG_WARN("uid %u: %s", uid, e.what());
      return;  // the client sees the stream cut short
    }
    LOG_INFO("uid %u: refused: %s", uid, e.what());
    rep.Clear();
    rep.set_status(e.status());
    rep.set_error(e.what());
  } catch (const std::exception& e) {
    if (streaming) return;
    rep.Clear();
    rep.set_status(kFail);
    rep.set_error(e.what());
  }
  rep.set_pid(static_cast<uint32_t>(getpid()));
  try {
    send_store_msg(fd.get(), rep);
  } catch (const Error& e) {
    LOG_WARN("uid %u: unable to reply: %s", uid, e.what());
  }
}

struct Service {
  Store* store;
  int listen_fd;
  uid_t owner;
};

void on_connection(uv_poll_t* h, int status, int events) {
  auto* sv = static_cast<Service*>(h->data);
  for (;;) {
    int c = ::accept4(sv->listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) LOG_WARN("accept: %s", std::strerror(errno));
      return;
    }
    ucred cr{};
    socklen_t len = sizeof cr;
    if (::getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0) {
      LOG_WARN("SO_PEERCRED: %s", std::strerror(errno));
      ::close(c);
      continue;
    }
    if (cr.uid != 0 && cr.uid != sv->owner) {
      LOG_WARN("refused pid %d of uid %u", cr.pid, cr.uid);
      pb::StoreReply rep;
      rep.set_status(kFail);
      rep.set_error(strf("the store service (of uid %u) admits only its owner and root, not uid %u", sv->owner, cr.uid));
      try {
        send_store_msg(c, rep);
      } catch (const Error&) {
      }
      ::close(c);
      continue;
    }
    std::thread(session, sv->store, c, cr.uid).detach();
  }
}

void on_stop(uv_signal_t* h, int sig) {
  LOG_INFO("signal %d: stopping", sig);
  uv_stop(h->loop);
}

// The socket systemd passed (LISTEN_FDS), or -1.
int activated_socket() {
  const char* pid = std::getenv("LISTEN_PID");
  const char* n = std::getenv("LISTEN_FDS");
  if (!pid || !n || std::atol(pid) != static_cast<long>(getpid())) return -1;
  if (std::atoi(n) != 1) fail(strf("LISTEN_FDS=%s: ck-store serve takes exactly one socket", n));
  ::unsetenv("LISTEN_PID");
  ::unsetenv("LISTEN_FDS");
  ::unsetenv("LISTEN_FDNAMES");
  int fd = 3;
  int type = 0, acc = 0;
  socklen_t len = sizeof type;
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM)
    fail("LISTEN_FDS: fd 3 is not a stream socket");
  len = sizeof acc;
  if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) != 0 || !acc) fail("LISTEN_FDS: fd 3 is not listening");
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  return fd;
}

// Binds path (its directory created if missing).  A socket file there that
// no one listens on is left from a service that died: it is replaced.
int bind_socket(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof a.sun_path)
    usage_error("store socket path " + quote(path) + " is empty or too long for a unix socket");
  std::memcpy(a.sun_path, path.data(), path.size());
  size_t slash = path.rfind('/');
  if (slash != std::string::npos && slash > 0) {
    std::string dir = path.substr(0, slash);
    if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) throw_errno("unable to create " + quote(dir));
  }
  ScopedFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!s.valid()) throw_errno("unable to create a unix socket");
  mode_t old = ::umask(0177);  // the socket: its owner only (and root)
  int rc = ::bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a);
  int e = errno;
  if (rc != 0 && e == EADDRINUSE) {
    ScopedFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (probe.valid() && ::connect(probe.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
      ::umask(old);
      fail("a store service already listens on " + quote(path));
    }
    struct stat st;
    if (::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
      ::unlink(path.c_str());
      rc = ::bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a);
      e = errno;
    }
  }
  ::umask(old);
  if (rc != 0) throw_errno("unable to listen on " + quote(path), e);
  if (::listen(s.get(), 64) != 0) throw_errno("unable to listen on " + quote(path));
  return s.extract();
}

void sd_notify_ready() {
  const char* ns = std::getenv("NOTIFY_SOCKET");
  if (!ns || !*ns) return;
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  size_t n = std::strlen(ns);
  if (n >= sizeof a.sun_path || (ns[0] != '/' && ns[0] != '@')) {
    LOG_WARN("NOTIFY_SOCKET=%s: not a socket path, not notified", ns);
    return;
  }
  std::memcpy(a.sun_path, ns, n);
  if (ns[0] == '@') a.sun_path[0] = '\0';  // an abstract socket
  ScopedFd s(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  std::string msg = strf("READY=1\nMAINPID=%d\n", static_cast<int>(getpid()));
  if (!s.valid() || ::sendto(s.get(), msg.data(), msg.size(), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&a),
                             static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + n)) < 0)
    LOG_WARN("unable to notify %s: %s", ns, std::strerror(errno));
}

}  // namespace

int store_serve(const ServeOptions& o) {
  ::signal(SIGPIPE, SIG_IGN);
  std::string path = store_socket_path(o.socket);
  int lfd = activated_socket();
  bool own_socket = lfd < 0;
  if (own_socket) lfd = bind_socket(path);
  int fl = ::fcntl(lfd, F_GETFL);
  ::fcntl(lfd, F_SETFL, fl | O_NONBLOCK);

  auto* store = new Store(o.max_memory);  // lives as long as the process (sessions hold it)
  Service sv{store, lfd, ::geteuid()};
  uv_loop_t loop;
  uv_loop_init(&loop);
  uv_poll_t poll;
  if (uv_poll_init(&loop, &poll, lfd) != 0) fail("the store's socket cannot be polled");
  poll.data = &sv;
  uv_poll_start(&poll, UV_READABLE, on_connection);
  uv_signal_t term, intr;
  uv_signal_init(&loop, &term);
  uv_signal_init(&loop, &intr);
  uv_signal_start(&term, on_stop, SIGTERM);
  uv_signal_start(&intr, on_stop, SIGINT);

  if (o.ready_fd >= 0) {
    std::string line = strf("%d\n", static_cast<int>(getpid()));
    write_full(o.ready_fd, line.data(), line.size());
    ::close(o.ready_fd);
  }
  sd_notify_ready();
  LOG_INFO("serving on %s (pid %d)", own_socket ? path.c_str() : "the socket systemd passed", static_cast<int>(getpid()));
  uv_run(&loop, UV_RUN_DEFAULT);
  // Stopped by a signal.  Sessions still running end with the process:
  // their puts were not committed and are gone with everything else.
  if (own_socket) ::unlink(path.c_str());
  log::flush();
  std::fflush(stdout);
  ::_exit(0);
}

}  // namespace ck
