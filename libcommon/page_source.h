// Page sources: where a restore (and later ck-uffd-serve and the store
// service) takes frames and page payloads from, behind one interface: a
// stream on an fd, or an image set (a pre-dump chain included).
//
// A source hands out no page byte that is not checked.  The only ways to a
// payload are payload() and payload_to(), and both belong to this base
// class: every byte a source produces goes through the run's digest here,
// whatever the source is, so a new one (the store service, a lazy page
// server) gets the check by construction and cannot skip it.  A source only
// implements frame() and bytes().
//
// Runs without a digest exist only in format 1.0, whose trailer checksum
// covers the payloads instead: a source of 1.0 data says so with
// whole_checked() and must have checked everything before next() returns
// false (a stream: its trailer) or before the first frame (an image: read
// whole when opened).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ck.pb.h"
#include "ck64.h"
#include "image.h"
#include "stream.h"

namespace ck {

class Source {
 public:
  virtual ~Source() = default;
  // Frames in stream order, header first; false after the last.  A payload
  // left unread is dropped (and was never handed out).
  bool next(pb::Frame* f);

  // Hands the payload of the PageRun that next() returned last to
  // place(off, p, n) in order, in pieces of at most kPiece bytes (off
  // counts from the run's first byte; p is valid during the call only).
  // Each piece is hashed just before it goes to place, while it is in the
  // cache anyway; after the last piece the sum is compared with the run's
  // digest, and a mismatch throws (status 3, the run named) before
  // payload() returns.  So place() may put the bytes where they are to go,
  // but nothing may use them before payload() has returned: ck-restore's
  // tasks run only once the whole restore is done.
  using Place = std::function<void(uint64_t off, const char* p, size_t n)>;
  // Small enough that a piece the hash pulled in from the page cache is
  // still in L2 when UFFDIO_COPY reads it (1 MiB pieces cost twice as much
  // CPU over the copy alone), big enough that the ioctls stay few.
  static constexpr size_t kPiece = 256 << 10;
  void payload(const Place& place);
  // The whole payload into dst (npages * page size bytes), checked before
  // it returns: for a placement that a running process sees at once (a
  // lazy restore), or memory that is read before the restore ends.
  void payload_to(char* dst);

  // Random access, for a server that places first the run a fault asks for
  // (ck-uffd-serve): every page run with payload, private memory only (no
  // shared object, no file), found without reading page data.  A source
  // that cannot (a stream) returns false; one that can is read to its end.
  struct RunAt {
    pb::PageRun run;
    int fd = -1;       // the pages file that holds the payload
    uint64_t off = 0;  // where in it
    std::string dir;   // the image that file belongs to (for messages)
  };
  virtual bool index_runs(std::vector<RunAt>* out) { return false; }
  // The payload of one of them into dst, checked against its digest first
  // (status 3 when it differs), as payload_to().
  void payload_at(const RunAt& r, char* dst);

 protected:
  // The next frame, false after the last.
  virtual bool frame(pb::Frame* f) = 0;
  // The next n bytes of the current payload, raw: either in place (a
  // pointer valid until the next call) or read into dst (then dst).
  virtual const char* bytes(char* dst, size_t n) = 0;
  // Payloads without digest (format 1.0) are checked by the source as a
  // whole (see above).
  virtual bool whole_checked() const = 0;
  // What a message about bad page data starts with ("stdin: bad stream: ",
  // "image 'DIR' is corrupt: ").
  virtual std::string corrupt_prefix() const = 0;
  // n raw bytes at off of pages file fd (a source that indexes its runs).
  virtual const char* bytes_at(int fd, uint64_t off, char* dst, size_t n, const std::string& dir) {
    return nullptr;
  }

 private:
  void begin_payload();
  void end_payload();
  // Status 3 for a run without digest that nothing else checks, and for a
  // payload whose sum is not the run's digest.
  void need_digest(const pb::PageRun& run) const;
  void match_digest(const pb::PageRun& run, uint64_t sum) const;
  pb::PageRun run_;
  uint64_t left_ = 0;  // bytes of the current payload not handed out
  Ck64 sum_;
  std::vector<char> buf_;
};

// A stream read from fd (named so in messages).  Payloads come through
// one buffer of kPiece bytes; the stream's own reader checks structure and
// trailer, this class the digests.
class StreamSource : public Source {
 public:
  explicit StreamSource(int fd, std::string name = "stdin");

 protected:
  bool frame(pb::Frame* f) override;
  const char* bytes(char* dst, size_t n) override;
  bool whole_checked() const override { return true; }  // 1.0: the trailer sum takes payloads in
  std::string corrupt_prefix() const override { return name_ + ": bad stream: "; }

 private:
  std::string name_;
  StreamReader r_;
};

// An image directory; payloads are mapped from pages.img (each round's own
// file for a chain) and handed out in place.  A 1.0 image is checked whole
// when it is opened (its payloads have no digests of their own).
class ImageSource : public Source {
 public:
  explicit ImageSource(const std::string& dir);
  ~ImageSource() override;

 protected:
  bool frame(pb::Frame* f) override;
  const char* bytes(char* dst, size_t n) override;
  bool whole_checked() const override { return checked_; }
  std::string corrupt_prefix() const override;
  bool index_runs(std::vector<RunAt>* out) override;
  const char* bytes_at(int fd, uint64_t off, char* dst, size_t n, const std::string& dir) override;

 private:
  struct Mapped {
    const char* base = nullptr;
    uint64_t size = 0;
    bool failed = false;
  };
  const char* mapped(int fd, uint64_t off, size_t n, const std::string& dir);
  ImageSet img_;
  bool checked_ = false;
  uint64_t off_ = 0;  // in the current pages.img
  std::map<int, Mapped> maps_;
};

}  // namespace ck
