// The image directory: put/get round trip, the ImageSet API that ck-restore
// uses (frames in order, payload offsets, pages_fd), and validation on open.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "error.h"
#include "fd.h"
#include "image.h"
#include "stream.h"
#include "test.h"

using namespace ck;

namespace {

struct TmpDir {
  std::string path;
  TmpDir() {
    char t[] = "/tmp/ck-image-test.XXXXXX";
    if (!mkdtemp(t)) abort();
    path = t;
  }
  ~TmpDir() { std::system(("rm -rf '" + path + "'").c_str()); }
};

// A stream in a memfd: header, a process, runs of 1..n pages filled with
// 'a'+i, a zero run in between each.
int make_stream(int runs) {
  int fd = memfd_create("stream", 0);
  StreamWriter w(fd);
  w.header(make_header("unit"));
  pb::Frame f;
  f.set_pid(7);
  f.mutable_process()->set_pid(7);
  w.frame(f);
  for (int i = 0; i < runs; ++i) {
    std::vector<char> page(kPageSize * (i + 1), static_cast<char>('a' + i));
    pb::PageRun r;
    r.set_pid(7);
    r.set_addr(0x100000 + i * 0x100000);
    r.set_npages(i + 1);
    r.set_has_payload(true);
    struct iovec iov = {page.data(), page.size()};
    w.pages(r, &iov, 1);
    r.set_addr(r.addr() + 0x80000);
    r.set_has_payload(false);
    w.pages(r, nullptr, 0);
  }
  w.finish();
  lseek(fd, 0, SEEK_SET);
  return fd;
}

std::string contents(int fd) {
  std::string s;
  char b[65536];
  lseek(fd, 0, SEEK_SET);
  for (;;) {
    ssize_t n = read(fd, b, sizeof b);
    if (n <= 0) break;
    s.append(b, n);
  }
  return s;
}

void put(int runs, const std::string& dir) {
  ScopedFd in(make_stream(runs));
  StreamReader r(in.get(), "memfd");
  stream_to_image(r, dir);
}

void write_file(const std::string& path, const std::string& data) {
  ScopedFd fd(open(path.c_str(), O_WRONLY | O_TRUNC));
  write_full(fd.get(), data.data(), data.size());
}

}  // namespace

TEST(get_gives_the_put_stream_back) {
  TmpDir d;
  ScopedFd in(make_stream(4));
  std::string a = contents(in.get());
  lseek(in.get(), 0, SEEK_SET);
  {
    StreamReader r(in.get(), "memfd");
    stream_to_image(r, d.path + "/img");
  }
  ScopedFd out(memfd_create("out", 0));
  image_to_stream(d.path + "/img", out.get());
  std::string b = contents(out.get());
  CHECK(a.size() > 4 * kPageSize);
  CHECK(a == b);
}

TEST(imageset_frames_and_payload_offsets) {
  TmpDir d;
  put(4, d.path);
  ImageSet im = ImageSet::open(d.path);
  pb::Frame f;
  CHECK(im.next(&f) && f.has_header());
  CHECK(im.next(&f) && f.has_process());
  uint64_t want_off = 0;
  int runs = 0;
  while (im.next(&f)) {
    CHECK(f.has_pages());
    if (!f.pages().has_payload()) continue;
    CHECK_EQ(im.payload_offset(), want_off);
    CHECK_EQ(im.payload_offset() % kPageSize, 0u);
    CHECK_EQ(im.payload_size(), uint64_t{f.pages().npages()} * kPageSize);
    // pread and mmap of pages_fd see the run's bytes
    char c = 0;
    CHECK_EQ(pread(im.pages_fd(), &c, 1, im.payload_offset() + im.payload_size() - 1), 1);
    CHECK_EQ(c, static_cast<char>('a' + runs));
    void* m = mmap(nullptr, im.payload_size(), PROT_READ, MAP_PRIVATE, im.pages_fd(), im.payload_offset());
    CHECK(m != MAP_FAILED);
    if (m != MAP_FAILED) {
      CHECK_EQ(static_cast<char*>(m)[0], static_cast<char>('a' + runs));
      munmap(m, im.payload_size());
    }
    want_off += im.payload_size();
    ++runs;
  }
  CHECK_EQ(runs, 4);
  CHECK_EQ(want_off, im.pages_size());
  CHECK_EQ(im.trailer().payload_bytes(), want_off);
  CHECK(!im.next(&f));
  im.rewind();
  CHECK(im.next(&f) && f.has_header());
  im.verify();
}

TEST(put_refuses_to_overwrite) {
  TmpDir d;
  put(1, d.path);
  CHECK_THROWS(put(1, d.path), kFail, "already holds an image");
}

TEST(open_validates) {
  TmpDir d;
  put(3, d.path);
  std::string man = read_file(d.path + "/manifest");
  // A run past the end of pages.img even with a manifest that agrees.
  CHECK_EQ(truncate((d.path + "/pages.img").c_str(), 4 * kPageSize), 0);
  std::string m2 = man;
  size_t p = m2.find("pages.img ");
  size_t e = m2.find('\n', p);
  m2.replace(p, e - p, "pages.img " + std::to_string(4 * kPageSize));
  write_file(d.path + "/manifest", m2);
  CHECK_THROWS(ImageSet::open(d.path), kBadInput, "lies past the end of pages.img");
  // Garbage in the manifest.
  write_file(d.path + "/manifest", man + "x");
  CHECK_THROWS(ImageSet::open(d.path), kBadInput, "manifest does not parse");
  // Symlinked member.
  TmpDir d2;
  put(1, d2.path);
  CHECK_EQ(rename((d2.path + "/frames.img").c_str(), (d2.path + "/f").c_str()), 0);
  CHECK_EQ(symlink((d2.path + "/f").c_str(), (d2.path + "/frames.img").c_str()), 0);
  CHECK_THROWS(ImageSet::open(d2.path), kBadInput, "symbolic link");
  // A FIFO must not hang open().
  TmpDir d3;
  put(1, d3.path);
  unlink((d3.path + "/pages.img").c_str());
  CHECK_EQ(mkfifo((d3.path + "/pages.img").c_str(), 0600), 0);
  CHECK_THROWS(ImageSet::open(d3.path), kBadInput, "not a regular file");
}

TEST(failed_put_leaves_nothing) {
  TmpDir d;
  ScopedFd in(make_stream(3));
  std::string s = contents(in.get());
  ScopedFd cut(memfd_create("cut", 0));
  write_full(cut.get(), s.data(), s.size() - 3);
  lseek(cut.get(), 0, SEEK_SET);
  StreamReader r(cut.get(), "cut");
  CHECK_THROWS(stream_to_image(r, d.path + "/img"), kBadInput, "truncated");
  struct stat st;
  CHECK(stat((d.path + "/img").c_str(), &st) != 0);
}

UNIT_MAIN()
