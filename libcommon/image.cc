#include "image.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "error.h"
#include "log.h"
#include "vma.h"

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

// What a put killed by SIGKILL left: its temporaries, named .FILE.PID.tmp
// after one of the image's files and a pid that is gone.  A later put into
// the same directory removes them (a live pid's are another put's, left).
static void sweep_stale_temporaries(int dfd, const std::string& dir) {
  int fd = ::fcntl(dfd, F_DUPFD_CLOEXEC, 0);
  DIR* d = fd >= 0 ? ::fdopendir(fd) : nullptr;
  if (!d) {
    if (fd >= 0) ::close(fd);
    return;
  }
  const char* files[] = {kFramesFile, kPagesFile, kManifestFile, kParentFile};
  while (struct dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    for (const char* f : files) {
      std::string head = std::string(".") + f + ".";
      if (n.size() <= head.size() + 4 || n.compare(0, head.size(), head) != 0 || n.compare(n.size() - 4, 4, ".tmp") != 0)
        continue;
      std::string pid = n.substr(head.size(), n.size() - head.size() - 4);
      if (pid.empty() || pid.size() > 9 || pid.find_first_not_of("0123456789") != std::string::npos) continue;
      if (::kill(static_cast<pid_t>(std::atol(pid.c_str())), 0) == 0 || errno != ESRCH) continue;
      if (::unlinkat(dfd, n.c_str(), 0) == 0)
        LOG_INFO("removed '%s/%s', left by a put that was killed", dir.c_str(), n.c_str());
    }
  }
  ::closedir(d);
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

pb::Header stream_to_image(StreamReader& r, const std::string& dir, bool replace, const std::string& parent) {
  std::string parent_abs;
  uint32_t parent_root = 0;
  std::vector<pb::Header> parent_chain;
  if (!parent.empty()) {
    char* rp = ::realpath(parent.c_str(), nullptr);
    if (!rp) bad_input(strf("unable to open parent image '%s': %s", parent.c_str(), std::strerror(errno)));
    parent_abs = rp;
    std::free(rp);
    ImageSet pi = ImageSet::open(parent_abs);  // the whole chain, validated
    parent_root = pi.header().root_pid();
    for (size_t i = 0; i < pi.chain_length(); ++i) parent_chain.push_back(pi.chain_header(i));
  }
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
  sweep_stale_temporaries(d.get(), dir);

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
  pb::Header header;
  while (r.next(&f)) {
    if (f.has_header()) {
      header = f.header();
      if (!parent_abs.empty() && header.root_pid() != parent_root)
        bad_input(strf("the stream is of root pid %u, parent image '%s' of root pid %u", header.root_pid(),
                       parent.c_str(), parent_root));
      if (!parent_abs.empty())
        check_round_link("the stream", header, parent, parent_chain);
      else if (header.incremental())
        bad_input(names_round(header)
                      ? "the stream is " + round_name(header) +
                            strf(", computed against round %u: it holds only the pages written since, and is "
                                 "stored with --parent on the chain that holds round %u",
                                 header.round().base(), header.round().base())
                      : std::string("the stream is a pre-dump round (only the pages written since an earlier "
                                    "one): it is stored with --parent"));
    }
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

  std::string parent_tmp = std::string(".") + kParentFile + tag;
  if (!parent_abs.empty()) {
    char* here = ::realpath(dir.c_str(), nullptr);
    bool self = here && parent_abs == here;
    std::free(here);
    if (self) bad_input(strf("image '%s' cannot be its own parent", dir.c_str()));
    ScopedFd pf = files.create(parent_tmp);
    std::string line = parent_abs + "\n";
    write_full(pf.get(), line.data(), line.size());
    if (fsync(pf.get()) != 0) throw_errno("unable to sync image in " + quote(dir));
  }

  // Commit: the old manifest goes first so that no mix of files is an image.
  if (::unlinkat(d.get(), kManifestFile, 0) != 0 && errno != ENOENT)
    throw_errno(strf("unable to remove '%s/%s'", dir.c_str(), kManifestFile));
  if (::unlinkat(d.get(), kParentFile, 0) != 0 && errno != ENOENT)
    throw_errno(strf("unable to remove '%s/%s'", dir.c_str(), kParentFile));
  auto mv = [&](const std::string& from, const char* to) {
    if (::renameat(d.get(), from.c_str(), d.get(), to) != 0)
      throw_errno(strf("unable to rename '%s/%s'", dir.c_str(), from.c_str()));
  };
  if (!parent_abs.empty()) mv(parent_tmp, kParentFile);
  mv(pages_tmp, kPagesFile);
  mv(frames_tmp, kFramesFile);
  mv(manifest_tmp, kManifestFile);
  files.committed = true;
  fsync(d.get());
  LOG_INFO("stored %" PRIu64 " frames, %" PRIu64 " page bytes in '%s'", r.trailer().frames(), pages_size,
           dir.c_str());
  return header;
}

// ---- rounds and their links -------------------------------------------------

bool names_round(const pb::Header& h) {
  return h.has_round() && h.round().gen() != 0 && (h.major() > 1 || (h.major() == 1 && h.minor() >= 3));
}

std::string round_name(const pb::Header& h) {
  return strf("round %u of dump %016" PRIx64, h.round().gen(), h.round().dump());
}

std::string round_id(const pb::Header& h) {
  return strf("%016" PRIx64 ":%u", h.round().dump(), h.round().gen());
}

void check_round_link(const std::string& child, const pb::Header& h, const std::string& parent,
                      const std::vector<pb::Header>& chain) {
  if (!names_round(h)) {
    if (h.incremental())
      bad_input(child + " is a pre-dump round that names no round it was computed against (written before "
                        "format 1.3): its link to parent '" + parent + "' cannot be checked");
    bad_input(child + " is not a pre-dump round computed against another (not incremental): it has no place on "
                      "parent '" + parent + "'");
  }
  if (!h.incremental() || !h.round().base())
    bad_input(child + " is " + round_name(h) + ", a round of every page (not incremental): it has no place on "
                      "parent '" + parent + "'");
  const pb::Header& p = chain.front();
  if (!names_round(p))
    bad_input("parent image '" + parent + "' is not a pre-dump round of format 1.3 or later (it names no round): " +
              child + " cannot be checked against it");
  const std::string mine = child + " is " + round_name(h) + strf(", computed against round %u", h.round().base());
  if (p.round().dump() != h.round().dump())
    bad_input(mine + "; parent '" + parent + "' is " + round_name(p) + ", of another tracking");
  if (p.round().gen() >= h.round().gen())
    bad_input(mine + "; parent '" + parent + "' is " + round_name(p) + strf(", not older than round %u", h.round().gen()));
  std::string gens;
  for (const auto& c : chain) {
    if (names_round(c) && c.round().dump() == h.round().dump() && c.round().gen() == h.round().base()) return;
    gens += strf("%s%u", gens.empty() ? "" : ", ", names_round(c) ? c.round().gen() : 0);
  }
  bad_input(mine + "; parent '" + parent + "' is " + round_name(p) + strf(", and round %u is not in its chain (rounds %s)",
                                                                           h.round().base(), gens.c_str()));
}

// ---- ImageSet -------------------------------------------------------------

void ImageSet::corrupt(const std::string& why) const {
  bad_input(strf("image '%s' is corrupt: ", dir_.c_str()) + why);
}

ImageSet::~ImageSet() = default;

ImageSet ImageSet::open(const std::string& dir) {
  ImageSet im = open_one(dir);
  std::set<std::string> seen;
  {
    char* rp = ::realpath(dir.c_str(), nullptr);
    if (rp) seen.insert(rp);
    std::free(rp);
  }
  std::string cur = dir;
  for (;;) {
    ScopedFd d = open_dir(cur);
    ScopedFd pf(::openat(d.get(), kParentFile, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    if (!pf.valid()) {
      if (errno == ENOENT) break;
      if (errno == ELOOP) bad_input(strf("'%s/%s' is a symbolic link, refusing it", cur.c_str(), kParentFile));
      throw_errno(strf("unable to open '%s/%s'", cur.c_str(), kParentFile));
    }
    std::string line(4097, '\0');
    line.resize(read_full(pf.get(), line.data(), line.size()));
    if (line.size() < 2 || line.size() > 4096 || line.back() != '\n' || line[0] != '/' ||
        line.find('\0') != std::string::npos || line.find('\n') != line.size() - 1)
      bad_input(strf("'%s/%s' does not hold an absolute path", cur.c_str(), kParentFile));
    line.pop_back();
    if (!seen.insert(line).second) bad_input(strf("image chain of '%s' loops back to '%s'", dir.c_str(), line.c_str()));
    if (im.parents_.size() >= kMaxChain) bad_input(strf("image chain of '%s' is over %d images long", dir.c_str(), kMaxChain));
    auto p = std::make_unique<ImageSet>(open_one(line));
    // Index what this older round holds.
    Level lv;
    lv.incremental = p->header().incremental();
    pb::Frame f;
    while (p->next_own(&f)) {
      if (f.has_mm()) lv.has_mm.insert(f.mm().pid() ? f.mm().pid() : f.pid());
      if (f.has_pages() && f.pages().shmid() == 0 && f.pages().file() == 0) {
        const auto& r = f.pages();
        lv.runs[r.pid()].push_back({r.addr(), r.npages(), r.has_payload() ? p->payload_offset() : 0, r.round(),
                                    r.has_payload(), r.has_digest(), r.digest()});
      }
      if (f.has_note() && f.note().stage() == "ck-memread") {
        const std::string& t = f.note().text();
        unsigned pid = 0;
        int used = 0;
        if (std::sscanf(t.c_str(), "fresh %u%n", &pid, &used) == 1) {
          const char* q = t.c_str() + used;
          unsigned long long a, b;
          int n = 0;
          while (std::sscanf(q, " %llx-%llx%n", &a, &b, &n) == 2) {
            lv.fresh[pid].push_back({a, b});
            q += n;
          }
        }
      }
    }
    p->rewind();
    im.levels_.push_back(std::move(lv));
    im.parents_.push_back(std::move(p));
    cur = line;
  }
  // Every link of the chain: each round on rounds it was computed against.
  std::vector<pb::Header> chain;
  for (size_t i = 0; i < im.chain_length(); ++i) chain.push_back(im.chain_header(i));
  for (size_t i = 0; i < im.chain_length(); ++i) {
    const pb::Header& h = chain[i];
    const std::string name = "image '" + im.chain_dir(i) + "'";
    if (i + 1 < im.chain_length()) {
      check_round_link(name, h, im.chain_dir(i + 1), std::vector<pb::Header>(chain.begin() + i + 1, chain.end()));
    } else if (h.incremental()) {
      bad_input(names_round(h) ? name + " is " + round_name(h) +
                                     strf(", computed against round %u, and has no parent: it holds only the pages "
                                          "written since",
                                          h.round().base())
                               : name + " is a pre-dump round (only the pages written since an earlier one) with no "
                                        "parent");
    }
  }
  im.rewind();
  return im;
}

ImageSet ImageSet::open_one(const std::string& dir) {
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
  while (im.next_own(&f)) payload += im.payload_size() * (f.has_pages() && f.pages().has_payload());
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
  cur_fd_ = -1;
  cur_dir_ = nullptr;
  partials_.clear();
  have_look_ = look_ok_ = false;
  block_pid_ = 0;
  block_vmas_.clear();
  covered_.clear();
  pending_.clear();
  pending_level_.clear();
  pending_at_ = 0;
  in_.clear();
  off_ = 0;
  done_ = false;
  frames_read_ = 0;
  next_payload_ = 0;
  payload_off_ = payload_len_ = payload_left_ = 0;
  check_run_ = false;
  char magic[sizeof kMagic];
  fill(magic, sizeof magic, "the magic");
  if (std::memcmp(magic, kMagic, sizeof magic) != 0) corrupt(strf("%s has a bad magic", kFramesFile));
}

void ImageSet::fill(void* dst, size_t len, const char* where) {
  size_t got = in_.take(dst, len, [&](char* into, size_t max) {
    ssize_t n;
    do n = ::pread(frames_.get(), into, max, static_cast<off_t>(off_));
    while (n < 0 && errno == EINTR);
    if (n < 0) throw_errno(strf("unable to read '%s/%s'", dir_.c_str(), kFramesFile));
    off_ += static_cast<uint64_t>(n);
    return static_cast<size_t>(n);
  });
  if (got < len) corrupt(strf("%s is truncated in %s", kFramesFile, where));
}

bool ImageSet::read_frame(std::string* out) {
  if (in_.empty() && off_ >= frames_size_) return false;
  unsigned char lenb[4];
  fill(lenb, 4, "a frame length");
  uint32_t len = lenb[0] | lenb[1] << 8 | lenb[2] << 16 | static_cast<uint32_t>(lenb[3]) << 24;
  if (len > kMaxFrame) corrupt(strf("frame of %u bytes is over the %u limit", len, kMaxFrame));
  out->resize(len);
  fill(out->data(), len, "a frame");
  return true;
}

namespace {
void add_interval(std::map<uint64_t, uint64_t>& m, uint64_t lo, uint64_t hi) {
  if (lo >= hi) return;
  auto it = m.upper_bound(lo);
  if (it != m.begin()) {
    auto pv = std::prev(it);
    if (pv->second >= lo) {
      lo = pv->first;
      hi = std::max(hi, pv->second);
      it = m.erase(pv);
    }
  }
  while (it != m.end() && it->first <= hi) {
    hi = std::max(hi, it->second);
    it = m.erase(it);
  }
  m[lo] = hi;
}
// The parts of [lo, hi) outside every interval of m.
std::vector<std::pair<uint64_t, uint64_t>> subtract(const std::map<uint64_t, uint64_t>& m, uint64_t lo, uint64_t hi) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  auto it = m.upper_bound(lo);
  if (it != m.begin()) --it;
  uint64_t at = lo;
  for (; it != m.end() && it->first < hi && at < hi; ++it) {
    if (it->second <= at) continue;
    if (it->first > at) out.push_back({at, it->first});
    at = std::max(at, it->second);
  }
  if (at < hi) out.push_back({at, hi});
  return out;
}
}  // namespace

void ImageSet::end_block() {
  uint32_t pid = block_pid_;
  block_pid_ = 0;
  pending_.clear();
  pending_level_.clear();
  pending_at_ = 0;
  partials_.clear();
  std::map<uint64_t, uint64_t> allowed;
  for (const auto& v : block_vmas_)
    if (vma_has_private_pages(v)) add_interval(allowed, v.start(), v.end());
  for (size_t l = 0; l < levels_.size(); ++l) {
    Level& lv = levels_[l];
    if (!lv.has_mm.count(pid)) break;  // not this process (or not yet) in that round
    auto rit = lv.runs.find(pid);
    if (rit != lv.runs.end()) {
      for (const auto& r : rit->second) {
        uint64_t end = r.addr + r.npages * kPageSize;
        std::vector<std::pair<uint64_t, uint64_t>> parts;
        for (auto& [a0, a1] : allowed) {
          uint64_t lo = std::max(a0, r.addr), hi = std::min(a1, end);
          if (lo >= hi) continue;
          for (auto& pp : subtract(covered_, lo, hi)) parts.push_back(pp);
        }
        if (parts.empty()) continue;
        // A run that goes out whole keeps its stored digest.  One that goes
        // out in parts (a newer round replaced some of its pages) gets, per
        // part, the digest of that part, computed in one pass over the
        // whole stored run that also checks the stored digest: no byte of
        // it is used before the whole run is known to be what was stored.
        const bool whole = parts.size() == 1 && parts[0].first == r.addr && parts[0].second == end;
        int partial = -1;
        // (so is a whole run of a 1.0 round that goes out with a digest)
        if (r.payload && (!whole || (digests_ && !r.has_digest))) {
          Partial pt;
          pt.level = l;
          pt.stored.set_pid(pid);
          pt.stored.set_addr(r.addr);
          pt.stored.set_npages(static_cast<uint32_t>(r.npages));
          pt.stored.set_round(r.round);
          pt.off = r.off;
          pt.has_digest = r.has_digest;
          pt.digest = r.digest;
          for (auto& [p0, p1] : parts) pt.parts.push_back({p0 - r.addr, p1 - p0});
          partial = static_cast<int>(partials_.size());
          partials_.push_back(std::move(pt));
        }
        for (size_t k = 0; k < parts.size(); ++k) {
          auto [p0, p1] = parts[k];
          pb::Frame g;
          g.set_pid(pid);
          auto* pr = g.mutable_pages();
          pr->set_pid(pid);
          pr->set_addr(p0);
          pr->set_npages(static_cast<uint32_t>((p1 - p0) / kPageSize));
          pr->set_has_payload(r.payload);
          pr->set_round(r.round);
          if (r.payload && digests_ && whole && r.has_digest) pr->set_digest(r.digest);
          Saved sv{g.SerializeAsString(), r.payload ? r.off + (p0 - r.addr) : 0, r.payload ? p1 - p0 : 0,
                   r.payload ? p1 - p0 : 0, {}, partial, static_cast<int>(k)};
          if (r.payload) sv.run = *pr;
          pending_.push_back({std::move(g), std::move(sv)});
          pending_level_.push_back(l);
        }
      }
      for (const auto& r : rit->second) add_interval(covered_, r.addr, r.addr + r.npages * kPageSize);
    }
    auto fit = lv.fresh.find(pid);
    if (fit != lv.fresh.end())
      for (auto& [a, b] : fit->second) add_interval(covered_, a, b);
    if (!lv.incremental) break;  // a full round: nothing older counts
  }
  covered_.clear();
}

bool ImageSet::next(pb::Frame* f) {
  if (parents_.empty()) return next_own(f);
  for (;;) {
    if (pending_at_ < pending_.size()) {
      *f = pending_[pending_at_].first;
      Saved& sv = pending_[pending_at_].second;
      ImageSet& lvl = *parents_[pending_level_[pending_at_]];
      cur_fd_ = lvl.pages_.get();
      cur_dir_ = &lvl.dir_;
      if (sv.partial >= 0) {
        Partial& pt = partials_[static_cast<size_t>(sv.partial)];
        if (!pt.checked) check_partial(pt);
        if (digests_) {
          f->mutable_pages()->set_digest(pt.part_digests[static_cast<size_t>(sv.part)]);
          sv.run = f->pages();
          sv.raw = f->SerializeAsString();
        }
      }
      set_current(sv);
      ++pending_at_;
      return true;
    }
    if (!have_look_) {
      look_ok_ = next_own(&look_);
      look_saved_ = {raw_, payload_off_, payload_len_, payload_left_, run_, -1, 0};
      have_look_ = true;
    }
    if (block_pid_) {
      bool in_block = look_ok_ && ((look_.has_pages() && look_.pages().pid() == block_pid_) ||
                                   (look_.has_note() && look_.pid() == block_pid_));
      if (!in_block) {
        end_block();
        continue;
      }
    }
    have_look_ = false;
    cur_fd_ = -1;
    cur_dir_ = nullptr;  // (our own: a pointer to dir_ would not survive a move)
    set_current(look_saved_);
    if (!look_ok_) return false;
    *f = look_;
    if (f->has_header()) {
      // The chain reads as a whole image: the state as of its newest
      // round, computed against nothing.
      f->mutable_header()->set_incremental(false);
      if (f->header().has_round()) f->mutable_header()->mutable_round()->set_base(0);
      raw_ = f->SerializeAsString();
    } else if (f->has_mm()) {
      block_pid_ = f->mm().pid() ? f->mm().pid() : f->pid();
      block_vmas_.assign(f->mm().vmas().begin(), f->mm().vmas().end());
    } else if (block_pid_ && f->has_pages() && f->pages().shmid() == 0 && f->pages().file() == 0) {
      add_interval(covered_, f->pages().addr(), f->pages().addr() + uint64_t{f->pages().npages()} * kPageSize);
    } else if (block_pid_ && f->has_note() && f->note().stage() == "ck-memread") {
      const std::string& t = f->note().text();
      unsigned pid = 0;
      int used = 0;
      if (std::sscanf(t.c_str(), "fresh %u%n", &pid, &used) == 1 && pid == block_pid_) {
        const char* q = t.c_str() + used;
        unsigned long long a, b;
        int n = 0;
        while (std::sscanf(q, " %llx-%llx%n", &a, &b, &n) == 2) {
          add_interval(covered_, a, b);
          q += n;
        }
      }
    }
    return true;
  }
}

void ImageSet::set_current(const Saved& sv) {
  raw_ = sv.raw;
  payload_off_ = sv.off, payload_len_ = sv.len, payload_left_ = sv.left;
  run_ = sv.run;
  check_run_ = sv.left && sv.run.has_digest();
  run_sum_ = Ck64();
}

// One read of a stored run that is presented in parts: its bytes against
// the stored digest, and the digest of each part on the way (the parts are
// disjoint and in address order).  Status 3, naming the stored run and the
// image it is in, when the stored digest does not match.
void ImageSet::check_partial(Partial& pt) {
  ImageSet& lvl = *parents_[pt.level];
  const uint64_t len = uint64_t{pt.stored.npages()} * kPageSize;
  // A round whose runs have no digest (format 1.0): the whole image against
  // its trailer checksum first, once.
  if (!pt.has_digest && !lvl.checked_whole_) {
    lvl.verify();
    lvl.checked_whole_ = true;
  }
  if (dbuf_.empty()) dbuf_.resize(kChunk);
  Ck64 whole;
  std::vector<Ck64> part(pt.parts.size());
  size_t k = 0;
  for (uint64_t done = 0; done < len;) {
    size_t n = std::min<uint64_t>(dbuf_.size(), len - done);
    lvl.read_pages(dbuf_.data(), n, pt.off + done);
    whole.update(dbuf_.data(), n);
    for (size_t j = k; j < pt.parts.size(); ++j) {
      if (pt.parts[j].first >= done + n) break;
      uint64_t lo = std::max(pt.parts[j].first, done), hi = std::min(pt.parts[j].first + pt.parts[j].second, done + n);
      if (lo < hi) part[j].update(dbuf_.data() + (lo - done), hi - lo);
    }
    done += n;
    while (k < pt.parts.size() && pt.parts[k].first + pt.parts[k].second <= done) ++k;
  }
  if (pt.has_digest && whole.digest() != pt.digest)
    lvl.corrupt("page data of " + describe_run(pt.stored) + " does not match its digest (page data changed)");
  for (auto& h : part) pt.part_digests.push_back(h.digest());
  pt.checked = true;
}

bool ImageSet::next_own(pb::Frame* f) {
  if (done_) return false;
  payload_left_ = 0;
  check_run_ = false;
  run_.Clear();
  if (!read_frame(&raw_)) corrupt(strf("%s ends without a trailer", kFramesFile));
  f->Clear();
  if (!f->ParseFromString(raw_)) corrupt(strf("frame %" PRIu64 " does not parse", frames_read_));
  if (f->has_trailer()) {
    trailer_raw_ = raw_;
    trailer_ = f->trailer();
    done_ = true;
    if (!in_.empty() || off_ < frames_size_) corrupt(strf("%s has data after the trailer", kFramesFile));
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
    digests_ = has_digests(header_);
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
      if (digests_ && !p.has_digest()) corrupt("page run of " + describe_run(p) + " has no digest");
      uint64_t len = uint64_t{p.npages()} * kPageSize;
      if (next_payload_ + len > pages_size_)
        corrupt(strf("page run at %#" PRIx64 " lies past the end of %s", p.addr(), kPagesFile));
      payload_off_ = next_payload_;
      payload_len_ = payload_left_ = len;
      next_payload_ += len;
      run_ = p;
      check_run_ = p.has_digest();
      run_sum_ = Ck64();
    } else if (p.has_digest()) {
      corrupt("page run of " + describe_run(p) + " has a digest but no payload");
    }
  }
  return true;
}

void ImageSet::read_pages(void* dst, size_t len, uint64_t off) const {
  const std::string& dir = cur_dir_ ? *cur_dir_ : dir_;
  auto* out = static_cast<char*>(dst);
  size_t got = 0;
  while (got < len) {
    ssize_t n = ::pread(pages_fd(), out + got, len - got, static_cast<off_t>(off + got));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(strf("unable to read '%s/%s'", dir.c_str(), kPagesFile));
    }
    if (n == 0) bad_input(strf("image '%s' is corrupt: %s is truncated", dir.c_str(), kPagesFile));
    got += static_cast<size_t>(n);
  }
}

void ImageSet::read_payload(void* dst, size_t len) {
  if (len > payload_left_) fail("internal: payload read past its end");
  read_pages(dst, len, payload_off_ + (payload_len_ - payload_left_));
  payload_left_ -= len;
  if (!check_run_) return;
  run_sum_.update(dst, len);
  if (payload_left_ == 0) {
    check_run_ = false;
    if (run_sum_.digest() != run_.digest())
      bad_input(strf("image '%s' is corrupt: ", payload_dir().c_str()) + "page data of " + describe_run(run_) +
                " does not match its digest (page data changed)");
  }
}

void ImageSet::verify() {
  if (!parents_.empty()) {
    ImageSet own = open_one(dir_);
    own.verify();
    for (auto& p : parents_) p->verify();
    rewind();
    return;
  }
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
    while (payload_left_) {  // read_payload checks each against its digest
      if (b.empty()) b.resize(kChunk);
      size_t n = std::min<uint64_t>(payload_left_, b.size());
      read_payload(b.data(), n);
      if (!digests_) sum.update(b.data(), n);  // 1.0: payloads are in the checksum
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
  if (frames_ == 0) {  // the header: which checksum the trailer gets
    pb::Frame f;
    if (f.ParseFromString(raw) && f.has_header()) payload_in_sum_ = !has_digests(f.header());
  }
  std::string lenb;
  put_len(&lenb, static_cast<uint32_t>(raw.size()));
  put(lenb.data(), 4);
  put(raw.data(), raw.size());
  ++frames_;
}

void RawStreamOut::payload(const void* p, size_t n) {
  put(p, n, payload_in_sum_);
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
  if (im.chain_length() > 1) {  // a whole image read through the chain: a trailer of its own
    out.finish();
    return;
  }
  if (out.checksum() != im.trailer().checksum())
    bad_input(strf("image '%s' is corrupt: checksum mismatch (page or frame data changed)", dir.c_str()));
  out.finish_with(im.trailer_raw());
}

}  // namespace ck
