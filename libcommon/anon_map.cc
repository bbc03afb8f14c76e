// ck-anon's keyed mappings: SHA-256, HMAC-SHA256, words and paths, IP
// addresses (prefix-preserving) and ports.
#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

#include "anon.h"
#include "error.h"

namespace ck {

// ---- SHA-256 (FIPS 180-4) ----------------------------------------------------

namespace {

// The first 32 bits of the fractional parts of the cube roots of the first
// 64 primes, and of the square roots of the first 8 (the initial state).
constexpr uint32_t kK[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
constexpr uint32_t kH0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                             0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

inline uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

void compress(uint32_t st[8], const unsigned char* blk) {
  uint32_t w[64];
  for (int i = 0; i < 16; ++i)
    w[i] = uint32_t{blk[4 * i]} << 24 | uint32_t{blk[4 * i + 1]} << 16 | uint32_t{blk[4 * i + 2]} << 8 | blk[4 * i + 3];
  for (int i = 16; i < 64; ++i) {
    uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
    uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  uint32_t a = st[0], b = st[1], c = st[2], d = st[3], e = st[4], f = st[5], g = st[6], h = st[7];
  for (int i = 0; i < 64; ++i) {
    uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + kK[i] + w[i];
    uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    h = g;
    g = f;
    f = e;
    e = d + t1;
    d = c;
    c = b;
    b = a;
    a = t1 + t2;
  }
  st[0] += a;
  st[1] += b;
  st[2] += c;
  st[3] += d;
  st[4] += e;
  st[5] += f;
  st[6] += g;
  st[7] += h;
}

}  // namespace

void sha256(const void* data, size_t len, unsigned char out[32]) {
  uint32_t st[8];
  std::memcpy(st, kH0, sizeof st);
  const auto* p = static_cast<const unsigned char*>(data);
  size_t n = len;
  for (; n >= 64; n -= 64, p += 64) compress(st, p);
  unsigned char last[128] = {};
  std::memcpy(last, p, n);
  last[n] = 0x80;
  size_t tail = n + 1 + 8 <= 64 ? 64 : 128;
  uint64_t bits = uint64_t{len} * 8;
  for (int i = 0; i < 8; ++i) last[tail - 1 - i] = static_cast<unsigned char>(bits >> (8 * i));
  compress(st, last);
  if (tail == 128) compress(st, last + 64);
  for (int i = 0; i < 8; ++i)
    for (int j = 0; j < 4; ++j) out[4 * i + j] = static_cast<unsigned char>(st[i] >> (24 - 8 * j));
}

void hmac_sha256(const std::string& key, const std::string& msg, unsigned char out[32]) {
  unsigned char k[64] = {};
  if (key.size() > 64)
    sha256(key.data(), key.size(), k);
  else
    std::memcpy(k, key.data(), key.size());
  std::string in(64, '\0'), outer(64, '\0');
  for (int i = 0; i < 64; ++i) {
    in[i] = static_cast<char>(k[i] ^ 0x36);
    outer[i] = static_cast<char>(k[i] ^ 0x5c);
  }
  in += msg;
  unsigned char ih[32];
  sha256(in.data(), in.size(), ih);
  outer.append(reinterpret_cast<const char*>(ih), 32);
  sha256(outer.data(), outer.size(), out);
}

// ---- the mappings ------------------------------------------------------------

namespace {

std::string subkey(const std::string& key, const char* purpose) {
  unsigned char h[32];
  hmac_sha256(key, purpose, h);
  return std::string(reinterpret_cast<const char*>(h), 32);
}

// Components every Linux system has: they say nothing about the site, and
// a developer reads "/usr/lib/..." and "/dev/null" better than tokens.
const std::set<std::string>& system_names() {
  static const std::set<std::string> s = {
      "usr",   "bin",     "sbin",   "lib",    "lib32",  "lib64",  "libexec", "etc",    "dev",   "proc",
      "sys",   "run",     "tmp",    "var",    "opt",    "srv",    "mnt",     "media",  "home",  "root",
      "boot",  "share",   "local",  "include", "cache", "log",    "spool",   "pts",    "shm",   "mqueue",
      "null",  "zero",    "full",   "random", "urandom", "tty",   "ptmx",    "console", "fd",   "stdin",
      "stdout", "stderr", "self",   "fs",     "cgroup", "unified", "x86_64-linux-gnu", "aarch64-linux-gnu"};
  return s;
}

// "pipe:[123]", "socket:[4]", "anon_inode:[eventfd]", "anon_inode:inotify",
// "[heap]", "[vdso]": names the kernel makes, holding no user data.
bool kernel_name(const std::string& p) {
  if (p.size() >= 2 && p.front() == '[' && p.back() == ']') return true;
  if (p.compare(0, 11, "anon_inode:") == 0) return true;
  size_t c = p.find(":[");
  if (c == std::string::npos || c == 0 || p.back() != ']') return false;
  for (size_t i = 0; i < c; ++i)
    if (!(std::islower(static_cast<unsigned char>(p[i])) || p[i] == '_')) return false;
  return true;
}

constexpr char kBase32[] = "abcdefghijklmnopqrstuvwxyz234567";

}  // namespace

AnonMap::AnonMap(const std::string& key, bool all_paths)
    : k_word_(subkey(key, "ck-anon word")),
      k_ip_(subkey(key, "ck-anon ip")),
      k_port_(subkey(key, "ck-anon port")),
      all_paths_(all_paths) {}

std::string AnonMap::word(const std::string& w) {
  if (w.empty()) return w;
  auto it = words_.find(w);
  if (it != words_.end()) return it->second;
  unsigned char h[32];
  hmac_sha256(k_word_, w, h);
  std::string all = "x";
  for (int i = 0; i < 50; ++i) {  // 5 bits each from 250 of the 256 bits
    unsigned bit = 5 * i, v = 0;
    for (unsigned b = bit; b < bit + 5; ++b) v = v << 1 | ((h[b / 8] >> (7 - b % 8)) & 1);
    all += kBase32[v];
  }
  // 10 characters (50 bits) make a clash unlikely, not impossible: the
  // later word gets a longer name, so the mapping stays 1:1.
  std::string r;
  for (size_t len = 11;; ++len) {
    r = len <= all.size() ? all.substr(0, len) : all + strf("%zu", len - all.size());
    if (!taken_.count(r)) break;
  }
  taken_[r] = w;
  words_[w] = r;
  table_["word"][w] = r;
  return r;
}

std::string AnonMap::path(const std::string& p) {
  if (p.empty()) return p;
  static const std::string kDeleted = " (deleted)";
  if (p.size() > kDeleted.size() && p.compare(p.size() - kDeleted.size(), kDeleted.size(), kDeleted) == 0)
    return path(p.substr(0, p.size() - kDeleted.size())) + kDeleted;
  if (p.compare(0, 7, "/memfd:") == 0) return "/memfd:" + word(p.substr(7));
  if (p.find('/') == std::string::npos) return kernel_name(p) ? p : word(p);
  std::string out;
  size_t i = 0;
  for (;;) {
    size_t j = p.find('/', i);
    std::string c = p.substr(i, j == std::string::npos ? std::string::npos : j - i);
    if (c.empty() || c == "." || c == ".." || (!all_paths_ && system_names().count(c)))
      out += c;
    else
      out += word(c);
    if (j == std::string::npos) break;
    out += '/';
    i = j + 1;
  }
  return out;
}

std::string AnonMap::unix_name(const std::string& n) {
  if (n.empty()) return n;
  size_t end = n.size();
  while (end > 1 && n[end - 1] == '\0') --end;  // trailing NULs of a sun_path stay
  std::string tail = n.substr(end);
  if (n[0] == '\0') return std::string(1, '\0') + path(n.substr(1, end - 1)) + tail;
  return path(n.substr(0, end)) + tail;
}

bool AnonMap::prf_bit(const std::string& domain, const unsigned char* bits, unsigned nbits) {
  // The function of Crypto-PAn's step i: a pseudo-random bit of the first
  // i bits of the address (the rest masked off) and of i itself.
  std::string msg = domain;
  msg += static_cast<char>(nbits);
  unsigned nbytes = (nbits + 7) / 8;
  for (unsigned b = 0; b < nbytes; ++b) {
    unsigned char c = bits[b];
    if (b == nbits / 8) c &= static_cast<unsigned char>(0xff00 >> (nbits % 8));
    msg += static_cast<char>(c);
  }
  unsigned char h[32];
  hmac_sha256(k_ip_, msg, h);
  return h[0] & 0x80;
}

std::string AnonMap::ip_bits(const std::string& domain, const std::string& a) {
  // Crypto-PAn (Xu, Fan, Ammar, Moon, 2002): output bit i is input bit i
  // flipped by f(first i input bits).  Two inputs that agree on their
  // first k bits get the same flips on those bits and so agree there too;
  // at the first bit where they differ, both get the same flip, so they
  // still differ: prefixes are kept exactly, and the map is 1:1.
  std::string out = a;
  const auto* in = reinterpret_cast<const unsigned char*>(a.data());
  unsigned n = static_cast<unsigned>(a.size() * 8);
  for (unsigned i = 0; i < n; ++i)
    if (prf_bit(domain, in, i)) out[i / 8] = static_cast<char>(out[i / 8] ^ (0x80 >> (i % 8)));
  return out;
}

std::string AnonMap::ip(const std::string& addr) {
  if (addr.size() != 4 && addr.size() != 16) return std::string(addr.size(), '\0');  // not an address: nothing kept
  if (addr.find_first_not_of('\0') == std::string::npos) return addr;  // INADDR_ANY, in6addr_any
  auto it = ips_.find(addr);
  if (it != ips_.end()) return it->second;
  std::string r;
  static const std::string kMapped("\0\0\0\0\0\0\0\0\0\0\xff\xff", 12);
  if (addr.size() == 16 && addr.compare(0, 12, kMapped) == 0)
    r = kMapped + ip(addr.substr(12));  // the same address as its v4 form gets
  else
    r = ip_bits(addr.size() == 4 ? "v4" : "v6", addr);
  ips_[addr] = r;
  char a[INET6_ADDRSTRLEN], b[INET6_ADDRSTRLEN];
  int fam = addr.size() == 4 ? AF_INET : AF_INET6;
  if (inet_ntop(fam, addr.data(), a, sizeof a) && inet_ntop(fam, r.data(), b, sizeof b)) table_["ip"][a] = b;
  return r;
}

uint32_t AnonMap::port(uint32_t p) {
  if (p == 0 || p > 65535) return p;
  if (perm_.empty()) {
    // A keyed shuffle of 1..65535 (Fisher-Yates over an HMAC counter stream).
    perm_.resize(65536);
    for (uint32_t i = 0; i < 65536; ++i) perm_[i] = static_cast<uint16_t>(i);
    unsigned char h[32];
    unsigned used = 32;
    uint64_t ctr = 0;
    for (uint32_t i = 65535; i > 1; --i) {
      if (used + 4 > 32) {
        hmac_sha256(k_port_, std::string(reinterpret_cast<const char*>(&ctr), sizeof ctr), h);
        ++ctr;
        used = 0;
      }
      uint32_t v;
      std::memcpy(&v, h + used, 4);
      used += 4;
      uint32_t j = 1 + v % i;  // in 1..i (a bias of at most 2^-16: harmless here)
      std::swap(perm_[i], perm_[j]);
    }
  }
  uint32_t r = perm_[p];
  table_["port"][std::to_string(p)] = std::to_string(r);
  return r;
}

std::string AnonMap::sock_addr(const std::string& s, bool addresses, bool ports) {
  if (s.empty()) return s;
  if (s[0] == '@') return "@" + path(s.substr(1));
  if (s[0] == '/') return path(s);
  // "a.b.c.d:port" or "[v6]:port"
  size_t colon = s.rfind(':');
  if (colon != std::string::npos) {
    std::string host = s.substr(0, colon), port_s = s.substr(colon + 1);
    bool v6 = host.size() >= 2 && host.front() == '[' && host.back() == ']';
    if (v6) host = host.substr(1, host.size() - 2);
    unsigned char buf[16];
    int fam = v6 ? AF_INET6 : AF_INET;
    char* end = nullptr;
    unsigned long pn = std::strtoul(port_s.c_str(), &end, 10);
    if (!port_s.empty() && end && *end == '\0' && pn <= 65535 && inet_pton(fam, host.c_str(), buf) == 1) {
      std::string a(reinterpret_cast<char*>(buf), v6 ? 16 : 4);
      if (addresses) a = ip(a);
      char t[INET6_ADDRSTRLEN];
      inet_ntop(fam, a.data(), t, sizeof t);
      uint32_t p = ports ? port(static_cast<uint32_t>(pn)) : static_cast<uint32_t>(pn);
      return (v6 ? "[" + std::string(t) + "]" : std::string(t)) + ":" + std::to_string(p);
    }
  }
  return word(s);  // a form this ck does not know: nothing of it kept
}

}  // namespace ck
