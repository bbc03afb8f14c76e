// ck-crit internals: a frame source over a stream or an image set, and the
// subcommands.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "ck.pb.h"

namespace crit {

// Frames in stream order (header first, trailer not included) with their
// payloads, from stdin or from an image directory.
class Source {
 public:
  virtual ~Source() = default;
  virtual bool next(ck::pb::Frame* f) = 0;  // false after the trailer (verified)
  virtual const std::string& raw() const = 0;
  virtual uint64_t payload_left() const = 0;
  virtual void read_payload(void* dst, size_t len) = 0;
  virtual const ck::pb::Trailer& trailer() const = 0;
  // Checks the whole-stream checksum if not done on the way (images).
  virtual void verify() {}
};
// dir empty: the stream on stdin.
std::unique_ptr<Source> open_source(const std::string& dir);

std::string base64(const void* p, size_t n);
// Strict: padding, alphabet, length; false on bad input.
bool unbase64(const std::string& in, std::string* out);

int decode(Source& s);
int encode(int in_fd, int out_fd);
int show(Source& s);
int info(Source& s);
int sum(Source& s, uint32_t pid, uint64_t addr, uint64_t len);

}  // namespace crit
