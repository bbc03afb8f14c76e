// The ck stream: magic, then length-prefixed protobuf frames, raw page
// payloads after PageRun frames, a trailer with counts and a checksum.
// See man/ck-stream.5.
//
// Format 1.3 (what every writer writes): a pre-dump round names itself and
// the round it was computed against in its header (Header.round).  1.2 is
// 1.1 with records that change what ck-restore does (FileDesc.external, the
// socket_* description, Process.cgroup_v1).  1.1 and later: each payload
// carries its own ck64 digest in its PageRun frame, and the trailer checksum
// covers everything but the payloads.  1.0 streams (no digests, payloads in
// the trailer sum) are still read and verified.
//
// Both ends keep memory bounded: frames are at most kMaxFrame bytes and page
// payloads move in caller-sized pieces, never whole.
#pragma once
#include <sys/uio.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "ck.pb.h"
#include "ck64.h"

namespace ck {

constexpr char kMagic[8] = {'\x89', 'C', 'K', 'S', 'T', 'R', 'M', '\n'};
constexpr uint32_t kMajor = 1;
constexpr uint32_t kMinor = 3;
constexpr uint32_t kMaxFrame = 16u << 20;
constexpr uint32_t kPageSize = 4096;
extern const char* const kVersion;  // "0.1"

// A header for a stream started by `tool` (kernel and host facts filled in).
pb::Header make_header(const std::string& tool);

// Whether a stream with this header is 1.1 or later: every payload run
// carries a digest, and the trailer checksum leaves payloads out.  (1.0:
// no digests, payloads in the trailer checksum.)
inline bool has_digests(const pb::Header& h) { return h.major() > 1 || (h.major() == 1 && h.minor() >= 1); }

// A page run as messages name it: "pid 123 at 0x7f0000000000 (16 pages)",
// or "pid 123, shared object 0x2a at offset 0x4000 (16 pages)".
std::string describe_run(const pb::PageRun& run);

// A read buffer in front of a byte source, shared by the stream reader and
// the image reader.  take() copies len bytes into dst from the buffer, then
// from read(into, max), which returns how many bytes it put there (0 at the
// end of the source) and throws on errors; reads of a buffer's size or more
// go straight into dst.  Returns the bytes copied (less than len only at
// the end of the source).
class ReadBuffer {
 public:
  explicit ReadBuffer(size_t cap) : buf_(cap) {}
  bool empty() const { return pos_ == end_; }
  void clear() { pos_ = end_ = 0; }
  template <class Read>
  size_t take(void* dst, size_t len, Read read) {
    auto* out = static_cast<char*>(dst);
    size_t got = 0;
    while (got < len) {
      if (pos_ < end_) {
        size_t n = std::min(len - got, end_ - pos_);
        std::memcpy(out + got, buf_.data() + pos_, n);
        pos_ += n;
        got += n;
        continue;
      }
      bool direct = len - got >= buf_.size();
      size_t n = direct ? read(out + got, len - got) : read(buf_.data(), buf_.size());
      if (n == 0) break;
      if (direct) {
        got += n;
      } else {
        pos_ = 0;
        end_ = n;
      }
    }
    return got;
  }

 private:
  std::vector<char> buf_;
  size_t pos_ = 0, end_ = 0;
};

// Sees every frame a reader returns, then the end of the stream once its
// trailer has been verified; either call may throw to stop the reader (the
// restorability check, restorable.h, is one).
class FrameInspector {
 public:
  virtual ~FrameInspector() = default;
  virtual void frame(const pb::Frame& f) = 0;
  virtual void end() = 0;
};

class StreamReader {
 public:
  // `what` names the input in messages ("stdin", "/tmp/img").
  explicit StreamReader(int fd, std::string what = "stdin");

  // Reads the header (first call) or the next frame into *f.  Returns false
  // once the trailer has been read and verified.  A payload not consumed by
  // the caller is skipped (and still verified).  Bad input throws Error
  // with status 3: a cut or unparsable stream, a checksum that does not
  // match, a 1.1 payload run without a digest.
  bool next(pb::Frame* f);

  const pb::Header& header();             // reads it if needed
  const std::string& raw() const { return raw_; }  // last frame, serialized
  uint64_t payload_left() const { return payload_left_; }
  // Reads `len` bytes of the current payload straight into dst.  The read
  // that takes its last byte checks the whole payload against the run's
  // digest (status 3 when it differs: the bytes already handed out were
  // bad, the caller must drop them).
  void read_payload(void* dst, size_t len);
  void skip_payload();
  // For a caller that checks every payload against its digest itself (a
  // page source, which must not trust a layer below it to): the reader
  // then does not hash payloads a second time.  Everything else (frames,
  // trailer, a 1.0 stream's payloads in its checksum) it still checks.
  void leave_digests_to_caller() { own_digests_ = false; }
  const pb::Trailer& trailer() const { return trailer_; }
  // Every frame next() returns goes through i first, and next() calls
  // i->end() before it returns false.  nullptr: none.
  void set_inspector(FrameInspector* i) { inspector_ = i; }

 private:
  size_t fill(void* dst, size_t len);  // from buffer then fd; exact or throws
  void readn(void* dst, size_t len, const char* where);
  [[noreturn]] void corrupt(const std::string& why);

  int fd_;
  std::string what_;
  ReadBuffer in_;
  std::string raw_;
  uint64_t payload_left_ = 0;
  uint64_t frames_ = 0;
  uint64_t payload_total_ = 0;
  uint64_t offset_ = 0;
  bool started_ = false, done_ = false;
  bool digests_ = false;  // 1.1: payloads checked against digests, not in sum_
  bool own_digests_ = true;
  pb::Header header_;
  pb::Trailer trailer_;
  Ck64 sum_;
  FrameInspector* inspector_ = nullptr;
  // The payload being read: its run and, when it has a digest, its sum so far.
  pb::PageRun run_;
  bool check_run_ = false;
  Ck64 run_sum_;
};

class StreamWriter {
 public:
  // Refuses (status 2) to write a binary stream to a terminal.
  explicit StreamWriter(int fd);
  ~StreamWriter();

  // The magic and the header frame.  Whatever version h names, the stream
  // is written as this ck's (kMajor.kMinor); only a newer major is kept as
  // it is (tests write such streams to see them refused).
  void header(const pb::Header& h);
  void frame(const pb::Frame& f);
  void raw_frame(const std::string& serialized);
  // A PageRun frame and its payload, gathered from iov (total must be
  // npages * page size when has_payload, nothing otherwise).  A run with
  // payload and no digest gets the ck64 of iov as its digest; one that has
  // a digest (forwarded, verified upstream) keeps it.  A zero run never
  // carries one.
  void pages(const pb::PageRun& run, const struct iovec* iov, int iovcnt);
  // A PageRun frame whose payload, npages * page size bytes, is moved from
  // pipe_fd (a pipe, filled by someone who computed the digest) to the
  // output with splice(2), or with read/write through the writer's buffer
  // where the output cannot take a splice (a file opened O_APPEND, ...).
  // The run must have has_payload and its digest (else an internal error,
  // status 1); the pipe ending before the payload does is status 1 too.
  void pages_spliced(const pb::PageRun& run, int pipe_fd);
  // A page run forwarded as it came: its serialized frame (digest
  // included), then exactly its payload through payload() calls before any
  // other frame.  run is that frame's PageRun; with has_payload it must have
  // a digest (internal error otherwise).
  void raw_pages(const std::string& serialized, const pb::PageRun& run);
  void payload(const void* p, size_t n);
  // Writes the trailer and flushes.  A writer destroyed without finish()
  // leaves a stream without trailer, which every reader refuses.
  void finish();
  uint64_t frames() const { return frames_; }
  uint64_t payload_bytes() const { return payload_; }

 private:
  void put(const void* p, size_t n, bool sum = true);
  void put_frame(const std::string& bytes);
  void pages_frame(const pb::PageRun& run);
  void flush();
  void no_payload_due() const;

  int fd_;
  std::vector<char> buf_;
  size_t len_ = 0;
  uint64_t frames_ = 0;
  uint64_t payload_ = 0;
  uint64_t payload_due_ = 0;  // bytes raw_pages() announced, not yet written
  bool finished_ = false;
  Ck64 sum_;
  std::string scratch_;
};

// Copies every frame of `r` except header and trailer to `w`, page payloads
// included (through a bounded buffer).  Calls keep(frame) for each first;
// if it returns false the frame is dropped.
template <class Keep>
void forward_frames(StreamReader& r, StreamWriter& w, Keep keep);
// Copies the payload of `run`, the PageRun of the frame r read last, with
// its frame.  A run with a digest goes on as it came (frame bytes and
// digest unchanged).  One without (a 1.0 input) is written as runs of at
// most 256 pages, each with the digest of its part: the frame goes before
// its payload, and a pipe cannot be read twice.
void copy_payload(StreamReader& r, StreamWriter& w, const pb::PageRun& run);

template <class Keep>
void forward_frames(StreamReader& r, StreamWriter& w, Keep keep) {
  pb::Frame f;
  while (r.next(&f)) {
    if (!keep(f)) continue;
    if (f.has_pages() && f.pages().has_payload())
      copy_payload(r, w, f.pages());
    else
      w.raw_frame(r.raw());
  }
}

}  // namespace ck
