#include "image.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstring>

#include "error.h"
#include "log.h"

CK_LOG_MODULE("image");

namespace ck {
namespace {

constexpr size_t kChunk = 1 << 20;

std::string quote(const std::string& s) { return "'" + s + "'"; }

void put_len(std::string* out, uint32_t len) {
  unsigned char b[4] = {static_cast<unsigned char>(len), static_cast<unsigned char>(len >> 8),
                        static_cast<unsigned char>(len >> 16), static_cast<unsigned char>(len >> 24)};
  out->append(reinterpret_cast<char*>(b), 4);
}

std::string manifest_text(uint64_t frames_size, uint64_t frames_sum, uint64_t pages_size, uint64_t checksum) {
  return strf("ck-image %u\n%s %" PRIu64 " %#018" PRIx64 "\n%s %" PRIu64 "\nchecksum %#018" PRIx64 "\n",
              kImageVersion, kFramesFile, frames_size, frames_sum, kPagesFile, pages_size, checksum);
}

// Opens one of the image's fixed files inside dirfd: no symlinks, regular
// files only (a FIFO must not hang us).
ScopedFd open_member(int dirfd, const std::string& dir, const char* name) {
  ScopedFd fd(::openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ELOOP) bad_input(strf("'%s/%s' is a symbolic link, refusing it", dir.c_str(), name));
    if (errno == ENOENT) bad_input(strf("'%s' is not an image (no %s): %s", dir.c_str(), name, std::strerror(errno)));
    throw_errno(strf("unable to open '%s/%s'", dir.c_str(), name));
  }
  struct stat st;
  if (fstat(fd.get(), &st) != 0) throw_errno(strf("unable to stat '%s/%s'", dir.c_str(), name));
  if (!S_ISREG(st.st_mode)) bad_input(strf("'%s/%s' is not a regular file", dir.c_str(), name));
  int fl = fcntl(fd.get(), F_GETFL);
  if (fl >= 0) fcntl(fd.get(), F_SETFL, fl & ~O_NONBLOCK);
  return fd;
}

uint64_t file_size(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) throw_errno("unable to stat an image file");
  return static_cast<uint64_t>(st.st_size);
}

ScopedFd open_dir(const std::string& dir) {
  ScopedFd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!d.valid()) {
    if (errno == ENOENT || errno == ENOTDIR)
      bad_input(strf("unable to open image '%s': %s", dir.c_str(), std::strerror(errno)));
    throw_errno("unable to open image " + quote(dir));
  }
  return d;
}

// Temporary files of a put; removed unless committed.
struct PutFiles {
  ScopedFd dfd;  // destroyed after the unlinks below
  int dirfd = -1;
  std::string dir;
  std::vector<std::string> names;
  bool created_dir = false;
  bool committed = false;
  ~PutFiles() {
    if (committed) return;
    for (auto& n : names) ::unlinkat(dirfd, n.c_str(), 0);
    if (created_dir) ::rmdir(dir.c_str());
  }
  ScopedFd create(const std::string& name) {
    ::unlinkat(dirfd, name.c_str(), 0);  // a stale one of a killed put with our pid
    ScopedFd fd(::openat(dirfd, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd.valid()) throw_errno(strf("unable to create '%s/%s'", dir.c_str(), name.c_str()));
    names.push_back(name);
    return fd;
  }
};

// A bounded write buffer over an fd that also sums what goes through.
struct SumWriter {
  int fd;
  std::string buf;
  Ck64 sum;
  uint64_t total = 0;
  void put(const void* p, size_t n) {
    sum.update(p, n);
    total += n;
    buf.append(static_cast<const char*>(p), n);
    if (buf.size() >= kChunk) flush();
  }
  void flush() {
    write_full(fd, buf.data(), buf.size());
    buf.clear();
  }
};

}  // namespace

// ---- put ------------------------------------------------------------------

void stream_to_image(StreamReader& r, const std::string& dir, bool replace) {
  PutFiles files;
  files.dir = dir;
  if (::mkdir(dir.c_str(), 0700) == 0)
    files.created_dir = true;
  else if (errno != EEXIST)
    throw_errno("unable to create image directory " + quote(dir));
  files.dfd.reset(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!files.dfd.valid()) throw_errno("unable to open image directory " + quote(dir));
  const ScopedFd& d = files.dfd;
  files.dirfd = d.get();
  struct stat st;
  if (!replace && fstatat(d.get(), kManifestFile, &st, AT_SYMLINK_NOFOLLOW) == 0)
    fail(strf("'%s' already holds an image (--force replaces it)", dir.c_str()));

  std::string tag = strf(".%d.tmp", static_cast<int>(getpid()));
  std::string frames_tmp = std::string(".") + kFramesFile + tag;
  std::string pages_tmp = std::string(".") + kPagesFile + tag;
  std::string manifest_tmp = std::string(".") + kManifestFile + tag;
  ScopedFd ffd = files.create(frames_tmp);
  ScopedFd pfd = files.create(pages_tmp);

  SumWriter fw{ffd.get(), {}, {}, 0};
  fw.put(kMagic, sizeof kMagic);
  std::vector<char> chunk;
  uint64_t pages_size = 0;
  std::string lenb;
  pb::Frame f;
  while (r.next(&f)) {
    const std::string& raw = r.raw();
    lenb.clear();
    put_len(&lenb, static_cast<uint32_t>(raw.size()));
    fw.put(lenb.data(), 4);
    fw.put(raw.data(), raw.size());
    while (r.payload_left()) {
      if (chunk.empty()) chunk.resize(kChunk);
      size_t n = std::min<uint64_t>(r.payload_left(), chunk.size());
      r.read_payload(chunk.data(), n);
      write_full(pfd.get(), chunk.data(), n);
      pages_size += n;
    }
  }
  // The trailer has been read and verified; keep it as it came.
  const std::string& traw = r.raw();
  lenb.clear();
  put_len(&lenb, static_cast<uint32_t>(traw.size()));
  fw.put(lenb.data(), 4);
  fw.put(traw.data(), traw.size());
  fw.flush();
  if (fsync(ffd.get()) != 0 || fsync(pfd.get()) != 0) throw_errno("unable to sync image in " + quote(dir));

  ScopedFd mfd = files.create(manifest_tmp);
  std::string m = manifest_text(fw.total, fw.sum.digest(), pages_size, r.trailer().checksum());
  write_full(mfd.get(), m.data(), m.size());
  if (fsync(mfd.get()) != 0) throw_errno("unable to sync image in " + quote(dir));

  // Commit: the old manifest goes first so that no mix of files is an image.
  if (::unlinkat(d.get(), kManifestFile, 0) != 0 && errno != ENOENT)
    throw_errno(strf("unable to remove '%s/%s'", dir.c_str(), kManifestFile));
  auto mv = [&](const std::string& from, const char* to) {
    if (::renameat(d.get(), from.c_str(), d.get(), to) != 0)
      throw_errno(strf("unable to rename '%s/%s'", dir.c_str(), from.c_str()));
  };
  mv(pages_tmp, kPagesFile);
  mv(frames_tmp, kFramesFile);
  mv(manifest_tmp, kManifestFile);
  files.committed = true;
  fsync(d.get());
  LOG_INFO("stored %" PRIu64 " frames, %" PRIu64 " page bytes in '%s'", r.trailer().frames(), pages_size,
           dir.c_str());
}

// ---- ImageSet -------------------------------------------------------------

void ImageSet::corrupt(const std::string& why) const {
  bad_input(strf("image '%s' is corrupt: ", dir_.c_str()) + why);
}

ImageSet ImageSet::open(const std::string& dir) {
  ImageSet im;
  im.dir_ = dir;
  ScopedFd d = open_dir(dir);
  // The manifest.
  ScopedFd mfd = open_member(d.get(), dir, kManifestFile);
  std::string m(512, '\0');
  m.resize(read_full(mfd.get(), m.data(), m.size()));
  unsigned ver = 0;
  if (std::sscanf(m.c_str(), "ck-image %u\n", &ver) != 1) bad_input(strf("'%s' is not an image (bad manifest)", dir.c_str()));
  if (ver > kImageVersion)
    bad_input(strf("image '%s' has format version %u, newer than this ck reads (%u)", dir.c_str(), ver, kImageVersion));
  uint64_t fsize = 0, fsum = 0, psize = 0, csum = 0;
  if (std::sscanf(m.c_str(), "ck-image %u\nframes.img %" SCNu64 " %" SCNx64 "\npages.img %" SCNu64 "\nchecksum %" SCNx64,
                  &ver, &fsize, &fsum, &psize, &csum) != 5 ||
      m != manifest_text(fsize, fsum, psize, csum))
    im.corrupt("manifest does not parse");

  im.frames_ = open_member(d.get(), dir, kFramesFile);
  im.pages_ = open_member(d.get(), dir, kPagesFile);
  im.frames_size_ = file_size(im.frames_.get());
  im.pages_size_ = file_size(im.pages_.get());
  if (im.frames_size_ != fsize)
    im.corrupt(strf("%s is %" PRIu64 " bytes, manifest says %" PRIu64, kFramesFile, im.frames_size_, fsize));
  if (im.pages_size_ != psize)
    im.corrupt(strf("%s is %" PRIu64 " bytes, manifest says %" PRIu64, kPagesFile, im.pages_size_, psize));
  im.buf_.resize(256 << 10);

  // One pass over frames.img: its sum, and the structure of every frame.
  {
    Ck64 sum;
    std::vector<char> b(kChunk);
    uint64_t off = 0;
    while (off < im.frames_size_) {
      size_t n = std::min<uint64_t>(b.size(), im.frames_size_ - off);
      ssize_t got = ::pread(im.frames_.get(), b.data(), n, static_cast<off_t>(off));
      if (got < 0) throw_errno(strf("unable to read '%s/%s'", dir.c_str(), kFramesFile));
      if (got == 0) im.corrupt(strf("%s shrank while being read", kFramesFile));
      sum.update(b.data(), static_cast<size_t>(got));
      off += static_cast<uint64_t>(got);
    }
    if (sum.digest() != fsum) im.corrupt(strf("%s does not match its checksum", kFramesFile));
  }
  im.rewind();
  pb::Frame f;
  uint64_t payload = 0;
  while (im.next(&f)) payload += im.payload_size() * (f.has_pages() && f.pages().has_payload());
  if (im.trailer_raw_.empty()) im.corrupt("no trailer");
  if (im.trailer_.frames() != im.frames_read_)
    im.corrupt(strf("trailer counts %" PRIu64 " frames, %s holds %" PRIu64, im.trailer_.frames(), kFramesFile,
                    im.frames_read_));
  if (im.trailer_.payload_bytes() != payload || payload != im.pages_size_)
    im.corrupt(strf("trailer counts %" PRIu64 " page bytes, %s holds %" PRIu64, im.trailer_.payload_bytes(), kPagesFile,
                    im.pages_size_));
  if (im.trailer_.checksum() != csum) im.corrupt("trailer checksum differs from the manifest");
  im.rewind();
  return im;
}

void ImageSet::rewind() {
  pos_ = end_ = 0;
  off_ = 0;
  done_ = false;
  frames_read_ = 0;
  next_payload_ = 0;
  payload_off_ = payload_len_ = payload_left_ = 0;
  char magic[sizeof kMagic];
  fill(magic, sizeof magic, "the magic");
  if (std::memcmp(magic, kMagic, sizeof magic) != 0) corrupt(strf("%s has a bad magic", kFramesFile));
}

void ImageSet::fill(void* dst, size_t len, const char* where) {
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
    ssize_t n = ::pread(frames_.get(), buf_.data(), buf_.size(), static_cast<off_t>(off_));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(strf("unable to read '%s/%s'", dir_.c_str(), kFramesFile));
    }
    if (n == 0) corrupt(strf("%s is truncated in %s", kFramesFile, where));
    off_ += static_cast<uint64_t>(n);
    pos_ = 0;
    end_ = static_cast<size_t>(n);
  }
}

bool ImageSet::read_frame(std::string* out) {
  if (pos_ == end_ && off_ >= frames_size_) return false;
  unsigned char lenb[4];
  fill(lenb, 4, "a frame length");
  uint32_t len = lenb[0] | lenb[1] << 8 | lenb[2] << 16 | static_cast<uint32_t>(lenb[3]) << 24;
  if (len > kMaxFrame) corrupt(strf("frame of %u bytes is over the %u limit", len, kMaxFrame));
  out->resize(len);
  fill(out->data(), len, "a frame");
  return true;
}

bool ImageSet::next(pb::Frame* f) {
  if (done_) return false;
  payload_left_ = 0;
  if (!read_frame(&raw_)) corrupt(strf("%s ends without a trailer", kFramesFile));
  f->Clear();
  if (!f->ParseFromString(raw_)) corrupt(strf("frame %" PRIu64 " does not parse", frames_read_));
  if (f->has_trailer()) {
    trailer_raw_ = raw_;
    trailer_ = f->trailer();
    done_ = true;
    if (pos_ != end_ || off_ < frames_size_) corrupt(strf("%s has data after the trailer", kFramesFile));
    return false;
  }
  if (frames_read_ == 0) {
    if (!f->has_header()) corrupt("first frame is not a header");
    header_ = f->header();
    if (header_.major() > kMajor)
      bad_input(strf("image '%s': stream format version %u.%u is newer than this ck reads (%u.%u)", dir_.c_str(),
                     header_.major(), header_.minor(), kMajor, kMinor));
    if (header_.major() == 0) corrupt("header has no format version");
    if (header_.page_size() != kPageSize)
      bad_input(strf("image '%s': page size %u is not this machine's (%u)", dir_.c_str(), header_.page_size(), kPageSize));
  } else if (f->has_header()) {
    corrupt("a second header");
  }
  ++frames_read_;
  if (f->has_pages()) {
    const auto& p = f->pages();
    if (p.npages() == 0) corrupt("page run of zero pages");
    if (p.addr() % kPageSize) corrupt("page run address not page aligned");
    if (p.shmid() == 0 && p.addr() + uint64_t{p.npages()} * kPageSize < p.addr()) corrupt("page run wraps");
    if (p.has_payload()) {
      uint64_t len = uint64_t{p.npages()} * kPageSize;
      if (next_payload_ + len > pages_size_)
        corrupt(strf("page run at %#" PRIx64 " lies past the end of %s", p.addr(), kPagesFile));
      payload_off_ = next_payload_;
      payload_len_ = payload_left_ = len;
      next_payload_ += len;
    }
  }
  return true;
}

void ImageSet::read_pages(void* dst, size_t len, uint64_t off) const {
  auto* out = static_cast<char*>(dst);
  size_t got = 0;
  while (got < len) {
    ssize_t n = ::pread(pages_.get(), out + got, len - got, static_cast<off_t>(off + got));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(strf("unable to read '%s/%s'", dir_.c_str(), kPagesFile));
    }
    if (n == 0) corrupt(strf("%s is truncated", kPagesFile));
    got += static_cast<size_t>(n);
  }
}

void ImageSet::read_payload(void* dst, size_t len) {
  if (len > payload_left_) fail("internal: payload read past its end");
  read_pages(dst, len, payload_off_ + (payload_len_ - payload_left_));
  payload_left_ -= len;
}

void ImageSet::verify() {
  rewind();
  Ck64 sum;
  sum.update(kMagic, sizeof kMagic);
  std::vector<char> b;
  pb::Frame f;
  std::string lenb;
  while (next(&f)) {
    lenb.clear();
    put_len(&lenb, static_cast<uint32_t>(raw_.size()));
    sum.update(lenb.data(), 4);
    sum.update(raw_.data(), raw_.size());
    while (payload_left_) {
      if (b.empty()) b.resize(kChunk);
      size_t n = std::min<uint64_t>(payload_left_, b.size());
      read_payload(b.data(), n);
      sum.update(b.data(), n);
    }
  }
  if (sum.digest() != trailer_.checksum()) corrupt("checksum mismatch (page or frame data changed)");
  rewind();
}

// ---- get ------------------------------------------------------------------

RawStreamOut::RawStreamOut(int fd) : fd_(fd), buf_(256 << 10) {
  if (isatty(fd)) usage_error("refusing to write a binary stream to a terminal (redirect it or pipe it)");
}

void RawStreamOut::flush() {
  if (len_) write_full(fd_, buf_.data(), len_);
  len_ = 0;
}

void RawStreamOut::put(const void* p, size_t n, bool sum) {
  if (sum) sum_.update(p, n);
  if (len_ + n > buf_.size()) flush();
  if (n >= buf_.size()) {
    write_full(fd_, p, n);
    return;
  }
  std::memcpy(buf_.data() + len_, p, n);
  len_ += n;
}

void RawStreamOut::magic() { put(kMagic, sizeof kMagic); }

void RawStreamOut::frame(const std::string& raw) {
  if (raw.size() > kMaxFrame) bad_input(strf("frame of %zu bytes is over the %u limit", raw.size(), kMaxFrame));
  std::string lenb;
  put_len(&lenb, static_cast<uint32_t>(raw.size()));
  put(lenb.data(), 4);
  put(raw.data(), raw.size());
  ++frames_;
}

void RawStreamOut::payload(const void* p, size_t n) {
  put(p, n);
  payload_ += n;
}

void RawStreamOut::finish_with(const std::string& raw_trailer) {
  std::string lenb;
  put_len(&lenb, static_cast<uint32_t>(raw_trailer.size()));
  put(lenb.data(), 4, false);
  put(raw_trailer.data(), raw_trailer.size(), false);
  flush();
}

void RawStreamOut::finish() {
  pb::Frame f;
  auto* t = f.mutable_trailer();
  t->set_frames(frames_);
  t->set_payload_bytes(payload_);
  t->set_checksum(sum_.digest());
  finish_with(f.SerializeAsString());
}

void image_to_stream(const std::string& dir, int out_fd) {
  ImageSet im = ImageSet::open(dir);
  RawStreamOut out(out_fd);
  out.magic();
  pb::Frame f;
  std::vector<char> b;
  while (im.next(&f)) {
    out.frame(im.raw());
    while (im.payload_left()) {
      if (b.empty()) b.resize(kChunk);
      size_t n = std::min<uint64_t>(im.payload_left(), b.size());
      im.read_payload(b.data(), n);
      out.payload(b.data(), n);
    }
  }
  if (out.checksum() != im.trailer().checksum())
    bad_input(strf("image '%s' is corrupt: checksum mismatch (page or frame data changed)", dir.c_str()));
  out.finish_with(im.trailer_raw());
}

}  // namespace ck
