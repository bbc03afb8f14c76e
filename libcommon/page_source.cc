#include "page_source.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "error.h"

namespace ck {

bool ImageSource::next(pb::Frame* f) {
  if (!img_.next(f)) return false;
  if (f->has_pages() && f->pages().has_payload()) off_ = img_.payload_offset();
  return true;
}

void ImageSource::read_payload(void* dst, size_t len) {
  auto* p = static_cast<char*>(dst);
  while (len) {
    ssize_t n = ::pread(img_.pages_fd(), p, len, static_cast<off_t>(off_));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) bad_input("image pages.img is shorter than its index says");
    p += n, off_ += static_cast<uint64_t>(n), len -= static_cast<size_t>(n);
  }
}

const char* ImageSource::payload_in_place(size_t len) {
  int fd = img_.pages_fd();  // a parent's, for a run from an older round
  Mapped& m = maps_[fd];
  if (!m.base) {
    struct stat st;
    if (::fstat(fd, &st) != 0) throw_errno("unable to stat pages.img");
    m.size = static_cast<uint64_t>(st.st_size);
    if (!m.size) return nullptr;
    void* b = ::mmap(nullptr, m.size, PROT_READ, MAP_SHARED, fd, 0);
    if (b == MAP_FAILED) return nullptr;
    ::madvise(b, m.size, MADV_SEQUENTIAL);
    m.base = static_cast<const char*>(b);
  }
  if (off_ + len > m.size) bad_input("image pages.img is shorter than its index says");
  const char* p = m.base + off_;
  off_ += len;
  return p;
}

ImageSource::~ImageSource() {
  for (auto& [fd, m] : maps_)
    if (m.base) ::munmap(const_cast<char*>(m.base), m.size);
}

}  // namespace ck
