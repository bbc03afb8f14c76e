// Page sources: where a restore (and later ck-uffd-serve and ck-crit)
// takes frames and page payloads from, behind one interface: a stream on an
// fd, or an image set (a pre-dump chain included).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "ck.pb.h"
#include "image.h"
#include "stream.h"

namespace ck {

// Frames in stream order, and the payload of the last PageRun with one.
class Source {
 public:
  virtual ~Source() = default;
  virtual bool next(pb::Frame* f) = 0;
  virtual void read_payload(void* dst, size_t len) = 0;
  // The next `len` bytes of payload where they already are in memory (an
  // image's pages.img, mapped), consumed; nullptr when they must be read.
  virtual const char* payload_in_place(size_t len) { return nullptr; }
};

// A stream read from fd (named "stdin" in messages).
class StreamSource : public Source {
 public:
  explicit StreamSource(int fd) : r_(fd, "stdin") {}
  bool next(pb::Frame* f) override { return r_.next(f); }
  void read_payload(void* dst, size_t len) override { r_.read_payload(dst, len); }

 private:
  StreamReader r_;
};

// An image directory; payloads are mapped from pages.img (each round's own
// file for a chain) and handed out in place.
class ImageSource : public Source {
 public:
  explicit ImageSource(const std::string& dir) : img_(ImageSet::open(dir)) {}
  ~ImageSource() override;
  bool next(pb::Frame* f) override;
  void read_payload(void* dst, size_t len) override;
  const char* payload_in_place(size_t len) override;

 private:
  struct Mapped {
    const char* base = nullptr;
    uint64_t size = 0;
  };
  ImageSet img_;
  uint64_t off_ = 0;
  std::map<int, Mapped> maps_;
};

}  // namespace ck
