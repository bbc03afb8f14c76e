// ck-crit's logic as a library: a frame source over a stream or an image set,
// the subcommands, and run(), the one call tools/ck-crit/main.cc makes.
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

// One ck-crit invocation, as the command line names it.
struct Request {
  enum Command { kDecode, kEncode, kShow, kInfo, kSum, kKinds } command = kShow;
  std::string dir;  // empty: the stream on stdin
  uint32_t pid = 0;  // sum
  uint64_t addr = 0, len = 0;  // sum
  bool markdown = false;  // kinds
};
// Runs it; the exit status (errors throw as ck's tools do).
int run(const Request& r);

}  // namespace crit
