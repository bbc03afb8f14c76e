#include "page_source.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "error.h"

namespace ck {

// ---- the check, for every source ---------------------------------------------

bool Source::next(pb::Frame* f) {
  left_ = 0;
  if (!frame(f)) return false;
  if (f->has_pages() && f->pages().has_payload()) {
    run_ = f->pages();
    left_ = uint64_t{run_.npages()} * kPageSize;
  }
  return true;
}

void Source::begin_payload() {
  if (!left_ || left_ != uint64_t{run_.npages()} * kPageSize)
    fail("internal: a page payload read twice, or without its run");
  need_digest(run_);
  sum_ = Ck64();
  if (buf_.empty()) buf_.resize(kPiece);
}

void Source::end_payload() { match_digest(run_, sum_.digest()); }

// Both readers refuse a 1.1 run without digest; one here is 1.0 data.
void Source::need_digest(const pb::PageRun& run) const {
  if (!run.has_digest() && !whole_checked())
    bad_input(corrupt_prefix() + "page run of " + describe_run(run) + " has no digest, and nothing else checks it");
}

void Source::match_digest(const pb::PageRun& run, uint64_t sum) const {
  if (run.has_digest() && sum != run.digest())
    bad_input(corrupt_prefix() + "page data of " + describe_run(run) + " does not match its digest");
}

void Source::payload(const Place& place) {
  begin_payload();
  for (uint64_t off = 0; left_;) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(left_, kPiece));
    const char* p = bytes(buf_.data(), n);
    sum_.update(p, n);
    left_ -= n;
    place(off, p, n);
    off += n;
  }
  end_payload();
}

void Source::payload_to(char* dst) {
  begin_payload();
  for (uint64_t off = 0; left_;) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(left_, kPiece));
    const char* p = bytes(dst + off, n);
    if (p != dst + off) std::memcpy(dst + off, p, n);
    sum_.update(dst + off, n);
    left_ -= n;
    off += n;
  }
  end_payload();
}

void Source::payload_at(const RunAt& r, char* dst) {
  need_digest(r.run);
  uint64_t len = uint64_t{r.run.npages()} * kPageSize;
  Ck64 sum;
  for (uint64_t off = 0; off < len;) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(len - off, kPiece));
    const char* p = bytes_at(r.fd, r.off + off, dst + off, n, r.dir);
    if (!p) fail("internal: payload_at on a source that does not index its runs");
    if (p != dst + off) std::memcpy(dst + off, p, n);
    sum.update(dst + off, n);
    off += n;
  }
  match_digest(r.run, sum.digest());
}

// ---- a stream -------------------------------------------------------------

StreamSource::StreamSource(int fd, std::string name) : name_(std::move(name)), r_(fd, name_) {
  r_.leave_digests_to_caller();
}

bool StreamSource::frame(pb::Frame* f) {
  if (!r_.next(f)) return false;
  if (f->has_header() && f->header().incremental())
    bad_input(name_ + ": the stream is " +
              (names_round(f->header()) ? round_name(f->header()) + strf(", computed against round %u",
                                                                          f->header().round().base())
                                        : std::string("a pre-dump round")) +
              ": it holds only the pages written since; restore it through its chain of images (ck-store put "
              "--parent, then ck-restore -D)");
  return true;
}

const char* StreamSource::bytes(char* dst, size_t n) {
  r_.read_payload(dst, n);
  return dst;
}

// ---- an image set ----------------------------------------------------------

ImageSource::ImageSource(const std::string& dir) : img_(ImageSet::open(dir)) {
  if (!has_digests(img_.header())) {
    img_.verify();  // 1.0: no digest per run, one checksum over it all
    checked_ = true;
  }
}

bool ImageSource::frame(pb::Frame* f) {
  if (!img_.next(f)) return false;
  if (f->has_pages() && f->pages().has_payload()) off_ = img_.payload_offset();
  return true;
}

std::string ImageSource::corrupt_prefix() const {
  return "image '" + img_.payload_dir() + "' is corrupt: ";
}

// pages.img mapped whole, once per file (a chain has one per round): pages
// go from the page cache straight into the target, no read into a buffer.
const char* ImageSource::mapped(int fd, uint64_t off, size_t n, const std::string& dir) {
  Mapped& m = maps_[fd];
  if (!m.base && !m.failed) {
    struct stat st;
    if (::fstat(fd, &st) != 0) throw_errno("unable to stat pages.img");
    m.size = static_cast<uint64_t>(st.st_size);
    void* b = m.size ? ::mmap(nullptr, m.size, PROT_READ, MAP_SHARED, fd, 0) : MAP_FAILED;
    if (b == MAP_FAILED) {
      m.failed = true;
      return nullptr;
    }
    ::madvise(b, m.size, MADV_SEQUENTIAL);
    m.base = static_cast<const char*>(b);
  }
  if (!m.base) return nullptr;
  if (off + n > m.size) bad_input("image '" + dir + "' is corrupt: pages.img is shorter than its index says");
  return m.base + off;
}

const char* ImageSource::bytes_at(int fd, uint64_t off, char* dst, size_t n, const std::string& dir) {
  if (const char* p = mapped(fd, off, n, dir)) return p;
  for (size_t got = 0; got < n;) {
    ssize_t r = ::pread(fd, dst + got, n - got, static_cast<off_t>(off + got));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throw_errno("unable to read '" + dir + "/pages.img'");
    if (r == 0) bad_input("image '" + dir + "' is corrupt: pages.img is shorter than its index says");
    got += static_cast<size_t>(r);
  }
  return dst;
}

// The current run's file: a parent's, for a run of an older round.
const char* ImageSource::bytes(char* dst, size_t n) {
  const char* p = bytes_at(img_.pages_fd(), off_, dst, n, img_.payload_dir());
  off_ += n;
  return p;
}

bool ImageSource::index_runs(std::vector<RunAt>* out) {
  pb::Frame f;
  while (frame(&f)) {
    if (!f.has_pages() || !f.pages().has_payload() || f.pages().file() || f.pages().shmid()) continue;
    RunAt r;
    r.run = f.pages();
    r.fd = img_.pages_fd();
    r.off = img_.payload_offset();
    r.dir = img_.payload_dir();
    out->push_back(std::move(r));
  }
  return true;
}

ImageSource::~ImageSource() {
  for (auto& [fd, m] : maps_)
    if (m.base) ::munmap(const_cast<char*>(m.base), m.size);
}

}  // namespace ck
