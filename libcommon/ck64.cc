#include "ck64.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "error.h"

namespace ck {
namespace {

constexpr uint64_t kK1 = 0x9E3779B185EBCA87ULL;
constexpr uint64_t kK2 = 0xC2B2AE3D27D4EB4FULL;
constexpr uint64_t kK3 = 0x165667B19E3779F9ULL;

// Lane j of the state is word j of every 128-byte block.  Two versions of
// the block loop compute exactly that: 16-byte vectors (SSE2 on baseline
// x86-64, NEON elsewhere) and, on x86-64 CPUs that have it, AVX2.  Macros
// rather than functions: no vector crosses a call (no ABI questions).
typedef uint64_t v2u __attribute__((vector_size(16)));
typedef uint32_t v4w __attribute__((vector_size(16)));
#define CK64_LOAD(v, p) std::memcpy(&(v), (p), sizeof(v))
// acc = 3 acc + w, without a multiply.
#define CK64_STEP(acc, w) ((acc) = (acc) + ((acc) << 1) + (w))
// Swaps the 32-bit halves of every 64-bit lane: a word shuffle, spelled
// the way each compiler knows it (clang builds the fuzz targets).
#if defined(__clang__)
#define CK64_SWAP_HALVES(V, W, w, ...) \
  reinterpret_cast<V>(__builtin_shufflevector(reinterpret_cast<W>(w), reinterpret_cast<W>(w), __VA_ARGS__))
#else
#define CK64_SWAP_HALVES(V, W, w, ...) reinterpret_cast<V>(__builtin_shuffle(reinterpret_cast<W>(w), W{__VA_ARGS__}))
#endif
#define CK64_ROT32_2(w) CK64_SWAP_HALVES(v2u, v4w, w, 1, 0, 3, 2)

// 16 accumulators do not fit in 16 registers with room to spare, so the a
// sums and then the b sums are taken over each 4 KiB piece (L1-hot).
void blocks_v2(uint64_t* a, uint64_t* b, const unsigned char* p, size_t n) {
  v2u A[8], B[8];
  std::memcpy(A, a, sizeof A);
  std::memcpy(B, b, sizeof B);
  for (const unsigned char* end = p + n; p < end;) {
    size_t m = std::min<size_t>(end - p, 4096);
    for (const unsigned char* q = p; q < p + m; q += Ck64::kBlock) {
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) {
        v2u w;
        CK64_LOAD(w, q + 16 * i);
        CK64_STEP(A[i], w);
      }
    }
    for (const unsigned char* q = p; q < p + m; q += Ck64::kBlock) {
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) {
        v2u w;
        CK64_LOAD(w, q + 16 * i);
        CK64_STEP(B[i], CK64_ROT32_2(w));
      }
    }
    p += m;
  }
  std::memcpy(a, A, sizeof A);
  std::memcpy(b, B, sizeof B);
}

#if defined(__x86_64__) && defined(__GNUC__)
#define CK64_HAVE_AVX2 1
typedef uint64_t v4u __attribute__((vector_size(32)));
typedef uint32_t v8w __attribute__((vector_size(32)));
#define CK64_ROT32_4(w) CK64_SWAP_HALVES(v4u, v8w, w, 1, 0, 3, 2, 5, 4, 7, 6)

__attribute__((target("avx2"))) void blocks_avx2(uint64_t* a, uint64_t* b, const unsigned char* p, size_t n) {
  v4u a0, a1, a2, a3, b0, b1, b2, b3;
  std::memcpy(&a0, a, 32), std::memcpy(&a1, a + 4, 32), std::memcpy(&a2, a + 8, 32), std::memcpy(&a3, a + 12, 32);
  std::memcpy(&b0, b, 32), std::memcpy(&b1, b + 4, 32), std::memcpy(&b2, b + 8, 32), std::memcpy(&b3, b + 12, 32);
  for (const unsigned char* end = p + n; p < end; p += Ck64::kBlock) {
    v4u w0, w1, w2, w3;
    CK64_LOAD(w0, p), CK64_LOAD(w1, p + 32), CK64_LOAD(w2, p + 64), CK64_LOAD(w3, p + 96);
    CK64_STEP(a0, w0), CK64_STEP(a1, w1), CK64_STEP(a2, w2), CK64_STEP(a3, w3);
    CK64_STEP(b0, CK64_ROT32_4(w0)), CK64_STEP(b1, CK64_ROT32_4(w1));
    CK64_STEP(b2, CK64_ROT32_4(w2)), CK64_STEP(b3, CK64_ROT32_4(w3));
  }
  std::memcpy(a, &a0, 32), std::memcpy(a + 4, &a1, 32), std::memcpy(a + 8, &a2, 32), std::memcpy(a + 12, &a3, 32);
  std::memcpy(b, &b0, 32), std::memcpy(b + 4, &b1, 32), std::memcpy(b + 8, &b2, 32), std::memcpy(b + 12, &b3, 32);
}
#endif

using BlocksFn = void (*)(uint64_t*, uint64_t*, const unsigned char*, size_t);

BlocksFn pick_blocks() {
#ifdef CK64_HAVE_AVX2
  if (!std::getenv("CK64_NO_AVX2") && __builtin_cpu_supports("avx2")) return blocks_avx2;
#endif
  return blocks_v2;
}

BlocksFn& blocks_fn() {
  static BlocksFn fn = pick_blocks();
  return fn;
}

// A bijective 64-bit mixer (xorshift-multiply).
inline uint64_t fmix(uint64_t x) {
  x ^= x >> 32;
  x *= kK1;
  x ^= x >> 29;
  x *= kK2;
  x ^= x >> 32;
  return x;
}

}  // namespace

Ck64::Ck64() {
  for (size_t i = 0; i < kLanes; ++i) {
    a_[i] = kK1 * (2 * i + 1);
    b_[i] = kK2 * (2 * i + 1);
  }
}

Ck64 Ck64::from_state(const uint64_t a[kLanes], const uint64_t b[kLanes], uint64_t total) {
  if (total % kBlock) fail(strf("internal: ck64 state after %llu bytes, not a whole number of blocks",
                                static_cast<unsigned long long>(total)));
  Ck64 c;
  std::memcpy(c.a_, a, sizeof c.a_);
  std::memcpy(c.b_, b, sizeof c.b_);
  c.total_ = total;
  return c;
}

void Ck64::state(uint64_t a[kLanes], uint64_t b[kLanes]) const {
  std::memcpy(a, a_, sizeof a_);
  std::memcpy(b, b_, sizeof b_);
}

void Ck64::blocks(const unsigned char* p, size_t n) {
  if (n) blocks_fn()(a_, b_, p, n);
}

void Ck64::update(const void* data, size_t len) {
  auto* p = static_cast<const unsigned char*>(data);
  total_ += len;
  if (tail_len_) {
    size_t take = std::min(len, kBlock - tail_len_);
    std::memcpy(tail_ + tail_len_, p, take);
    tail_len_ += take;
    p += take;
    len -= take;
    if (tail_len_ < kBlock) return;
    blocks(tail_, kBlock);
    tail_len_ = 0;
  }
  size_t body = len & ~(kBlock - 1);
  blocks(p, body);
  std::memcpy(tail_, p + body, len - body);
  tail_len_ = len - body;
}

uint64_t Ck64::digest() const {
  // Every lane sum, then the tail (zero-padded words) and the length, each
  // folded in through the mixer: h' = fmix(h + x) is a bijection of x for
  // any h, so one differing input word is never cancelled by itself.
  uint64_t h = kK3;
  for (size_t i = 0; i < kLanes; ++i) h = fmix(h + a_[i]) ^ kK1;
  for (size_t i = 0; i < kLanes; ++i) h = fmix(h + b_[i]) ^ kK2;
  for (size_t i = 0; i < tail_len_; i += 8) {
    uint64_t w = 0;
    std::memcpy(&w, tail_ + i, std::min<size_t>(8, tail_len_ - i));
    h = fmix(h + w) ^ kK3;
  }
  return fmix(h + total_);
}

void Ck64::force_portable(bool on) { blocks_fn() = on ? blocks_v2 : pick_blocks(); }

uint64_t ck64(const void* data, size_t len) {
  Ck64 c;
  c.update(data, len);
  return c.digest();
}

}  // namespace ck
