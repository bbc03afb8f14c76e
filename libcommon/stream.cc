#include "stream.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstring>

#include "error.h"
#include "fd.h"

namespace ck {

const char* const kVersion = "0.1";

pb::Header make_header(const std::string& tool) {
  pb::Header h;
  h.set_major(kMajor);
  h.set_minor(kMinor);
  h.add_writers(tool + " " + kVersion);
  struct utsname u;
  if (uname(&u) == 0) {
    h.set_kernel(u.release);
    h.set_machine(u.machine);
    h.set_hostname(u.nodename);
  }
  h.set_page_size(static_cast<uint32_t>(sysconf(_SC_PAGESIZE)));
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  h.set_created_ns(static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + ts.tv_nsec);
  return h;
}

std::string describe_run(const pb::PageRun& run) {
  if (run.shmid())
    return strf("pid %u, shared object %#" PRIx64 " at offset %#" PRIx64 " (%u pages)", run.pid(), run.shmid(),
                run.addr(), run.npages());
  return strf("pid %u at %#" PRIx64 " (%u pages)", run.pid(), run.addr(), run.npages());
}

namespace {

// A pipe between two stages moves a GiB in fewer, larger steps (fewer
// sleeps and wake-ups of both ends) when it holds 1 MiB instead of the
// default 64 KiB.  Either end may grow it; fs.pipe-max-size or the user's
// pipe page quota may refuse, and then it stays as it is.
void grow_pipe(int fd) {
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISFIFO(st.st_mode)) return;
  int cur = ::fcntl(fd, F_GETPIPE_SZ);
  if (cur < 0) return;
  for (int want = 1 << 20; want > cur; want /= 2)
    if (::fcntl(fd, F_SETPIPE_SZ, want) >= want) return;
}

}  // namespace

// ---- reader -------------------------------------------------------------

StreamReader::StreamReader(int fd, std::string what) : fd_(fd), what_(std::move(what)), in_(256 << 10) {
  grow_pipe(fd);
}

void StreamReader::corrupt(const std::string& why) {
  bad_input(strf("%s: bad stream at byte %llu: ", what_.c_str(), static_cast<unsigned long long>(offset_)) +
            why);
}

size_t StreamReader::fill(void* dst, size_t len) {
  return in_.take(dst, len, [&](char* into, size_t max) {
    ssize_t n;
    do n = ::read(fd_, into, max);
    while (n < 0 && errno == EINTR);
    if (n < 0) throw_errno(what_ + ": unable to read");
    return static_cast<size_t>(n);
  });
}

void StreamReader::readn(void* dst, size_t len, const char* where) {
  size_t got = fill(dst, len);
  offset_ += got;
  if (got != len) corrupt(strf("truncated in %s (wanted %zu more bytes, got %zu)", where, len, got));
}

const pb::Header& StreamReader::header() {
  if (started_) return header_;
  started_ = true;
  char magic[8];
  size_t got = fill(magic, sizeof magic);
  offset_ += got;
  if (got == 0) corrupt("empty input, not a ck stream");
  if (got != sizeof magic || std::memcmp(magic, kMagic, sizeof magic) != 0) corrupt("not a ck stream (bad magic)");
  sum_.update(magic, sizeof magic);
  pb::Frame f;
  if (!next(&f) || !f.has_header()) corrupt("first frame is not a header");
  header_ = f.header();
  if (header_.major() > kMajor)
    bad_input(strf("%s: stream format version %u.%u is newer than this ck reads (%u.%u)", what_.c_str(),
                   header_.major(), header_.minor(), kMajor, kMinor));
  if (header_.major() == 0) corrupt("header has no format version");
  if (header_.page_size() != kPageSize)
    bad_input(strf("%s: page size %u is not this machine's (%u)", what_.c_str(), header_.page_size(), kPageSize));
  digests_ = has_digests(header_);
  return header_;
}

bool StreamReader::next(pb::Frame* f) {
  if (!started_) {
    header();
    *f = pb::Frame();
    f->mutable_header()->CopyFrom(header_);  // (the inspector saw it as header() read it)
    return true;
  }
  if (done_) return false;
  if (payload_left_) skip_payload();
  unsigned char lenb[4];
  size_t got = fill(lenb, 4);
  offset_ += got;
  if (got != 4) corrupt(got == 0 ? "ends without a trailer (truncated)" : "truncated in a frame length");
  uint32_t len = lenb[0] | lenb[1] << 8 | lenb[2] << 16 | static_cast<uint32_t>(lenb[3]) << 24;
  if (len > kMaxFrame) corrupt(strf("frame of %u bytes is over the %u limit", len, kMaxFrame));
  uint64_t before = sum_.digest();
  raw_.resize(len);
  readn(raw_.data(), len, "a frame");
  f->Clear();
  if (!f->ParseFromString(raw_)) corrupt("frame does not parse");
  if (f->has_trailer()) {
    trailer_ = f->trailer();
    if (trailer_.frames() != frames_) corrupt(strf("trailer counts %llu frames, stream had %llu",
                                                   (unsigned long long)trailer_.frames(), (unsigned long long)frames_));
    if (trailer_.payload_bytes() != payload_total_) corrupt("trailer payload byte count does not match");
    if (trailer_.checksum() != before) corrupt("checksum mismatch (stream corrupted)");
    // Nothing may follow the trailer (two streams glued together are not one).
    char extra;
    if (fill(&extra, 1) != 0) corrupt("data after the trailer");
    done_ = true;
    if (inspector_) inspector_->end();
    return false;
  }
  sum_.update(lenb, 4);
  sum_.update(raw_.data(), len);
  ++frames_;
  if (f->has_header() && frames_ != 1) corrupt("a second header");
  if (f->has_pages()) {
    const auto& p = f->pages();
    if (p.npages() == 0) corrupt("page run of zero pages");
    if (p.addr() % kPageSize) corrupt("page run address not page aligned");
    if (p.shmid() == 0 && p.addr() + uint64_t{p.npages()} * kPageSize < p.addr()) corrupt("page run wraps");
    if (p.has_payload()) {
      // 1.1 requires the digest; a 1.0 stream has none, but one that is
      // there is checked all the same.
      if (digests_ && !p.has_digest()) corrupt("page run of " + describe_run(p) + " has no digest");
      payload_left_ = uint64_t{p.npages()} * kPageSize;
      run_ = p;
      check_run_ = p.has_digest() && own_digests_;
      run_sum_ = Ck64();
    } else if (p.has_digest()) {
      corrupt("page run of " + describe_run(p) + " has a digest but no payload");
    }
  }
  if (inspector_) inspector_->frame(*f);
  return true;
}

void StreamReader::read_payload(void* dst, size_t len) {
  if (len > payload_left_) fail("internal: payload read past its end");
  readn(dst, len, "page data");
  if (!digests_) sum_.update(dst, len);  // 1.0: payloads are in the trailer checksum
  if (check_run_) run_sum_.update(dst, len);
  payload_left_ -= len;
  payload_total_ += len;
  if (payload_left_ == 0 && check_run_) {
    check_run_ = false;
    if (run_sum_.digest() != run_.digest())
      corrupt("page data of " + describe_run(run_) + " does not match its digest (stream corrupted)");
  }
}

void StreamReader::skip_payload() {
  std::vector<char> tmp(std::min<uint64_t>(payload_left_, 1 << 20));
  while (payload_left_) {
    size_t n = std::min<uint64_t>(payload_left_, tmp.size());
    read_payload(tmp.data(), n);
  }
}

// ---- writer -------------------------------------------------------------

StreamWriter::StreamWriter(int fd) : fd_(fd), buf_(256 << 10) {
  if (isatty(fd)) usage_error("refusing to write a binary stream to a terminal (redirect it or pipe it)");
  grow_pipe(fd);
}

StreamWriter::~StreamWriter() {
  if (!finished_) try {
      flush();
    } catch (...) {
    }
}

void StreamWriter::flush() {
  if (len_) write_full(fd_, buf_.data(), len_);
  len_ = 0;
}

void StreamWriter::no_payload_due() const {
  if (payload_due_)
    fail(strf("internal: a forwarded page run is %" PRIu64 " bytes short of its payload", payload_due_));
}

void StreamWriter::put(const void* p, size_t n, bool sum) {
  if (sum) sum_.update(p, n);
  if (len_ + n > buf_.size()) flush();
  if (n >= buf_.size()) {
    write_full(fd_, p, n);
    return;
  }
  std::memcpy(buf_.data() + len_, p, n);
  len_ += n;
}

void StreamWriter::put_frame(const std::string& bytes) {
  no_payload_due();
  if (bytes.size() > kMaxFrame) fail(strf("internal: frame of %zu bytes is over the limit", bytes.size()));
  uint32_t len = static_cast<uint32_t>(bytes.size());
  unsigned char lenb[4] = {static_cast<unsigned char>(len), static_cast<unsigned char>(len >> 8),
                           static_cast<unsigned char>(len >> 16), static_cast<unsigned char>(len >> 24)};
  put(lenb, 4);
  put(bytes.data(), bytes.size());
  ++frames_;
}

void StreamWriter::header(const pb::Header& h) {
  put(kMagic, sizeof kMagic);
  pb::Frame f;
  *f.mutable_header() = h;
  if (h.major() <= kMajor) {  // an upstream 1.0 stream goes on as 1.1
    f.mutable_header()->set_major(kMajor);
    f.mutable_header()->set_minor(kMinor);
  }
  frame(f);
}

void StreamWriter::frame(const pb::Frame& f) {
  scratch_.clear();
  if (!f.SerializeToString(&scratch_)) fail("internal: unable to serialize a frame");
  put_frame(scratch_);
}

void StreamWriter::raw_frame(const std::string& serialized) { put_frame(serialized); }

void StreamWriter::pages_frame(const pb::PageRun& run) {
  pb::Frame f;
  f.set_pid(run.pid());
  *f.mutable_pages() = run;
  frame(f);
}

void StreamWriter::pages(const pb::PageRun& run, const struct iovec* iov, int iovcnt) {
  if (!run.has_payload()) {
    if (!run.has_digest()) {
      pages_frame(run);
    } else {
      pb::PageRun r = run;
      r.clear_digest();
      pages_frame(r);
    }
    return;
  }
  size_t total = 0;
  for (int i = 0; i < iovcnt; ++i) total += iov[i].iov_len;
  if (total != uint64_t{run.npages()} * kPageSize) fail("internal: page payload size does not match its run");
  if (run.has_digest()) {
    pages_frame(run);
  } else {
    Ck64 h;
    for (int i = 0; i < iovcnt; ++i) h.update(iov[i].iov_base, iov[i].iov_len);
    pb::PageRun r = run;
    r.set_digest(h.digest());
    pages_frame(r);
  }
  // One writev: buffered frames first, then the payload straight from the
  // caller.  The payload is not in the trailer checksum (its digest is).
  std::vector<struct iovec> v;
  v.reserve(iovcnt + 1);
  if (len_) v.push_back({buf_.data(), len_});
  for (int i = 0; i < iovcnt; ++i) v.push_back(iov[i]);
  size_t idx = 0;
  while (idx < v.size()) {
    ssize_t n = ::writev(fd_, v.data() + idx, static_cast<int>(std::min<size_t>(v.size() - idx, IOV_MAX)));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("unable to write");
    }
    size_t left = static_cast<size_t>(n);
    while (idx < v.size() && left >= v[idx].iov_len) left -= v[idx++].iov_len;
    if (idx < v.size()) {
      v[idx].iov_base = static_cast<char*>(v[idx].iov_base) + left;
      v[idx].iov_len -= left;
    }
  }
  len_ = 0;
  payload_ += total;
}

void StreamWriter::pages_spliced(const pb::PageRun& run, int pipe_fd) {
  if (!run.has_payload() || !run.has_digest())
    fail("internal: a spliced page run of " + describe_run(run) + " needs a payload and its digest");
  pages_frame(run);
  flush();
  const uint64_t total = uint64_t{run.npages()} * kPageSize;
  uint64_t left = total;
  // splice(2) wants a pipe on one side (pipe_fd is one) and an output that
  // supports it: pipes, sockets and most files do, but a file opened with
  // O_APPEND (or an fd of a kind without splice_write) gets EINVAL before
  // anything moves.  Then the bytes go through buf_, empty after flush().
  bool by_splice = true;
  while (left) {
    if (by_splice) {
      ssize_t n = ::splice(pipe_fd, nullptr, fd_, nullptr, std::min<uint64_t>(left, 1 << 30), SPLICE_F_MOVE);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EINVAL) {
          by_splice = false;
          continue;
        }
        throw_errno("unable to splice page data of " + describe_run(run));
      }
      if (n == 0) break;
      left -= static_cast<uint64_t>(n);
      continue;
    }
    ssize_t n = ::read(pipe_fd, buf_.data(), std::min<uint64_t>(left, buf_.size()));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("unable to read page data of " + describe_run(run) + " from its pipe");
    }
    if (n == 0) break;
    write_full(fd_, buf_.data(), static_cast<size_t>(n));
    left -= static_cast<uint64_t>(n);
  }
  if (left)
    fail(strf("page data of %s ended after %" PRIu64 " of %" PRIu64 " bytes", describe_run(run).c_str(), total - left,
              total));
  payload_ += total;
}

void StreamWriter::raw_pages(const std::string& serialized, const pb::PageRun& run) {
  if (run.has_payload() && !run.has_digest())
    fail("internal: page run of " + describe_run(run) + " forwarded without its digest");
  put_frame(serialized);
  if (run.has_payload()) payload_due_ = uint64_t{run.npages()} * kPageSize;
}

void StreamWriter::payload(const void* p, size_t n) {
  if (n > payload_due_) fail("internal: page payload written past its run");
  put(p, n, false);
  payload_due_ -= n;
  payload_ += n;
}

void StreamWriter::finish() {
  no_payload_due();
  pb::Frame f;
  auto* t = f.mutable_trailer();
  t->set_frames(frames_);
  t->set_payload_bytes(payload_);
  t->set_checksum(sum_.digest());
  std::string bytes;
  f.SerializeToString(&bytes);
  uint32_t len = static_cast<uint32_t>(bytes.size());
  unsigned char lenb[4] = {static_cast<unsigned char>(len), static_cast<unsigned char>(len >> 8),
                           static_cast<unsigned char>(len >> 16), static_cast<unsigned char>(len >> 24)};
  if (len_ + 4 + len > buf_.size()) flush();
  std::memcpy(buf_.data() + len_, lenb, 4);
  std::memcpy(buf_.data() + len_ + 4, bytes.data(), len);
  len_ += 4 + len;
  flush();
  finished_ = true;
}

void copy_payload(StreamReader& r, StreamWriter& w, const pb::PageRun& run) {
  // Bounded: at most 1 MiB in hand.
  constexpr uint32_t kChunkPages = 256;
  std::vector<char> buf(size_t{std::min(kChunkPages, run.npages())} * kPageSize);
  if (run.has_digest()) {
    // The reader checks the bytes against the digest as they go by; a
    // mismatch throws before the trailer, so the output is refused too.
    w.raw_pages(r.raw(), run);
    for (uint64_t left = uint64_t{run.npages()} * kPageSize; left;) {
      size_t n = std::min<uint64_t>(left, buf.size());
      r.read_payload(buf.data(), n);
      w.payload(buf.data(), n);
      left -= n;
    }
    return;
  }
  // A 1.0 run: the digest of each piece is known only once it is in hand,
  // so a long run is re-split into pieces that each carry their own.
  pb::PageRun piece = run;
  uint32_t done = 0;
  while (done < run.npages()) {
    uint32_t n = std::min(kChunkPages, run.npages() - done);
    r.read_payload(buf.data(), size_t{n} * kPageSize);
    piece.set_addr(run.addr() + uint64_t{done} * kPageSize);
    piece.set_npages(n);
    struct iovec iov = {buf.data(), size_t{n} * kPageSize};
    w.pages(piece, &iov, 1);
    done += n;
  }
}

}  // namespace ck
