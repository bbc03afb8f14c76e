#include "ck64.h"

#include <algorithm>
#include <cstring>

namespace ck {
namespace {

constexpr uint64_t kM1 = 0x9E3779B185EBCA87ULL;
constexpr uint64_t kM2 = 0xC2B2AE3D27D4EB4FULL;
constexpr uint64_t kM3 = 0x165667B19E3779F9ULL;

inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
inline uint64_t load64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
inline uint64_t mix(uint64_t acc, uint64_t w) { return rotl(acc + w * kM2, 31) * kM1; }

}  // namespace

Ck64::Ck64() : lane_{kM1 + kM2, kM2, 0, 0 - kM1} {}

void Ck64::stripes(const unsigned char* p, size_t n) {
  uint64_t a = lane_[0], b = lane_[1], c = lane_[2], d = lane_[3];
  for (size_t i = 0; i < n; i += 32) {
    a = mix(a, load64(p + i));
    b = mix(b, load64(p + i + 8));
    c = mix(c, load64(p + i + 16));
    d = mix(d, load64(p + i + 24));
  }
  lane_[0] = a, lane_[1] = b, lane_[2] = c, lane_[3] = d;
}

void Ck64::update(const void* data, size_t len) {
  auto* p = static_cast<const unsigned char*>(data);
  total_ += len;
  if (tail_len_) {
    size_t take = std::min(len, 32 - tail_len_);
    std::memcpy(tail_ + tail_len_, p, take);
    tail_len_ += take;
    p += take;
    len -= take;
    if (tail_len_ < 32) return;
    stripes(tail_, 32);
    tail_len_ = 0;
  }
  size_t body = len & ~size_t{31};
  stripes(p, body);
  std::memcpy(tail_, p + body, len - body);
  tail_len_ = len - body;
}

uint64_t Ck64::digest() const {
  uint64_t h = rotl(lane_[0], 1) + rotl(lane_[1], 7) + rotl(lane_[2], 12) + rotl(lane_[3], 18);
  for (uint64_t l : lane_) h = (h ^ mix(0, l)) * kM1 + kM3;
  h += total_;
  size_t i = 0;
  for (; i + 8 <= tail_len_; i += 8) h = rotl(h ^ mix(0, load64(tail_ + i)), 27) * kM1 + kM3;
  for (; i < tail_len_; ++i) h = rotl(h ^ (tail_[i] * kM1), 11) * kM2;
  h ^= h >> 33;
  h *= kM2;
  h ^= h >> 29;
  h *= kM3;
  h ^= h >> 32;
  return h;
}

uint64_t ck64(const void* data, size_t len) {
  Ck64 c;
  c.update(data, len);
  return c.digest();
}

}  // namespace ck
