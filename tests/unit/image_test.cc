// The image directory: put/get round trip, the ImageSet API that ck-restore
// uses (frames in order, payload offsets, pages_fd), and validation on open.
// Format 1.1 (payload digests) and 1.0 images, chains of 1.3 pre-dump rounds
// where runs of older rounds are presented in part, the links of a chain
// (refused where they do not match, at put and at open), and the page
// source that ck-restore places pages from (every byte checked).
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "ck64.h"
#include "error.h"
#include "fd.h"
#include "image.h"
#include "page_source.h"
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
  ScopedFd fd(open(path.c_str(), O_WRONLY | O_TRUNC | O_CREAT, 0600));
  write_full(fd.get(), data.data(), data.size());
}

// One pre-dump round of pid 7 as a writer of format 1.minor would write it:
// a layout [0x100000, 0x400000) and runs of pages whose bytes are
// fill + page number (so that parts of a run differ from the whole).
struct Spec {
  uint64_t addr;
  uint32_t npages;
  char fill;
};

std::string run_bytes(const Spec& r) {
  std::string d(size_t{r.npages} * kPageSize, '\0');
  for (size_t i = 0; i < d.size(); ++i) d[i] = static_cast<char>(r.fill + i / kPageSize + (i % 7));
  return d;
}

constexpr uint64_t kDump = 0xd0d0000000000001ull;

// round: 0 for a stream that is no round; else (minor 3 or later) it names
// itself round `round` of dump, computed against base (default: the round
// before it if incremental, none if not).
int round_stream(uint32_t minor, bool incremental, uint32_t round, const std::vector<Spec>& runs,
                 uint64_t dump = kDump, int base = -1) {
  int fd = memfd_create("round", 0);
  RawStreamOut out(fd);
  out.magic();
  pb::Frame f;
  *f.mutable_header() = make_header("unit");
  f.mutable_header()->set_minor(minor);
  f.mutable_header()->set_root_pid(7);
  f.mutable_header()->set_incremental(incremental);
  if (minor >= 3 && round) {
    auto* r = f.mutable_header()->mutable_round();
    r->set_dump(dump);
    r->set_gen(round);
    r->set_base(base >= 0 ? static_cast<uint32_t>(base) : incremental ? round - 1 : 0);
  }
  out.frame(f.SerializeAsString());
  f.Clear();
  f.set_pid(7);
  f.mutable_process()->set_pid(7);
  out.frame(f.SerializeAsString());
  f.Clear();
  f.set_pid(7);
  f.mutable_mm()->set_pid(7);
  auto* v = f.mutable_mm()->add_vmas();
  v->set_start(0x100000);
  v->set_end(0x400000);
  v->set_prot(3);
  v->set_flags(MAP_PRIVATE);
  v->set_kind(pb::VMA_ANON);
  out.frame(f.SerializeAsString());
  for (const Spec& r : runs) {
    std::string d = run_bytes(r);
    f.Clear();
    f.set_pid(7);
    auto* p = f.mutable_pages();
    p->set_pid(7);
    p->set_addr(r.addr);
    p->set_npages(r.npages);
    p->set_has_payload(true);
    p->set_round(round);
    if (minor >= 1) p->set_digest(ck64(d.data(), d.size()));
    out.frame(f.SerializeAsString());
    out.payload(d.data(), d.size());
  }
  out.finish();
  lseek(fd, 0, SEEK_SET);
  return fd;
}

void put_fd(int fd, const std::string& dir, const std::string& parent = "") {
  ScopedFd in(fd);
  StreamReader r(in.get(), "memfd");
  stream_to_image(r, dir, false, parent);
}

void flip_byte(const std::string& path, uint64_t off) {
  ScopedFd fd(open(path.c_str(), O_RDWR));
  char c = 0;
  if (pread(fd.get(), &c, 1, off) != 1) abort();
  c ^= 0x20;
  if (pwrite(fd.get(), &c, 1, off) != 1) abort();
}

// The stream image_to_stream writes, read back by a StreamReader (which
// checks every digest and the trailer); its page runs and their bytes.
struct Got {
  pb::Header header;
  std::vector<pb::PageRun> runs;
  std::vector<std::string> data;
};
Got get_and_read(const std::string& dir) {
  ScopedFd out(memfd_create("out", 0));
  image_to_stream(dir, out.get());
  lseek(out.get(), 0, SEEK_SET);
  StreamReader r(out.get(), "get");
  Got g;
  pb::Frame f;
  while (r.next(&f)) {
    if (f.has_header()) g.header = f.header();
    if (!f.has_pages()) continue;
    g.runs.push_back(f.pages());
    g.data.emplace_back(r.payload_left(), '\0');
    r.read_payload(g.data.back().data(), g.data.back().size());
  }
  return g;
}

}  // namespace

TEST(a_1_0_image_is_kept_as_1_0) {
  TmpDir d;
  ScopedFd in(round_stream(0, false, 0, {{0x100000, 3, 'a'}, {0x200000, 1, 'b'}}));
  std::string a = contents(in.get());
  lseek(in.get(), 0, SEEK_SET);
  put_fd(in.extract(), d.path + "/img");
  ScopedFd out(memfd_create("out", 0));
  image_to_stream(d.path + "/img", out.get());
  CHECK(contents(out.get()) == a);
  ImageSet im = ImageSet::open(d.path + "/img");
  CHECK_EQ(im.header().minor(), 0u);
  im.verify();
  // a changed page: the trailer checksum (payloads in it) finds it
  flip_byte(d.path + "/img/pages.img", 5000);
  ImageSet bad = ImageSet::open(d.path + "/img");
  CHECK_THROWS(bad.verify(), kBadInput, "checksum mismatch");
  ScopedFd out2(memfd_create("out", 0));
  CHECK_THROWS(image_to_stream(d.path + "/img", out2.get()), kBadInput, "checksum mismatch");
}

TEST(a_changed_page_of_a_1_1_image_fails_its_digest) {
  TmpDir d;
  put_fd(round_stream(1, false, 0, {{0x100000, 3, 'a'}, {0x200000, 1, 'b'}}), d.path + "/img");
  ImageSet::open(d.path + "/img").verify();
  flip_byte(d.path + "/img/pages.img", 3 * kPageSize + 10);
  ImageSet im = ImageSet::open(d.path + "/img");
  CHECK_THROWS(im.verify(), kBadInput, "page data of pid 7 at 0x200000 (1 pages) does not match its digest");
  // get stops there: no trailer, so no reader takes what it wrote
  ScopedFd out(memfd_create("out", 0));
  CHECK_THROWS(image_to_stream(d.path + "/img", out.get()), kBadInput,
               "/img' is corrupt: page data of pid 7 at 0x200000 (1 pages) does not match its digest");
  lseek(out.get(), 0, SEEK_SET);
  StreamReader r(out.get(), "cut");
  pb::Frame f;
  bool refused = false;  // (empty or cut short: whatever was flushed before)
  try {
    while (r.next(&f)) {
    }
  } catch (const Error& e) {
    refused = e.status() == kBadInput;
  }
  CHECK(refused);
}

TEST(a_1_1_image_with_a_run_without_digest_is_corrupt) {
  // Frames are stored as they came, so such an image can only be made by
  // hand: a 1.0 image whose header is then made 1.1.
  TmpDir d;
  put_fd(round_stream(0, false, 0, {{0x100000, 1, 'a'}}), d.path + "/img");
  ImageSet im = ImageSet::open(d.path + "/img");
  pb::Frame f;
  CHECK(im.next(&f) && f.has_header());
  CHECK_EQ(f.header().minor(), 0u);
  // (the manifest holds the sum of frames.img: rewriting it consistently
  // is what a forger would do; the reader must still refuse)
  std::string frames = read_file(d.path + "/img/frames.img");
  std::string h0 = im.raw();
  f.mutable_header()->set_minor(1);
  std::string h1 = f.SerializeAsString();
  CHECK_EQ(h1.size(), h0.size() + 2);
  size_t at = frames.find(h0);
  CHECK(at != std::string::npos);
  uint32_t len = static_cast<uint32_t>(h1.size());
  frames.replace(at - 4, 4 + h0.size(), std::string(reinterpret_cast<char*>(&len), 4) + h1);
  write_file(d.path + "/img/frames.img", frames);
  std::string man = read_file(d.path + "/img/manifest");
  char line[128];
  std::snprintf(line, sizeof line, "frames.img %zu %#018llx", frames.size(),
                static_cast<unsigned long long>(ck64(frames.data(), frames.size())));
  size_t p = man.find("frames.img ");
  man.replace(p, man.find('\n', p) - p, line);
  write_file(d.path + "/img/manifest", man);
  CHECK_THROWS(ImageSet::open(d.path + "/img"), kBadInput, "page run of pid 7 at 0x100000 (1 pages) has no digest");
}

namespace {

// Rewrites the header frame of the image in dir (and its manifest, as a
// forger would): what a reader must refuse even so.
void forge_header(const std::string& dir, const std::function<void(pb::Header*)>& change) {
  ImageSet im = ImageSet::open(dir);
  pb::Frame f;
  CHECK(im.next(&f) && f.has_header());
  std::string frames = read_file(dir + "/frames.img");
  std::string h0 = im.raw();
  change(f.mutable_header());
  std::string h1 = f.SerializeAsString();
  size_t at = frames.find(h0);
  CHECK(at != std::string::npos);
  uint32_t len = static_cast<uint32_t>(h1.size());
  frames.replace(at - 4, 4 + h0.size(), std::string(reinterpret_cast<char*>(&len), 4) + h1);
  write_file(dir + "/frames.img", frames);
  std::string man = read_file(dir + "/manifest");
  char line[128];
  std::snprintf(line, sizeof line, "frames.img %zu %#018llx", frames.size(),
                static_cast<unsigned long long>(ck64(frames.data(), frames.size())));
  size_t p = man.find("frames.img ");
  man.replace(p, man.find('\n', p) - p, line);
  write_file(dir + "/manifest", man);
}

// Round 1: A = 16 pages at 0x100000, B = 2 pages at 0x200000.
// Round 2 (incremental): C = 2 pages at 0x104000, inside A.
// Read through round 2: C, then A's parts [0x100000, 0x104000) and
// [0x106000, 0x110000), then B whole.
const Spec A{0x100000, 16, 'a'}, B{0x200000, 2, 'b'}, C{0x104000, 2, 'c'};
void two_rounds(const std::string& d) {
  put_fd(round_stream(3, false, 1, {A, B}), d + "/1");
  put_fd(round_stream(3, true, 2, {C}), d + "/2", d + "/1");
}

// Every page run of the image in dir through an ImageSource, as ck-restore
// places them; the bytes it was handed.
std::vector<std::string> placed(const std::string& dir) {
  ImageSource src(dir);
  std::vector<std::string> out;
  pb::Frame f;
  while (src.next(&f)) {
    if (!f.has_pages() || !f.pages().has_payload()) continue;
    out.emplace_back();
    src.payload([&](uint64_t off, const char* p, size_t n) {
      CHECK_EQ(off, out.back().size());
      out.back().append(p, n);
    });
  }
  return out;
}

}  // namespace

TEST(a_chain_presents_parts_of_older_runs_with_their_own_digests) {
  std::string a = run_bytes(A);
  std::vector<std::string> want = {run_bytes(C), a.substr(0, 4 * kPageSize), a.substr(6 * kPageSize), run_bytes(B)};
  TmpDir d;
  two_rounds(d.path);
  Got g = get_and_read(d.path + "/2");
  CHECK_EQ(g.header.minor(), 3u);
  // read through the chain, it is a whole image: round 2, computed against nothing
  CHECK(!g.header.incremental());
  CHECK_EQ(g.header.round().gen(), 2u);
  CHECK_EQ(g.header.round().base(), 0u);
  CHECK_EQ(g.runs.size(), 4u);
  if (g.runs.size() == 4) {
    CHECK_EQ(g.runs[1].addr(), 0x100000u);
    CHECK_EQ(g.runs[1].npages(), 4u);
    CHECK_EQ(g.runs[2].addr(), 0x106000u);
    CHECK_EQ(g.runs[2].npages(), 10u);
    CHECK_EQ(g.runs[3].addr(), 0x200000u);
    for (size_t i = 0; i < 4; ++i) {
      CHECK(g.data[i] == want[i]);
      CHECK(g.runs[i].has_digest());
      CHECK_EQ(g.runs[i].digest(), ck64(want[i].data(), want[i].size()));
    }
  }
  // ImageSet::next gives the same frames (digest included) to every user
  ImageSet im = ImageSet::open(d.path + "/2");
  pb::Frame f;
  size_t k = 0;
  while (im.next(&f))
    if (f.has_pages()) {
      pb::Frame back;
      CHECK(back.ParseFromString(im.raw()));
      CHECK_EQ(back.pages().digest(), f.pages().digest());
      ++k;
    }
  CHECK_EQ(k, 4u);
  im.verify();
  CHECK(placed(d.path + "/2") == want);
}

TEST(a_flipped_byte_in_a_parent_fails_get_and_the_page_source_naming_the_run) {
  // B goes out whole with its stored digest; A in parts, and the stored
  // digest of A covers the whole of it, the pages C replaced included.
  struct Case {
    uint64_t off;
    const char* run;
  } cases[] = {{16 * kPageSize + 100, "pid 7 at 0x200000 (2 pages)"},   // in B
               {1 * kPageSize + 9, "pid 7 at 0x100000 (16 pages)"},     // in a part of A that is used
               {4 * kPageSize + 9, "pid 7 at 0x100000 (16 pages)"}};    // in A, where C replaced it
  for (const Case& c : cases) {
    TmpDir d;
    two_rounds(d.path);
    flip_byte(d.path + "/1/pages.img", c.off);
    std::string msg = "image '" + d.path + "/1' is corrupt: page data of " + c.run + " does not match its digest";
    CHECK_THROWS(get_and_read(d.path + "/2"), kBadInput, msg.c_str());
    CHECK_THROWS(placed(d.path + "/2"), kBadInput, msg.c_str());
    CHECK_THROWS(ImageSet::open(d.path + "/2").verify(), kBadInput, "does not match its digest");
  }
}

TEST(the_page_source_checks_every_run_it_hands_out) {
  // 1.3, 1.2 and 1.1: a changed byte fails the run as it is placed, in the
  // newest round too; 1.0: the image is read whole when opened.
  for (uint32_t minor : {1u, 2u, 3u}) {
    TmpDir d;
    put_fd(round_stream(minor, false, 0, {{0x100000, 3, 'a'}, {0x200000, 1, 'b'}}), d.path + "/img");
    CHECK_EQ(placed(d.path + "/img").size(), 2u);
    flip_byte(d.path + "/img/pages.img", 3 * kPageSize + 10);
    CHECK_THROWS(placed(d.path + "/img"), kBadInput,
                 "/img' is corrupt: page data of pid 7 at 0x200000 (1 pages) does not match its digest");
  }
  {
    TmpDir d;
    two_rounds(d.path);
    flip_byte(d.path + "/2/pages.img", 5);
    CHECK_THROWS(placed(d.path + "/2"), kBadInput,
                 "/2' is corrupt: page data of pid 7 at 0x104000 (2 pages) does not match its digest");
  }
  TmpDir d;
  put_fd(round_stream(0, false, 0, {{0x100000, 3, 'a'}}), d.path + "/img");
  CHECK_EQ(placed(d.path + "/img").size(), 1u);
  flip_byte(d.path + "/img/pages.img", 5000);
  CHECK_THROWS(ImageSource(d.path + "/img"), kBadInput, "checksum mismatch");
  // a stream: the same check, as the bytes come
  ScopedFd s(round_stream(3, false, 0, {{0x100000, 3, 'a'}}));
  std::string bytes = contents(s.get());
  bytes[bytes.size() - 3 * kPageSize + 77] ^= 1;  // (the trailer frame is far smaller than a page)
  ScopedFd bad(memfd_create("bad", 0));
  write_full(bad.get(), bytes.data(), bytes.size());
  lseek(bad.get(), 0, SEEK_SET);
  StreamSource src(bad.get());
  pb::Frame f;
  bool threw = false;
  try {
    while (src.next(&f))
      if (f.has_pages() && f.pages().has_payload()) src.payload([](uint64_t, const char*, size_t) {});
  } catch (const Error& e) {
    threw = e.status() == kBadInput &&
            std::string(e.what()).find("page data of pid 7 at 0x100000 (3 pages) does not match its digest") !=
                std::string::npos;
  }
  CHECK(threw);
}

TEST(a_round_on_a_parent_it_was_not_computed_against_is_refused_naming_both) {
  TmpDir d;
  put_fd(round_stream(3, false, 1, {A}), d.path + "/1");
  put_fd(round_stream(3, true, 2, {C}), d.path + "/2", d.path + "/1");
  // round 3 computed against round 2, stored on round 1: round 2's pages would be lost
  std::string msg = "the stream is round 3 of dump d0d0000000000001, computed against round 2; parent '" + d.path +
                    "/1' is round 1 of dump d0d0000000000001, and round 2 is not in its chain (rounds 1)";
  CHECK_THROWS(put_fd(round_stream(3, true, 3, {C}), d.path + "/3", d.path + "/1"), kBadInput, msg.c_str());
  // computed against round 1, on round 2 (whose chain holds round 1): fine
  put_fd(round_stream(3, true, 3, {C}, kDump, 1), d.path + "/3", d.path + "/2");
  // another dump's round
  CHECK_THROWS(put_fd(round_stream(3, true, 4, {C}, 0xe0e0), d.path + "/4", d.path + "/3"), kBadInput,
               "round 4 of dump 000000000000e0e0, computed against round 3; parent '");
  CHECK_THROWS(put_fd(round_stream(3, true, 4, {C}, 0xe0e0), d.path + "/4", d.path + "/3"), kBadInput,
               "is round 3 of dump d0d0000000000001, of another tracking");
  // an older round on a newer one
  CHECK_THROWS(put_fd(round_stream(3, true, 2, {C}, kDump, 1), d.path + "/5", d.path + "/3"), kBadInput,
               "is round 3 of dump d0d0000000000001, not older than round 2");
  // a round alone, and a round of every page on a parent
  CHECK_THROWS(put_fd(round_stream(3, true, 4, {C}), d.path + "/6"), kBadInput,
               "the stream is round 4 of dump d0d0000000000001, computed against round 3: it holds only the pages "
               "written since, and is stored with --parent");
  CHECK_THROWS(put_fd(round_stream(3, false, 4, {C}), d.path + "/7", d.path + "/3"), kBadInput,
               "a round of every page (not incremental)");
  // nothing was left behind by the refusals
  struct stat st;
  for (const char* n : {"/4", "/5", "/6", "/7"}) CHECK(stat((d.path + n).c_str(), &st) != 0);
}

TEST(a_chain_whose_links_do_not_match_is_refused_when_opened) {
  TmpDir d;
  put_fd(round_stream(3, false, 1, {A}), d.path + "/1");
  put_fd(round_stream(3, true, 2, {C}), d.path + "/2", d.path + "/1");
  put_fd(round_stream(3, true, 3, {C}), d.path + "/3", d.path + "/2");
  ImageSet::open(d.path + "/3");
  // round 3 made to point at round 1 (a hand-made chain, or an image moved)
  write_file(d.path + "/3/parent", d.path + "/1\n");
  std::string msg = "image '" + d.path + "/3' is round 3 of dump d0d0000000000001, computed against round 2; parent '" +
                    d.path + "/1' is round 1 of dump d0d0000000000001, and round 2 is not in its chain";
  CHECK_THROWS(ImageSet::open(d.path + "/3"), kBadInput, msg.c_str());
  CHECK_THROWS(ImageSource(d.path + "/3"), kBadInput, msg.c_str());
  // a round whose parent went missing is no image either
  unlink((d.path + "/3/parent").c_str());
  CHECK_THROWS(ImageSet::open(d.path + "/3"), kBadInput,
               "/3' is round 3 of dump d0d0000000000001, computed against round 2, and has no parent");
}

TEST(an_old_chain_without_round_ids_is_refused_by_name) {
  // Format 1.1 and 1.2 rounds named nothing: such a chain (as an older ck
  // stored it) cannot be checked, so it is not read; nor is a new round put
  // on it.
  for (uint32_t minor : {1u, 2u}) {
    TmpDir d;
    put_fd(round_stream(minor, false, 1, {A}), d.path + "/1");
    put_fd(round_stream(minor, false, 2, {C}), d.path + "/2");
    forge_header(d.path + "/2", [](pb::Header* h) { h->set_incremental(true); });
    write_file(d.path + "/2/parent", d.path + "/1\n");
    CHECK_THROWS(ImageSet::open(d.path + "/2"), kBadInput,
                 "/2' is a pre-dump round that names no round it was computed against (written before format 1.3)");
    CHECK_THROWS(put_fd(round_stream(3, true, 3, {C}), d.path + "/3", d.path + "/1"), kBadInput,
                 "/1' is not a pre-dump round of format 1.3 or later (it names no round)");
    CHECK_THROWS(put_fd(round_stream(minor, true, 3, {C}), d.path + "/3", d.path + "/1"), kBadInput,
                 "the stream is a pre-dump round that names no round it was computed against (written before "
                 "format 1.3)");
  }
}

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
