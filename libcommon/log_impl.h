// The hot path of the logging engine (included by log.h; not an API).
//
// A record in a thread's ring is a RecHead followed by one slot per printf
// argument, each 8-byte aligned:
//   integer, char, '*' width/precision   8 bytes (int64 or uint64)
//   double                               8 bytes; long double 16 bytes
//   pointer (%p)                         8 bytes
//   string (%s)                          uint64 length (kNullStr for NULL),
//                                        then the bytes and a NUL, padded to 8
// The format string itself tells the decoder (log_decode.cc) which slot is
// which, exactly as it tells printf.
#pragma once
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <time.h>
#include <tuple>
#include <type_traits>
#include <utility>

namespace ck::log {
struct Module;
namespace detail {

// ---- the format, parsed at compile time ----------------------------------

constexpr int kMaxSlots = 32;

struct FmtInfo {
  bool ok = true;             // every conversion is one the engine carries
  int nargs = 0;              // argument slots, '*' included
  char kind[kMaxSlots] = {};  // '*', 'i' (integer, %c), 'f', 'p', 's'
  int prec[kMaxSlots] = {};   // for 's': -1 none, -2 from the previous slot, else the value
};

constexpr bool is_flag(char c) {
  return c == '-' || c == '+' || c == ' ' || c == '#' || c == '0' || c == '\'' || c == 'I';
}
constexpr bool is_digit(char c) { return c >= '0' && c <= '9'; }

constexpr FmtInfo parse_fmt(const char* f) {
  FmtInfo fi{};
  auto add = [&fi](char k, int p) {
    if (fi.nargs >= kMaxSlots) {
      fi.ok = false;
      return;
    }
    fi.kind[fi.nargs] = k;
    fi.prec[fi.nargs] = p;
    ++fi.nargs;
  };
  while (*f) {
    if (*f++ != '%') continue;
    if (*f == '%') {
      ++f;
      continue;
    }
    while (is_flag(*f)) ++f;
    if (*f == '*') {
      add('*', -1);
      ++f;
    } else {
      while (is_digit(*f)) ++f;
      if (*f == '$') fi.ok = false;  // positional arguments
    }
    int prec = -1;
    if (*f == '.') {
      ++f;
      if (*f == '*') {
        add('*', -1);
        prec = -2;
        ++f;
      } else {
        prec = 0;
        while (is_digit(*f)) prec = prec * 10 + (*f++ - '0');
      }
    }
    bool wide = false;
    while (*f == 'h' || *f == 'l' || *f == 'L' || *f == 'q' || *f == 'j' || *f == 'z' || *f == 't') {
      if (*f == 'l') wide = true;
      ++f;
    }
    char c = *f;
    if (!c) {
      fi.ok = false;
      break;
    }
    ++f;
    switch (c) {
      case 'd': case 'i': case 'u': case 'o': case 'x': case 'X':
        add('i', -1);
        break;
      case 'c':
        if (wide) fi.ok = false;
        add('i', -1);
        break;
      case 'e': case 'E': case 'f': case 'F': case 'g': case 'G': case 'a': case 'A':
        add('f', -1);
        break;
      case 'p':
        add('p', -1);
        break;
      case 's':
        if (wide) fi.ok = false;
        add('s', prec);
        break;
      case 'm':
        break;  // strerror(errno): errno is kept in every record
      default:
        fi.ok = false;  // %n, %C, %S and unknown conversions
    }
  }
  return fi;
}

template <typename F>
struct FmtOf {
  static constexpr FmtInfo value = parse_fmt(F::str());
};

// ---- records and rings ---------------------------------------------------

struct RecHead {
  uint64_t ts;       // CLOCK_MONOTONIC, ns
  const char* fmt;   // nullptr: padding up to the end of the ring
  Module* mod;
  uint32_t size;     // of the whole record, a multiple of 8
  int32_t err;       // errno at the call, for %m
  int32_t tid;
  int32_t level;
};
static_assert(sizeof(RecHead) == 40, "record header");

constexpr uint64_t kNullStr = ~uint64_t(0);
constexpr size_t kMaxStr = 65536;  // longer %s strings are cut (see ck-log(7))

struct Ring {
  alignas(64) std::atomic<uint64_t> head{0};  // bytes produced; written by the owner only
  uint64_t tail_seen = 0;                     // owner's last look at tail
  uint64_t next_check = 0;                    // head at which the owner next looks at the flusher
  char* buf = nullptr;
  uint64_t cap = 0;                           // a power of two
  int32_t tid = 0;
  int busy = 0;                               // owner is inside emit (re-entry from a signal handler)
  alignas(64) std::atomic<uint64_t> tail{0};  // bytes consumed; written under the engine lock only
  std::atomic<bool> dead{false};              // owner thread has exited
  Ring* next = nullptr;
};

extern __thread Ring* tls_ring;
extern std::atomic<bool> sync_mode;  // no flusher (a forked child): write at once

Ring* make_ring();                       // nullptr: this thread cannot have one
void wait_for_room(Ring* r, uint64_t total);
void after_commit(Ring* r, int level);   // wakes the flusher, or writes now
void emit_direct(RecHead* rec);          // writes a record that lives outside any ring

inline uint64_t now_ns() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}

constexpr size_t round8(size_t n) { return (n + 7) & ~size_t(7); }

template <typename T>
constexpr bool is_char_ptr =
    std::is_pointer_v<T> && (std::is_same_v<std::remove_cv_t<std::remove_pointer_t<T>>, char> ||
                             std::is_same_v<std::remove_cv_t<std::remove_pointer_t<T>>, signed char> ||
                             std::is_same_v<std::remove_cv_t<std::remove_pointer_t<T>>, unsigned char>);

template <typename T>
inline long star_value(const T& v) {
  if constexpr (std::is_integral_v<T> || std::is_enum_v<T>)
    return static_cast<long>(v);
  else
    return -1;
}

// Bytes the slot needs; for strings also measures them into len.
template <char K, int P, typename T>
inline size_t slot_size(const T& v, uint64_t& len, long star) {
  if constexpr (K == 's') {
    static_assert(is_char_ptr<T>, "ck log: %s needs a char pointer");
    if (!v) {
      len = kNullStr;
      return 8;
    }
    size_t max = kMaxStr;
    if constexpr (P >= 0) max = size_t(P) < kMaxStr ? size_t(P) : kMaxStr;
    if constexpr (P == -2)
      if (star >= 0 && size_t(star) < kMaxStr) max = size_t(star);
    len = strnlen(reinterpret_cast<const char*>(v), max);
    return 8 + round8(len + 1);
  } else if constexpr (K == 'f' && std::is_same_v<T, long double>) {
    return 16;
  } else {
    return 8;
  }
}

template <char K, typename T>
inline char* put_slot(char* p, const T& v, uint64_t len) {
  if constexpr (K == 's') {
    std::memcpy(p, &len, 8);
    p += 8;
    if (v) {
      std::memcpy(p, v, len);
      p[len] = 0;
      p += round8(len + 1);
    }
  } else if constexpr (K == 'f') {
    static_assert(std::is_floating_point_v<T>, "ck log: %f needs a floating point argument");
    if constexpr (std::is_same_v<T, long double>) {
      std::memcpy(p, &v, sizeof v);
      p += 16;
    } else {
      double d = v;
      std::memcpy(p, &d, 8);
      p += 8;
    }
  } else if constexpr (K == 'p') {
    uint64_t u = 0;
    if constexpr (std::is_pointer_v<T>) u = reinterpret_cast<uintptr_t>(v);
    else if constexpr (std::is_integral_v<T>) u = static_cast<uint64_t>(v);
    std::memcpy(p, &u, 8);
    p += 8;
  } else {  // 'i' and '*'
    uint64_t u;
    if constexpr (std::is_enum_v<T>) {
      u = static_cast<uint64_t>(static_cast<std::underlying_type_t<T>>(v));
    } else if constexpr (std::is_integral_v<T>) {
      if constexpr (std::is_signed_v<T>) u = static_cast<uint64_t>(static_cast<int64_t>(v));
      else u = static_cast<uint64_t>(v);
    } else {
      static_assert(std::is_integral_v<T>, "ck log: integer conversion needs an integer argument");
      u = 0;
    }
    std::memcpy(p, &u, 8);
    p += 8;
  }
  return p;
}

template <typename F, size_t I, typename Tup>
inline long star_before(const Tup& t) {
  if constexpr (I > 0 && FmtOf<F>::value.prec[I] == -2)
    return star_value(std::get<I - 1>(t));
  else
    return -1;
}

template <typename F, size_t... I, typename... A>
inline size_t encoded_size(uint64_t* lens, std::index_sequence<I...>, const A&... a) {
  auto t = std::forward_as_tuple(a...);
  (void)t;
  return (sizeof(RecHead) + ... +
          slot_size<FmtOf<F>::value.kind[I], FmtOf<F>::value.prec[I]>(a, lens[I], star_before<F, I>(t)));
}

template <typename F, size_t... I, typename... A>
inline void encode(char* p, const uint64_t* lens, std::index_sequence<I...>, const A&... a) {
  ((p = put_slot<FmtOf<F>::value.kind[I]>(p, a, lens[I])), ...);
  (void)p;
}

template <typename F, typename... A>
inline void fill(char* at, Module* m, int level, int err, int tid, uint32_t size, const uint64_t* lens,
                 const A&... a) {
  RecHead* h = reinterpret_cast<RecHead*>(at);
  h->ts = now_ns();
  h->fmt = F::str();
  h->mod = m;
  h->size = size;
  h->err = err;
  h->tid = tid;
  h->level = level;
  encode<F>(at + sizeof(RecHead), lens, std::index_sequence_for<A...>{}, a...);
}

void emit_slow(Ring* r, size_t need, void (*fill_fn)(char*, const void*), const void* ctx);
int current_tid();

template <typename F, typename... A>
__attribute__((noinline)) void emit(Module* m, int level, A... a) {
  constexpr const FmtInfo& fi = FmtOf<F>::value;
  static_assert(fi.ok, "ck log: unsupported conversion (%n, %ls, %lc, positional, or over 32 arguments)");
  static_assert(fi.nargs == int(sizeof...(A)), "ck log: argument count does not match the format");
  int err = errno;
  uint64_t lens[sizeof...(A) + 1];
  size_t need = encoded_size<F>(lens, std::index_sequence_for<A...>{}, a...);
  Ring* r = tls_ring;
  if (__builtin_expect(r == nullptr, 0)) r = make_ring();
  if (__builtin_expect(r == nullptr || r->busy || need > r->cap / 4, 0)) {
    // No ring (thread exiting), re-entered from a signal handler, or a huge
    // record: build it outside the ring and write it at once.
    struct Ctx {
      Module* m;
      int level, err;
      size_t need;
      const uint64_t* lens;
      std::tuple<const A&...> args;
    } ctx{m, level, err, need, lens, std::tuple<const A&...>(a...)};
    emit_slow(r, need,
              [](char* at, const void* c) {
                const Ctx& x = *static_cast<const Ctx*>(c);
                std::apply([&](const A&... aa) { fill<F>(at, x.m, x.level, x.err, current_tid(), uint32_t(x.need), x.lens, aa...); },
                           x.args);
              },
              &ctx);
    errno = err;
    return;
  }
  r->busy = 1;
  uint64_t h = r->head.load(std::memory_order_relaxed);
  uint64_t pos = h & (r->cap - 1);
  uint64_t pad = r->cap - pos;
  if (pad >= need) pad = 0;
  if (__builtin_expect(h + pad + need - r->tail_seen > r->cap, 0)) wait_for_room(r, pad + need);
  if (pad >= sizeof(RecHead)) {
    RecHead* ph = reinterpret_cast<RecHead*>(r->buf + pos);
    ph->fmt = nullptr;
    ph->size = uint32_t(pad);
  }
  fill<F>(r->buf + ((h + pad) & (r->cap - 1)), m, level, err, r->tid, uint32_t(need), lens, a...);
  r->head.store(h + pad + need, std::memory_order_release);
  r->busy = 0;
  if (__builtin_expect(level <= 1 || sync_mode.load(std::memory_order_relaxed) || h + pad + need >= r->next_check,
                       0))
    after_commit(r, level);
  errno = err;
}

__attribute__((format(printf, 1, 2))) inline void check_format(const char*, ...) {}

// Decodes one record's message (not the line prefix) into out; returns its
// length.  The text is what snprintf(out, cap, fmt, args...) would give, cut
// at cap - 1 bytes.
size_t decode_message(const RecHead* rec, char* out, size_t cap);

// For tests: encodes like emit() and decodes again.
std::string render_record(const RecHead* rec);
template <typename F, typename... A>
std::string render(A... a) {
  static_assert(FmtOf<F>::value.ok && FmtOf<F>::value.nargs == int(sizeof...(A)), "render: bad format");
  uint64_t lens[sizeof...(A) + 1];
  size_t need = encoded_size<F>(lens, std::index_sequence_for<A...>{}, a...);
  std::string buf(need + 16, '\0');
  char* at = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(&buf[0]) + 15) & ~uintptr_t(15));
  fill<F>(at, nullptr, 2, errno, 0, uint32_t(need), lens, a...);
  return render_record(reinterpret_cast<RecHead*>(at));
}

}  // namespace detail
}  // namespace ck::log

// CK_LOG_RENDER(fmt, args...): the text the engine would log, for tests.
#define CK_LOG_RENDER(fmt, ...)                                  \
  ([&] {                                                         \
    struct ck_log_fmt_ {                                         \
      static constexpr const char* str() { return fmt; }        \
    };                                                           \
    if (0) ::ck::log::detail::check_format(fmt, ##__VA_ARGS__);  \
    return ::ck::log::detail::render<ck_log_fmt_>(__VA_ARGS__);  \
  }())
