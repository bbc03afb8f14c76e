#include <cstdint>
#include <string>

#include "crit.h"

namespace crit {

namespace {
const char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
int value_of(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}
}  // namespace

std::string base64(const void* data, size_t n) {
  auto* p = static_cast<const unsigned char*>(data);
  std::string out;
  out.reserve((n + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= n; i += 3) {
    uint32_t v = uint32_t{p[i]} << 16 | uint32_t{p[i + 1]} << 8 | p[i + 2];
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (i < n) {
    uint32_t v = uint32_t{p[i]} << 16 | (i + 1 < n ? uint32_t{p[i + 1]} << 8 : 0);
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < n ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

bool unbase64(const std::string& in, std::string* out) {
  out->clear();
  if (in.size() % 4) return false;
  out->reserve(in.size() / 4 * 3);
  for (size_t i = 0; i < in.size(); i += 4) {
    bool last = i + 4 == in.size();
    int a = value_of(in[i]), b = value_of(in[i + 1]);
    int c = value_of(in[i + 2]), d = value_of(in[i + 3]);
    if (a < 0 || b < 0) return false;
    if (last && in[i + 2] == '=' && in[i + 3] == '=') {
      if (b & 15) return false;  // non-canonical: bits that encode nothing
      *out += static_cast<char>(a << 2 | b >> 4);
      break;
    }
    if (c < 0) return false;
    if (last && in[i + 3] == '=') {
      if (c & 3) return false;
      *out += static_cast<char>(a << 2 | b >> 4);
      *out += static_cast<char>((b & 15) << 4 | c >> 2);
      break;
    }
    if (d < 0) return false;
    uint32_t v = uint32_t(a) << 18 | uint32_t(b) << 12 | uint32_t(c) << 6 | uint32_t(d);
    *out += static_cast<char>(v >> 16);
    *out += static_cast<char>(v >> 8);
    *out += static_cast<char>(v);
  }
  return true;
}

}  // namespace crit
