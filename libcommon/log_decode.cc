// Turns a record (format pointer + raw argument slots, see log_impl.h) back
// into the text printf would have made.  Each conversion is handed to
// snprintf with exactly the flags, width, precision and length modifier it
// was written with, and the argument cast back to the C type that modifier
// names, so the text is printf's own.  The commonest plain conversions (%d
// %u %x %s %p with no flags, width or precision) take a hand-written fast
// path that gives the same bytes.  Runs on the flusher thread, in flush(), or
// in a fatal-signal handler: no allocation, no locks.
#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

#include "log.h"

namespace ck::log::detail {
namespace {

struct Out {
  char* p;
  char* end;  // one byte is always kept for a NUL
  void put(const char* s, size_t n) {
    size_t room = static_cast<size_t>(end - p);
    if (n > room) n = room;
    std::memcpy(p, s, n);
    p += n;
  }
  void putc(char c) {
    if (p < end) *p++ = c;
  }
  // snprintf one conversion straight into the buffer.
  template <typename T>
  void fmt(const char* spec, T v) {
    size_t room = static_cast<size_t>(end - p) + 1;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    int n = std::snprintf(p, room, spec, v);
#pragma GCC diagnostic pop
    if (n < 0) return;
    p += static_cast<size_t>(n) < room ? static_cast<size_t>(n) : room - 1;
  }
};

struct Args {
  const char* p;
  const char* end;
  // A slot of `slot` bytes into v, or zeros past the end (p stays inside).
  void take(void* v, size_t len, size_t slot) {
    if (static_cast<size_t>(end - p) >= slot) {
      std::memcpy(v, p, len);
      p += slot;
    } else {
      p = end;
    }
  }
  uint64_t u64() {
    uint64_t v = 0;
    take(&v, 8, 8);
    return v;
  }
  double dbl() {
    double d = 0;
    take(&d, 8, 8);
    return d;
  }
  long double ldbl() {
    long double d = 0;
    take(&d, sizeof d, 16);
    return d;
  }
  // nullptr for a NULL string.  A length that does not fit in the record,
  // or a string without its NUL, gives "" (a record a crash left half
  // written, or a wild store: found by tests/fuzz/log_decode_fuzz.cc, which
  // read 265 bytes from a 1-byte "" before), and every later slot reads 0.
  const char* str(uint64_t* len) {
    uint64_t n = u64();
    *len = 0;
    if (n == kNullStr) return nullptr;
    const char* s = p;
    size_t room = p < end ? static_cast<size_t>(end - p) : 0;
    if (n >= room || s[n] != '\0') {
      p = end;
      return "";
    }
    *len = n;
    p += std::min<size_t>(round8(n + 1), room);
    return s;
  }
};

char* utoa(char* endp, uint64_t v, unsigned base, bool upper) {
  const char* digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
  do {
    *--endp = digits[v % base];
    v /= base;
  } while (v);
  return endp;
}

// True if the spec (flags already seen) has a width or precision.
bool plain_width_or_prec(const char* spec) {
  for (const char* p = spec + 1; *p; ++p)
    if (is_digit(*p) || *p == '.') return true;
  return false;
}

}  // namespace

size_t decode_message(const RecHead* rec, char* out, size_t cap) {
  if (cap == 0) return 0;
  Out o{out, out + cap - 1};
  const char* body = reinterpret_cast<const char*>(rec) + sizeof(RecHead);
  Args a{body, rec->size > sizeof(RecHead) ? reinterpret_cast<const char*>(rec) + rec->size : body};
  // A width or precision taken from an argument ('*') is cut to what can
  // show in `out`: past cap - 1 plus the longest a conversion's own text can
  // be (a %s string is at most kMaxStr), the visible text is the same, and
  // snprintf would otherwise pad for up to 2^31 bytes (seconds of work in a
  // flusher or a crash handler; a record a wild store or a half-written
  // crash left holds any value; found by tests/fuzz/log_decode_fuzz.cc).
  const int64_t pad_max = static_cast<int64_t>(std::min<size_t>(cap, 1u << 24)) + int64_t(kMaxStr) + 64;
  const char* f = rec->fmt;
  while (*f) {
    if (*f != '%') {
      const char* pct = std::strchr(f, '%');
      size_t n = pct ? static_cast<size_t>(pct - f) : std::strlen(f);
      o.put(f, n);
      f += n;
      continue;
    }
    ++f;
    if (*f == '%') {
      o.putc('%');
      ++f;
      continue;
    }
    char spec[64];
    size_t k = 0;
    spec[k++] = '%';
    bool plain = true, alt = false;
    while (is_flag(*f) && k < 16) {
      if (*f == '#' && !alt) alt = true;
      else plain = false;
      spec[k++] = *f++;
    }
    if (alt && !plain) alt = false;  // '#' with other flags: snprintf
    if (alt) plain = false;          // only %#x / %#X take the fast path
    if (*f == '*') {
      ++f;
      int64_t w = static_cast<int>(a.u64());
      w = std::max<int64_t>(-pad_max, std::min<int64_t>(pad_max, w));
      k += std::snprintf(spec + k, sizeof spec - k, "%d", static_cast<int>(w));
      plain = false;
    } else {
      while (is_digit(*f) && k < 30) {
        spec[k++] = *f++;
        plain = false;
      }
    }
    if (*f == '.') {
      ++f;
      plain = false;
      if (*f == '*') {
        ++f;
        int pr = static_cast<int>(std::min<int64_t>(pad_max, static_cast<int>(a.u64())));
        if (pr >= 0) k += std::snprintf(spec + k, sizeof spec - k, ".%d", pr);
      } else {
        spec[k++] = '.';
        while (is_digit(*f) && k < 44) spec[k++] = *f++;
      }
    }
    // length modifier: 0 none, 'H' hh, 'h', 'l', 'q' ll/q, 'L', 'j', 'z', 't'
    char len = 0;
    while (*f == 'h' || *f == 'l' || *f == 'L' || *f == 'q' || *f == 'j' || *f == 'z' || *f == 't') {
      char c = *f++;
      if (k < 56) spec[k++] = c;
      if (c == 'h') len = (len == 'h') ? 'H' : 'h';
      else if (c == 'l') len = (len == 'l') ? 'q' : 'l';
      else len = c;
    }
    char conv = *f;
    if (!conv) break;
    ++f;
    spec[k++] = conv;
    spec[k] = 0;
    switch (conv) {
      case 'd':
      case 'i': {
        int64_t v = static_cast<int64_t>(a.u64());
        if (len == 0 || len == 'h' || len == 'H') v = static_cast<int>(v);
        if (plain && (len == 0 || len == 'l' || len == 'q' || len == 'z' || len == 'j' || len == 't')) {
          char buf[24];
          char* e = buf + sizeof buf;
          char* s = utoa(e, v < 0 ? 0 - static_cast<uint64_t>(v) : static_cast<uint64_t>(v), 10, false);
          if (v < 0) *--s = '-';
          o.put(s, static_cast<size_t>(e - s));
        } else if (len == 0 || len == 'h' || len == 'H') {
          o.fmt(spec, static_cast<int>(v));
        } else if (len == 'l') {
          o.fmt(spec, static_cast<long>(v));
        } else if (len == 'j') {
          o.fmt(spec, static_cast<intmax_t>(v));
        } else if (len == 'z') {
          o.fmt(spec, static_cast<ssize_t>(v));
        } else if (len == 't') {
          o.fmt(spec, static_cast<ptrdiff_t>(v));
        } else {
          o.fmt(spec, static_cast<long long>(v));
        }
        break;
      }
      case 'u':
      case 'o':
      case 'x':
      case 'X':
      case 'c': {
        uint64_t v = a.u64();
        if (conv == 'c') {
          o.fmt(spec, static_cast<int>(v));
          break;
        }
        if (len == 0 || len == 'h' || len == 'H') v = static_cast<unsigned>(v);
        bool simple_len = len == 0 || len == 'l' || len == 'q' || len == 'z' || len == 'j' || len == 't';
        if (((plain && conv != 'o') || (alt && !plain_width_or_prec(spec) && (conv == 'x' || conv == 'X'))) &&
            simple_len) {
          char buf[24];
          char* e = buf + sizeof buf;
          char* s = utoa(e, v, conv == 'u' ? 10 : 16, conv == 'X');
          if (alt && v) {  // "%#x": 0x prefix, except for zero
            *--s = conv;
            *--s = '0';
          }
          o.put(s, static_cast<size_t>(e - s));
        } else if (len == 0 || len == 'h' || len == 'H') {
          o.fmt(spec, static_cast<unsigned>(v));
        } else if (len == 'l') {
          o.fmt(spec, static_cast<unsigned long>(v));
        } else if (len == 'j') {
          o.fmt(spec, static_cast<uintmax_t>(v));
        } else if (len == 'z') {
          o.fmt(spec, static_cast<size_t>(v));
        } else if (len == 't') {
          o.fmt(spec, static_cast<ptrdiff_t>(v));
        } else {
          o.fmt(spec, static_cast<unsigned long long>(v));
        }
        break;
      }
      case 'e': case 'E': case 'f': case 'F': case 'g': case 'G': case 'a': case 'A':
        if (len == 'L') o.fmt(spec, a.ldbl());
        else o.fmt(spec, a.dbl());
        break;
      case 'p': {
        uint64_t v = a.u64();
        if (plain) {
          if (v == 0) {
            o.put("(nil)", 5);
          } else {
            char buf[24];
            char* e = buf + sizeof buf;
            char* s = utoa(e, v, 16, false);
            *--s = 'x';
            *--s = '0';
            o.put(s, static_cast<size_t>(e - s));
          }
        } else {
          o.fmt(spec, reinterpret_cast<void*>(static_cast<uintptr_t>(v)));
        }
        break;
      }
      case 's': {
        uint64_t n = 0;
        const char* s = a.str(&n);
        if (plain && s) o.put(s, n);
        else o.fmt(spec, s);
        break;
      }
      case 'm': {
        int saved = errno;
        errno = rec->err;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        size_t room = static_cast<size_t>(o.end - o.p) + 1;
        int n = std::snprintf(o.p, room, spec);
#pragma GCC diagnostic pop
        if (n > 0) o.p += static_cast<size_t>(n) < room ? static_cast<size_t>(n) : room - 1;
        errno = saved;
        break;
      }
      default:
        o.put(spec, k);  // cannot happen: parse_fmt refused it at compile time
    }
  }
  *o.p = 0;
  return static_cast<size_t>(o.p - out);
}

std::string render_record(const RecHead* rec) {
  std::string s(kMaxStr + 4096, '\0');
  s.resize(decode_message(rec, &s[0], s.size()));
  return s;
}

}  // namespace ck::log::detail
