// The logging engine: per-thread rings of raw records (filled by emit() in
// log_impl.h), one consumer at a time that merges them by timestamp, decodes
// them (log_decode.cc) and writes whole lines.  The consumer is a background
// thread, or whoever calls flush(), or a writer whose ring is full, or the
// fatal-signal handler.  ck-log(7) explains the design.
#include "log.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

namespace ck::log {
namespace detail {

__thread Ring* tls_ring = nullptr;
std::atomic<bool> sync_mode{false};

namespace {

constexpr uint64_t kRingBytes = uint64_t(1) << 20;  // per thread
constexpr size_t kOutBytes = 512 * 1024;
constexpr size_t kMaxLine = kMaxStr + 4096;          // a message is cut here

long futex(std::atomic<int>* w, int op, int val, const struct timespec* ts) {
  return ::syscall(SYS_futex, reinterpret_cast<int*>(w), op, val, ts, nullptr, 0);
}

int gettid_now() { return static_cast<int>(::syscall(SYS_gettid)); }

// A lock that knows its owner, so that a signal handler can tell "my own
// thread holds it" from "another thread holds it", and that a forked child
// can simply reset.
struct Lock {
  std::atomic<int> owner{0};
  // Returns false after timeout_ms (-1: never).
  bool lock(int me, int timeout_ms) {
    int spins = 0;
    uint64_t start = 0;
    for (;;) {
      int expect = 0;
      if (owner.compare_exchange_weak(expect, me, std::memory_order_acquire)) return true;
      if (expect == 0) continue;
      if (++spins < 100) continue;
      if (timeout_ms >= 0) {
        if (!start) start = now_ns();
        if (now_ns() - start > uint64_t(timeout_ms) * 1000000) return false;
      }
      struct timespec ts = {0, 1000000};
      futex(&owner, FUTEX_WAIT_PRIVATE, expect, &ts);
    }
  }
  void unlock() {
    owner.store(0, std::memory_order_release);
    futex(&owner, FUTEX_WAKE_PRIVATE, 1, nullptr);
  }
};

struct Engine {
  Lock lock;                       // guards everything below but `modules`
  Ring* rings = nullptr;
  int fd = 2;
  bool fd_regular = false;
  bool to_log_file = false;        // set_log_file(): always full lines
  const char* tool = "ck";
  pid_t pid = 0;
  char* out = nullptr;             // decoded lines not yet written
  size_t out_len = 0;
  std::atomic<uint64_t> lost{0};
  // flusher
  std::atomic<bool> flusher_started{false};
  std::atomic<bool> flusher_idle{false};
  std::atomic<int> wake{0};
  std::atomic<bool> shutting_down{false};
  bool flusher_allowed = true;
  // modules and configuration (not touched by signal handlers)
  std::mutex mod_mu;
  std::vector<Module*> modules;
  std::string spec;
  bool spec_from_env = false;
  int verbosity = 0;
};

void at_exit();
void fork_prepare();
void fork_parent();
void fork_child();

Engine& eng() {
  static Engine* e = [] {
    auto* x = new Engine;  // never destroyed: usable from any destructor or handler
    x->out = static_cast<char*>(std::malloc(kOutBytes));
    x->pid = ::getpid();
    struct stat st;
    x->fd_regular = ::fstat(2, &st) == 0 && S_ISREG(st.st_mode);
    const char* f = std::getenv("CK_LOG_FLUSHER");
    x->flusher_allowed = !(f && std::strcmp(f, "0") == 0);
    std::atexit(at_exit);
    pthread_atfork(fork_prepare, fork_parent, fork_child);
    return x;
  }();
  return *e;
}

const char* const kNames[] = {"error", "warn", "info", "debug", "trace"};

void write_all(int fd, const char* p, size_t n) {
  while (n) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return;  // nowhere to report it
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
}

void out_write(Engine& e) {
  if (e.out_len) write_all(e.fd, e.out, e.out_len);
  e.out_len = 0;
}

// Appends one line for rec.  The caller holds the lock.
void out_line(Engine& e, const RecHead* rec) {
  if (kOutBytes - e.out_len < kMaxLine + 256) out_write(e);
  char* p = e.out + e.out_len;
  char* const start = p;
  int lvl = rec->level < 0 ? 0 : rec->level > 4 ? 4 : rec->level;
  Module* m = rec->mod;
  bool terse = !e.to_log_file && lvl <= kWarn && (!m || m->level < kDebug);
  size_t tl = std::strlen(e.tool);
  if (terse) {
    std::memcpy(p, e.tool, tl);
    p += tl;
    std::memcpy(p, ": ", 2);
    p += 2;
    if (lvl == kWarn) {
      std::memcpy(p, "warning: ", 9);
      p += 9;
    }
  } else {
    // "SECONDS.NANOSECONDS tool[tid] level module: "
    char num[24];
    char* ne = num + sizeof num;
    char* ns = ne;
    uint64_t sec = rec->ts / 1000000000u, nsec = rec->ts % 1000000000u;
    do {
      *--ns = char('0' + sec % 10);
      sec /= 10;
    } while (sec);
    std::memcpy(p, ns, size_t(ne - ns));
    p += ne - ns;
    *p++ = '.';
    for (int i = 8; i >= 0; --i) {
      p[i] = char('0' + nsec % 10);
      nsec /= 10;
    }
    p += 9;
    *p++ = ' ';
    std::memcpy(p, e.tool, tl);
    p += tl;
    *p++ = '[';
    uint64_t t = static_cast<uint32_t>(rec->tid);
    ns = ne;
    do {
      *--ns = char('0' + t % 10);
      t /= 10;
    } while (t);
    std::memcpy(p, ns, size_t(ne - ns));
    p += ne - ns;
    *p++ = ']';
    *p++ = ' ';
    size_t ll = std::strlen(kNames[lvl]);
    std::memcpy(p, kNames[lvl], ll);
    p += ll;
    *p++ = ' ';
    const char* mn = m ? m->name : "-";
    size_t ml = ::strnlen(mn, 64);
    std::memcpy(p, mn, ml);
    p += ml;
    *p++ = ':';
    *p++ = ' ';
  }
  p += decode_message(rec, p, kMaxLine);
  *p++ = '\n';
  e.out_len += size_t(p - start);
  size_t limit = e.fd_regular ? kOutBytes / 2 : 3584;  // pipes: stay near PIPE_BUF
  if (e.out_len >= limit) out_write(e);
}

// Skips padding at ring position `at`; returns the record there or nullptr.
const RecHead* rec_at(Ring* r, uint64_t& at, uint64_t end) {
  while (at < end) {
    uint64_t pos = at & (r->cap - 1);
    if (r->cap - pos < sizeof(RecHead)) {
      at += r->cap - pos;
      continue;
    }
    const RecHead* h = reinterpret_cast<const RecHead*>(r->buf + pos);
    if (!h->fmt) {
      at += h->size;
      continue;
    }
    return h;
  }
  return nullptr;
}

// Writes every committed record of every ring, oldest first.  Holds the lock.
void drain_locked(Engine& e) {
  constexpr int kBatch = 64;
  for (;;) {
    Ring* rs[kBatch];
    uint64_t at[kBatch], end[kBatch];
    const RecHead* cur[kBatch];
    int n = 0;
    for (Ring* r = e.rings; r && n < kBatch; r = r->next) {
      uint64_t t = r->tail.load(std::memory_order_relaxed);
      uint64_t h = r->head.load(std::memory_order_acquire);
      if (t == h) continue;
      rs[n] = r;
      at[n] = t;
      end[n] = h;
      cur[n] = rec_at(r, at[n], h);
      if (!cur[n]) {
        r->tail.store(h, std::memory_order_release);
        continue;
      }
      ++n;
    }
    if (n == 0) break;
    for (;;) {
      int best = -1;
      for (int i = 0; i < n; ++i)
        if (cur[i] && (best < 0 || cur[i]->ts < cur[best]->ts)) best = i;
      if (best < 0) break;
      out_line(e, cur[best]);
      at[best] += cur[best]->size;
      cur[best] = rec_at(rs[best], at[best], end[best]);
      // Give the space back in 32 KiB steps: one store per record would
      // keep the writer's cache line bouncing.
      if (!cur[best] || at[best] - rs[best]->tail.load(std::memory_order_relaxed) >= 32768)
        rs[best]->tail.store(at[best], std::memory_order_release);
    }
    if (n < kBatch) break;  // more rings than one batch: go round again
  }
  out_write(e);
  // Free the rings of threads that have exited and are fully written.
  Ring** pp = &e.rings;
  while (*pp) {
    Ring* r = *pp;
    if (r->dead.load(std::memory_order_acquire) &&
        r->tail.load(std::memory_order_relaxed) == r->head.load(std::memory_order_acquire)) {
      *pp = r->next;
      std::free(r->buf);
      delete r;
    } else {
      pp = &r->next;
    }
  }
}

// The pid changed without our atfork handler running (raw clone): behave as
// the fork child handler would, without trusting the lock.
void check_pid(Engine& e) {
  if (::getpid() != e.pid) after_fork_child();
}

void flush_now(Engine& e) {
  check_pid(e);
  int me = tls_ring ? tls_ring->tid : gettid_now();
  if (e.lock.owner.load(std::memory_order_relaxed) == me) return;  // re-entered from a signal handler
  e.lock.lock(me, -1);
  drain_locked(e);
  e.lock.unlock();
}

void* flusher_main(void*) {
  Engine& e = eng();
  int me = gettid_now();
  while (!e.shutting_down.load()) {
    int seen = e.wake.load();
    e.flusher_idle.store(true);
    struct timespec ts = {0, 50 * 1000000};
    futex(&e.wake, FUTEX_WAIT_PRIVATE, seen, &ts);
    e.flusher_idle.store(false);
    if (e.shutting_down.load() || sync_mode.load()) break;
    e.lock.lock(me, -1);
    drain_locked(e);
    e.lock.unlock();
  }
  return nullptr;
}

void start_flusher(Engine& e) {
  if (!e.flusher_allowed || sync_mode.load() || e.flusher_started.exchange(true)) return;
  // The flusher takes no signals, so that it never steals a process-directed
  // signal (SIGCHLD, SIGTERM) from the tool's own threads.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_t th;
  pthread_attr_t at;
  pthread_attr_init(&at);
  pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&at, 256 * 1024);
  if (pthread_create(&th, &at, flusher_main, nullptr) == 0)
    pthread_setname_np(th, "ck-log");
  else
    sync_mode.store(true);  // no thread: every message is written as it is logged
  pthread_attr_destroy(&at);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

pthread_key_t ring_key;
pthread_once_t ring_key_once = PTHREAD_ONCE_INIT;
__thread bool thread_exiting = false;

void ring_thread_exit(void* p) {
  auto* r = static_cast<Ring*>(p);
  thread_exiting = true;
  tls_ring = nullptr;
  r->dead.store(true, std::memory_order_release);
}

void make_key() { pthread_key_create(&ring_key, ring_thread_exit); }

void at_exit() {
  Engine& e = eng();
  e.shutting_down.store(true);
  flush_now(e);
}

void fork_prepare() {
  Engine& e = eng();
  e.lock.lock(tls_ring ? tls_ring->tid : gettid_now(), -1);
}
void fork_parent() { eng().lock.unlock(); }
void fork_child() { after_fork_child(); }

// Fatal signals.
constexpr int kFatal[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
struct sigaction old_actions[NSIG];
std::atomic<bool> crashing{false};

void on_fatal(int sig, siginfo_t*, void*) {
  Engine& e = eng();
  if (!crashing.exchange(true)) {
    int me = gettid_now();
    if (e.lock.owner.load() == me) {
      // This thread crashed while writing: keep what was decoded, go on.
      out_write(e);
      drain_locked(e);
    } else if (e.lock.lock(me, 2000)) {
      drain_locked(e);
      e.lock.unlock();
    } else {
      drain_locked(e);  // the holder is stuck: write anyway (lines may repeat)
    }
  }
  sigaction(sig, &old_actions[sig], nullptr);
  ::syscall(SYS_tgkill, ::getpid(), gettid_now(), sig);  // delivered when we return
}

}  // namespace

int current_tid() { return tls_ring ? tls_ring->tid : gettid_now(); }

Ring* make_ring() {
  if (thread_exiting) return nullptr;
  Engine& e = eng();
  check_pid(e);
  if (e.lock.owner.load() == gettid_now()) return nullptr;  // in a handler, inside our own flush
  pthread_once(&ring_key_once, make_key);
  auto* r = new Ring;
  r->buf = static_cast<char*>(std::malloc(kRingBytes));
  if (!r->buf) {
    delete r;
    return nullptr;
  }
  r->cap = kRingBytes;
  r->tid = gettid_now();
  e.lock.lock(r->tid, -1);
  r->next = e.rings;
  e.rings = r;
  e.lock.unlock();
  tls_ring = r;
  pthread_setspecific(ring_key, r);
  start_flusher(e);
  return r;
}

void wait_for_room(Ring* r, uint64_t total) {
  Engine& e = eng();
  uint64_t h = r->head.load(std::memory_order_relaxed);
  for (;;) {
    r->tail_seen = r->tail.load(std::memory_order_acquire);
    if (h + total - r->tail_seen <= r->cap) return;
    // Full: write it out ourselves rather than drop anything.
    flush_now(e);
  }
}

void after_commit(Ring* r, int level) {
  Engine& e = eng();
  if (level <= kWarn || sync_mode.load(std::memory_order_relaxed)) {
    flush_now(e);
    r->tail_seen = r->tail.load(std::memory_order_acquire);
    return;
  }
  // Looked at every cap/16 bytes only: tail's cache line belongs to the
  // consumer, and touching it on every call would cost more than the call.
  r->tail_seen = r->tail.load(std::memory_order_acquire);
  uint64_t h = r->head.load(std::memory_order_relaxed);
  r->next_check = h + r->cap / 16;
  if (h - r->tail_seen > r->cap / 4 && e.flusher_idle.load(std::memory_order_relaxed) &&
      e.flusher_idle.exchange(false)) {
    e.wake.fetch_add(1);
    futex(&e.wake, FUTEX_WAKE_PRIVATE, 1, nullptr);
  }
}

void emit_slow(Ring* r, size_t need, void (*fill_fn)(char*, const void*), const void* ctx) {
  Engine& e = eng();
  alignas(16) char stack[4096];
  char* buf = stack;
  bool reentered = r && r->busy;
  if (need > sizeof stack) {
    if (reentered) {  // in a signal handler: no malloc
      e.lost.fetch_add(1);
      return;
    }
    buf = static_cast<char*>(std::malloc(need));
    if (!buf) {
      e.lost.fetch_add(1);
      return;
    }
  }
  fill_fn(buf, ctx);
  emit_direct(reinterpret_cast<RecHead*>(buf));
  if (buf != stack) std::free(buf);
}

void emit_direct(RecHead* rec) {
  Engine& e = eng();
  check_pid(e);
  int me = current_tid();
  if (e.lock.owner.load(std::memory_order_relaxed) == me) {
    // A signal handler interrupted this thread's own flush: write this one
    // line by itself, after what was already decoded.
    out_write(e);
    out_line(e, rec);
    out_write(e);
    return;
  }
  e.lock.lock(me, -1);
  drain_locked(e);  // keeps this thread's order: older records first
  out_line(e, rec);
  out_write(e);
  e.lock.unlock();
}

}  // namespace detail

using namespace detail;

namespace {

int parse_level(const std::string& s) {
  static const char* const names[] = {"error", "warn", "info", "debug", "trace"};
  for (int i = 0; i < 5; ++i)
    if (s == names[i]) return i;
  if (s == "warning") return kWarn;
  if (s == "off" || s == "none") return kOff;
  if (s.size() == 1 && s[0] >= '0' && s[0] <= '4') return s[0] - '0';
  return -2;
}

// Level for module `name`: the last matching item of the spec ("all" or the
// module's name; a bare level means all), else warn; then verbosity added,
// kept within error..trace unless the module is off.
int level_for(const std::string& spec, int verbosity, const char* name, std::vector<std::string>* bad) {
  int lvl = kWarn;
  size_t pos = 0;
  while (pos < spec.size()) {
    size_t comma = spec.find(',', pos);
    if (comma == std::string::npos) comma = spec.size();
    std::string item = spec.substr(pos, comma - pos);
    pos = comma + 1;
    if (item.empty()) continue;
    size_t colon = item.find_first_of(":=");
    std::string mod = colon == std::string::npos ? "all" : item.substr(0, colon);
    std::string lv = colon == std::string::npos ? item : item.substr(colon + 1);
    int l = parse_level(lv);
    if (l == -2) {
      if (bad) bad->push_back(item);
      continue;
    }
    if (mod == "all" || mod == "*" || mod == name) lvl = l;
  }
  if (lvl == kOff) return kOff;
  lvl += verbosity;
  return std::max<int>(kError, std::min<int>(kTrace, lvl));
}

CK_LOG_MODULE("log");

}  // namespace

Module* module(const char* name) {
  Engine& e = eng();
  std::lock_guard<std::mutex> g(e.mod_mu);
  for (Module* m : e.modules)
    if (std::strcmp(m->name, name) == 0) return m;
  if (e.spec.empty() && !e.spec_from_env) {
    const char* env = std::getenv("CK_LOG");
    if (env) e.spec = env;
    e.spec_from_env = true;
  }
  auto* m = new Module{name, level_for(e.spec, e.verbosity, name, nullptr)};
  e.modules.push_back(m);
  return m;
}

void configure(const std::string& spec, int verbosity) {
  Engine& e = eng();
  std::vector<std::string> bad;
  {
    std::lock_guard<std::mutex> g(e.mod_mu);
    e.spec = spec;
    if (e.spec.empty()) {
      const char* env = std::getenv("CK_LOG");
      if (env) e.spec = env;
    }
    e.spec_from_env = true;
    e.verbosity = verbosity;
    level_for(e.spec, 0, "", &bad);
    for (Module* m : e.modules) m->level = level_for(e.spec, e.verbosity, m->name, nullptr);
  }
  for (const std::string& b : bad) LOG_WARN("CK_LOG: unknown level in '%s'", b.c_str());
}

void set_tool(const char* tool) {
  Engine& e = eng();
  flush_now(e);
  e.tool = tool;
}

namespace {
void switch_output(int fd, bool log_file) {
  Engine& e = eng();
  int me = current_tid();
  e.lock.lock(me, -1);
  drain_locked(e);
  struct stat st;
  e.fd = fd;
  e.fd_regular = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
  e.to_log_file = log_file;
  e.lock.unlock();
}
}  // namespace

void set_output(int fd) { switch_output(fd, false); }

void set_log_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) {
    LOG_WARN("unable to open log file '%s': %s", path.c_str(), std::strerror(errno));
    return;
  }
  switch_output(fd, true);
}

void flush() { flush_now(eng()); }

uint64_t lost() { return eng().lost.load(); }

void install_crash_handlers() {
  eng();
  // An alternate stack, so that a stack overflow in the main thread is
  // still written out.
  static char* alt = nullptr;
  if (!alt) {
    constexpr size_t kAlt = 128 * 1024;
    alt = static_cast<char*>(std::malloc(kAlt));
    if (alt) {
      stack_t ss{};
      ss.ss_sp = alt;
      ss.ss_size = kAlt;
      sigaltstack(&ss, nullptr);
    }
  }
  for (int sig : kFatal) {
    struct sigaction sa {};
    sa.sa_sigaction = on_fatal;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    struct sigaction old {};
    if (sigaction(sig, &sa, &old) == 0 && old.sa_sigaction != on_fatal) old_actions[sig] = old;
  }
}

void after_fork_child() {
  Engine& e = eng();
  e.pid = ::getpid();
  e.lock.owner.store(0);
  e.out_len = 0;
  e.flusher_started.store(false);
  sync_mode.store(true);
  // Records still in the rings are the parent's to write.  Rings of the
  // parent's other threads have no owner here.
  Ring** pp = &e.rings;
  while (*pp) {
    Ring* r = *pp;
    uint64_t h = r->head.load();
    r->tail.store(h);
    r->tail_seen = h;
    if (r != tls_ring) {
      *pp = r->next;
      std::free(r->buf);
      delete r;
    } else {
      r->tid = gettid_now();
      pp = &r->next;
    }
  }
}

}  // namespace ck::log
