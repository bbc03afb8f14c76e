// ck64: the stream checksum (the trailer, the digest of each page payload,
// the image manifest; not a cryptographic hash).  Fed incrementally in pieces of any size; the digest
// depends only on the bytes, never on how they were cut.
//
// Design (ck64 v2).  The input is cut into 128-byte blocks, sixteen 64-bit
// little-endian words each; word j of every block goes to lane j.  Each lane
// keeps two sums modulo 2^64, updated per block with shifts and adds only:
//     a = 3a + w           b = 3b + rot32(w)
// (rot32 swaps the two 32-bit halves), so for a lane that saw w_0..w_{n-1}
//     a = 3^n a_0 + sum w_k 3^(n-1-k),  b likewise over rot32(w_k).
// What that guarantees about the 32 lane sums (the digest then mixes them,
// the length and the tail bytes through a multiply-xorshift finalizer, where
// two different states collide only by chance, about 2^-64):
//  - any change confined to one 8-byte word (a single bit flip, any number
//    of flips in one word) changes a: 3 is invertible modulo 2^64;
//  - two different words exchanged, in one lane d blocks apart, change a or
//    b unless d is a multiple of 2^31 (a stream over 256 GiB): a's change is
//    (w_i - w_j)(3^d - 1)3^e; 3^d - 1 has at most 2 + log2(d) factors of two
//    and one of w_i - w_j, rot32(w_i) - rot32(w_j) at most 31;
//  - words exchanged between lanes change both lanes' a;
//  - reordered blocks change the weights 3^e of everything moved: unlike a
//    Fletcher sum (which sees ABBA and BAAB as equal) no pattern of two
//    blocks goes unnoticed except by a 2^-64-like coincidence;
//  - the total length is part of the digest, so zeros added or removed are
//    seen too.
// The block loop is written with GCC vector extensions: SSE2 on baseline
// x86-64, and an AVX2 version picked at run time where the CPU has it.  On
// the development machine, cache-hot: about 50 GB/s with AVX2, 25 GB/s with
// SSE2 (tests/bench/ck64_bw), where memcpy streams at about 18.
#pragma once
#include <cstddef>
#include <cstdint>

namespace ck {

class Ck64 {
 public:
  static constexpr size_t kBlock = 128;
  static constexpr size_t kLanes = kBlock / 8;

  Ck64();
  void update(const void* data, size_t len);
  uint64_t digest() const;
  uint64_t length() const { return total_; }

  // The lane sums, for code that runs the block loop elsewhere (inside a
  // frozen target, over pages it hands on without ck seeing them) and gives
  // its state back.  state() copies the lanes out; from_state() builds the
  // hasher that was fed `total` bytes and has those lanes: total must be a
  // multiple of kBlock (the tail is empty).  The lanes are those of a Ck64
  // that started from its constructor's state, so
  //     Ck64::from_state(a, b, h.length()).digest() == h.digest()
  // for any h whose length() is a multiple of kBlock.
  static Ck64 from_state(const uint64_t a[kLanes], const uint64_t b[kLanes], uint64_t total);
  void state(uint64_t a[kLanes], uint64_t b[kLanes]) const;
  // Tests: use the portable (16-byte vector) block loop even where AVX2 is
  // there, or go back to the fastest.  Not thread-safe; the environment
  // variable CK64_NO_AVX2 does the same for a whole process.
  static void force_portable(bool on);

 private:
  void blocks(const unsigned char* p, size_t n);  // n is a multiple of kBlock
  alignas(32) uint64_t a_[kLanes];
  alignas(32) uint64_t b_[kLanes];
  unsigned char tail_[kBlock];
  size_t tail_len_ = 0;
  uint64_t total_ = 0;
};

uint64_t ck64(const void* data, size_t len);

}  // namespace ck
