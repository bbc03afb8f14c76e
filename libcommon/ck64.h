// ck64: the stream checksum.  A 4-lane multiply-rotate hash over 32-byte
// stripes (about memory speed), fed incrementally in pieces of any size.
#pragma once
#include <cstddef>
#include <cstdint>

namespace ck {

class Ck64 {
 public:
  Ck64();
  void update(const void* data, size_t len);
  uint64_t digest() const;
  uint64_t length() const { return total_; }

 private:
  void stripes(const unsigned char* p, size_t n);  // n is a multiple of 32
  uint64_t lane_[4];
  unsigned char tail_[32];
  size_t tail_len_ = 0;
  uint64_t total_ = 0;
};

uint64_t ck64(const void* data, size_t len);

}  // namespace ck
