// The frame reader and writer: round trip, checksum, and every way a stream
// can be cut or corrupted gives status 3 with a message saying how.  Format
// 1.1 (payload digests, trailer over the frames) and 1.0 streams built by
// hand (payloads in the trailer sum); pages_spliced and forwarding.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "ck64.h"
#include "error.h"
#include "fd.h"
#include "stream.h"
#include "test.h"

using namespace ck;

namespace {

std::string make_stream(int runs) {
  int p[2];
  if (pipe(p) != 0) abort();
  // Large enough for the test streams without a reader thread.
  fcntl(p[1], F_SETPIPE_SZ, 1 << 20);
  {
    StreamWriter w(p[1]);
    w.header(make_header("unit"));
    pb::Frame f;
    f.set_pid(7);
    f.mutable_process()->set_pid(7);
    f.mutable_process()->set_comm("x");
    w.frame(f);
    std::vector<char> page(kPageSize * 2);
    for (int i = 0; i < runs; ++i) {
      std::memset(page.data(), 'a' + i, page.size());
      pb::PageRun r;
      r.set_pid(7);
      r.set_addr(0x10000 + i * 0x2000);
      r.set_npages(2);
      r.set_has_payload(true);
      struct iovec iov = {page.data(), page.size()};
      w.pages(r, &iov, 1);
    }
    w.finish();
  }
  close(p[1]);
  std::string out(1 << 20, '\0');
  size_t n = read_full(p[0], out.data(), out.size());
  close(p[0]);
  out.resize(n);
  return out;
}

// Reads a whole stream from bytes; returns page bytes seen.
size_t read_all(const std::string& bytes) {
  int p[2];
  if (pipe(p) != 0) abort();
  fcntl(p[1], F_SETPIPE_SZ, 1 << 20);
  write_full(p[1], bytes.data(), bytes.size());
  close(p[1]);
  StreamReader r(p[0], "test");
  pb::Frame f;
  size_t pages = 0;
  std::vector<char> buf(kPageSize * 2);
  try {
    while (r.next(&f)) {
      if (f.has_pages() && f.pages().has_payload()) {
        r.read_payload(buf.data(), buf.size());
        pages += buf.size();
      }
    }
  } catch (...) {
    close(p[0]);
    throw;
  }
  close(p[0]);
  return pages;
}

}  // namespace

TEST(round_trip) {
  std::string s = make_stream(3);
  CHECK_EQ(read_all(s), size_t{3} * 2 * kPageSize);
}

TEST(truncated_anywhere_is_an_error) {
  std::string s = make_stream(2);
  for (size_t cut = 0; cut < s.size(); cut += 97) {
    std::string t = s.substr(0, cut);
    bool thrown = false;
    try {
      read_all(t);
    } catch (const Error& e) {
      thrown = true;
      CHECK_EQ(e.status(), kBadInput);
    }
    CHECK(thrown);
  }
}

TEST(corrupted_payload_fails_its_digest) {
  std::string s = make_stream(2);
  s[s.size() - 200] ^= 1;  // inside the last page run's payload
  CHECK_THROWS(read_all(s), kBadInput, "page data of pid 7 at 0x12000 (2 pages) does not match its digest (stream corrupted)");
  std::string t = make_stream(2);
  t[t.size() / 2] ^= 0x40;  // the end of the first run's payload
  CHECK_THROWS(read_all(t), kBadInput, "page data of pid 7 at 0x10000 (2 pages) does not match its digest");
}

TEST(bad_magic_and_newer_version) {
  CHECK_THROWS(read_all("hello world, not a stream"), kBadInput, "not a ck stream");
  CHECK_THROWS(read_all(""), kBadInput, "empty input");
  // A stream from a newer major version names both versions.
  int p[2];
  CHECK(pipe(p) == 0);
  {
    StreamWriter w(p[1]);
    pb::Header h = make_header("unit");
    h.set_major(9);
    w.header(h);
    w.finish();
  }
  close(p[1]);
  StreamReader r(p[0], "test");
  CHECK_THROWS(r.header(), kBadInput, strf("version 9.%u is newer than this ck reads (1.%u)", kMinor, kMinor));
  close(p[0]);
}

TEST(oversized_frame_is_refused) {
  std::string s(kMagic, 8);
  s += std::string("\xff\xff\xff\x7f", 4);
  CHECK_THROWS(read_all(s), kBadInput, "over the");
}

namespace {

std::string pipe_bytes(int fd) {
  std::string out;
  char b[65536];
  for (;;) {
    ssize_t n = read(fd, b, sizeof b);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(b, static_cast<size_t>(n));
  }
  return out;
}

// A stream built byte by byte, as a writer of any version would: magic,
// frames (u32 LE length + bytes), raw payloads, a trailer whose checksum
// covers the payloads (1.0) or not (1.1).
struct HandStream {
  bool payload_in_sum;
  std::string out;
  Ck64 sum;
  uint64_t frames = 0, payload = 0;
  explicit HandStream(uint32_t minor) : payload_in_sum(minor == 0) {
    add(std::string(kMagic, sizeof kMagic), true);
    pb::Frame f;
    *f.mutable_header() = make_header("hand");
    f.mutable_header()->set_minor(minor);
    frame(f);
  }
  void add(const std::string& b, bool summed) {
    out += b;
    if (summed) sum.update(b.data(), b.size());
  }
  std::string prefixed(const std::string& raw) {
    uint32_t n = static_cast<uint32_t>(raw.size());
    char l[4] = {static_cast<char>(n), static_cast<char>(n >> 8), static_cast<char>(n >> 16), static_cast<char>(n >> 24)};
    return std::string(l, 4) + raw;
  }
  void frame(const pb::Frame& f) {
    add(prefixed(f.SerializeAsString()), true);
    ++frames;
  }
  void run(uint64_t addr, const std::string& data, bool with_digest) {
    pb::Frame f;
    f.set_pid(7);
    auto* r = f.mutable_pages();
    r->set_pid(7);
    r->set_addr(addr);
    r->set_npages(static_cast<uint32_t>(data.size() / kPageSize));
    r->set_has_payload(true);
    if (with_digest) r->set_digest(ck64(data.data(), data.size()));
    frame(f);
    add(data, payload_in_sum);
    payload += data.size();
  }
  std::string finish() {
    pb::Frame f;
    f.mutable_trailer()->set_frames(frames);
    f.mutable_trailer()->set_payload_bytes(payload);
    f.mutable_trailer()->set_checksum(sum.digest());
    return out + prefixed(f.SerializeAsString());
  }
};

std::string pattern(size_t pages, int seed) {
  std::string d(pages * kPageSize, '\0');
  for (size_t i = 0; i < d.size(); ++i) d[i] = static_cast<char>((i * 131 + seed * 7 + (i >> 12)) & 0xff);
  return d;
}

// Reads a stream to its end, payloads in pieces of `piece` bytes (or left to
// next() to skip when piece is 0); returns every payload byte in order.
std::string payloads_of(const std::string& bytes, size_t piece, std::vector<pb::PageRun>* runs = nullptr,
                        pb::Header* header = nullptr) {
  ScopedFd fd(memfd_create("s", 0));
  write_full(fd.get(), bytes.data(), bytes.size());
  lseek(fd.get(), 0, SEEK_SET);
  StreamReader r(fd.get(), "test");
  pb::Frame f;
  std::string all;
  std::vector<char> buf(piece ? piece : 1);
  while (r.next(&f)) {
    if (f.has_header() && header) *header = f.header();
    if (!f.has_pages()) continue;
    if (runs) runs->push_back(f.pages());
    while (piece && r.payload_left()) {
      size_t n = std::min<uint64_t>(r.payload_left(), piece);
      r.read_payload(buf.data(), n);
      all.append(buf.data(), n);
    }
  }
  return all;
}

}  // namespace

TEST(writer_puts_the_digest_of_each_payload_in_its_frame) {
  std::string s = make_stream(3);
  std::vector<pb::PageRun> runs;
  pb::Header h;
  std::string data = payloads_of(s, 4096 + 17, &runs, &h);
  CHECK_EQ(h.major(), 1u);
  CHECK_EQ(h.minor(), ck::kMinor);
  CHECK_EQ(runs.size(), 3u);
  for (size_t i = 0; i < runs.size(); ++i) {
    CHECK(runs[i].has_digest());
    CHECK_EQ(runs[i].digest(), ck64(data.data() + i * 2 * kPageSize, 2 * kPageSize));
  }
  // The trailer checksum covers everything but the payloads.
  ScopedFd fd(memfd_create("s", 0));
  write_full(fd.get(), s.data(), s.size());
  lseek(fd.get(), 0, SEEK_SET);
  StreamReader r(fd.get(), "test");
  pb::Frame f;
  while (r.next(&f)) {
  }
  std::string frames_only;
  size_t at = 8;
  frames_only.append(s, 0, 8);
  while (true) {
    uint32_t len;
    std::memcpy(&len, s.data() + at, 4);
    pb::Frame g;
    CHECK(g.ParseFromString(s.substr(at + 4, len)));
    if (g.has_trailer()) break;
    frames_only.append(s, at, 4 + len);
    at += 4 + len;
    if (g.has_pages() && g.pages().has_payload()) at += uint64_t{g.pages().npages()} * kPageSize;
  }
  CHECK_EQ(r.trailer().checksum(), ck64(frames_only.data(), frames_only.size()));
}

TEST(skipped_payloads_are_checked_too) {
  std::string s = make_stream(2);
  CHECK_EQ(payloads_of(s, 0).size(), 0u);  // clean: skipping is fine
  s[s.size() - 200] ^= 1;
  CHECK_THROWS(payloads_of(s, 0), kBadInput, "page data of pid 7 at 0x12000 (2 pages) does not match its digest");
}

TEST(corrupted_frame_fails_the_trailer_checksum) {
  // A frame byte changed so that the frame still parses: only the trailer
  // checksum can see it.
  HandStream h(1);
  pb::Frame n;
  n.mutable_note()->set_stage("unit");
  n.mutable_note()->set_text("hello frames");
  h.frame(n);
  h.run(0x10000, pattern(2, 1), true);
  std::string s = h.finish();
  CHECK_EQ(payloads_of(s, 8192).size(), 2 * kPageSize);
  size_t at = s.find("hello frames");
  CHECK(at != std::string::npos);
  s[at] = 'j';
  CHECK_THROWS(payloads_of(s, 8192), kBadInput, "checksum mismatch (stream corrupted)");
  // The digest is in the trailer sum too: a digest changed along with its
  // payload (a forged pair) still fails.
  HandStream g(1);
  std::string d = pattern(1, 2);
  size_t at_run = g.out.size();
  g.run(0x10000, d, true);
  size_t run_len = g.out.size() - at_run;
  std::string t = g.finish();
  d[100] ^= 1;
  HandStream forged(1);
  size_t at_forged = forged.out.size();
  forged.run(0x10000, d, true);
  std::string part = forged.out.substr(at_forged);
  t = t.substr(0, at_run) + part + t.substr(at_run + run_len);
  CHECK(t != g.finish());
  CHECK_THROWS(payloads_of(t, 4096), kBadInput, "checksum mismatch (stream corrupted)");
}

TEST(a_1_1_payload_run_without_digest_is_refused) {
  HandStream h(1);
  h.run(0x7f0000000000, pattern(16, 3), false);
  CHECK_THROWS(payloads_of(h.finish(), 4096), kBadInput, "page run of pid 7 at 0x7f0000000000 (16 pages) has no digest");
  // and a zero run with one
  HandStream z(1);
  pb::Frame f;
  f.set_pid(7);
  f.mutable_pages()->set_pid(7);
  f.mutable_pages()->set_addr(0x20000);
  f.mutable_pages()->set_npages(1);
  f.mutable_pages()->set_digest(1);
  z.frame(f);
  CHECK_THROWS(payloads_of(z.finish(), 4096), kBadInput, "page run of pid 7 at 0x20000 (1 pages) has a digest but no payload");
}

TEST(a_1_0_stream_is_read_with_payloads_in_the_checksum) {
  std::string a = pattern(3, 4), b = pattern(1, 5);
  HandStream h(0);
  h.run(0x10000, a, false);
  h.run(0x40000, b, false);
  std::string s = h.finish();
  pb::Header hd;
  CHECK(payloads_of(s, 5000, nullptr, &hd) == a + b);
  CHECK_EQ(hd.minor(), 0u);
  CHECK(payloads_of(s, 0).empty());  // skipped, still summed
  // A changed payload byte: only the trailer can tell.
  std::string t = s;
  t[t.find(a) + 5000] ^= 0x10;
  CHECK_THROWS(payloads_of(t, 5000), kBadInput, "checksum mismatch (stream corrupted)");
  CHECK_THROWS(payloads_of(t, 0), kBadInput, "checksum mismatch (stream corrupted)");
  // The semantics follow the header: a 1.0 header with a 1.1 trailer sum
  // (payloads left out) is refused, and the other way round.
  HandStream x(0);
  x.payload_in_sum = false;
  x.run(0x10000, a, false);
  CHECK_THROWS(payloads_of(x.finish(), 4096), kBadInput, "checksum mismatch");
  HandStream y(1);
  y.payload_in_sum = true;
  y.run(0x10000, a, true);
  CHECK_THROWS(payloads_of(y.finish(), 4096), kBadInput, "checksum mismatch");
}

TEST(pages_spliced_writes_what_pages_writes) {
  pb::Header hd = make_header("unit");
  std::string data = pattern(64, 6);  // 256 KiB: several splices through a 64 KiB pipe
  pb::PageRun run;
  run.set_pid(7);
  run.set_addr(0x7f0000000000);
  run.set_npages(64);
  run.set_has_payload(true);
  pb::Frame note;
  note.mutable_note()->set_stage("unit");
  note.mutable_note()->set_text("before the run");
  // The reference, through pages() (which computes the digest).
  std::string want;
  {
    ScopedFd fd(memfd_create("ref", 0));
    StreamWriter w(fd.get());
    w.header(hd);
    w.frame(note);
    struct iovec iov = {data.data(), data.size()};
    w.pages(run, &iov, 1);
    w.finish();
    lseek(fd.get(), 0, SEEK_SET);
    want = pipe_bytes(fd.get());
  }
  CHECK(payloads_of(want, 4096) == data);
  pb::PageRun with = run;
  with.set_digest(ck64(data.data(), data.size()));
  // Writes the stream through pages_spliced into out_fd, the payload fed by
  // a thread-less pipe: it must hold the whole payload.
  auto spliced = [&](int out_fd) {
    int src[2];
    CHECK(pipe(src) == 0);
    CHECK(fcntl(src[1], F_SETPIPE_SZ, 1 << 20) >= int(data.size()));
    write_full(src[1], data.data(), data.size());
    StreamWriter w(out_fd);
    w.header(hd);
    w.frame(note);
    w.pages_spliced(with, src[0]);
    w.finish();
    CHECK_EQ(w.payload_bytes(), data.size());
    close(src[0]);
    close(src[1]);
  };
  // Into a pipe (splice moves the pages).
  {
    int out[2];
    CHECK(pipe(out) == 0);
    CHECK(fcntl(out[1], F_SETPIPE_SZ, 1 << 20) >= (1 << 20));
    spliced(out[1]);
    close(out[1]);
    CHECK(pipe_bytes(out[0]) == want);
    close(out[0]);
  }
  // Into regular files: one splice takes, and one opened O_APPEND, which
  // splice refuses with EINVAL (the read/write fallback).
  for (int flags : {O_WRONLY, O_WRONLY | O_APPEND}) {
    char path[] = "/tmp/ck-stream-test.XXXXXX";
    int tmp = mkstemp(path);
    CHECK(tmp >= 0);
    close(tmp);
    {
      ScopedFd fd(open(path, flags));
      CHECK(fd.valid());
      spliced(fd.get());
    }
    ScopedFd back(open(path, O_RDONLY));
    CHECK(pipe_bytes(back.get()) == want);
    unlink(path);
  }
}

TEST(pages_spliced_refuses_a_run_without_digest_or_a_short_pipe) {
  ScopedFd fd(memfd_create("out", 0));
  StreamWriter w(fd.get());
  w.header(make_header("unit"));
  pb::PageRun run;
  run.set_pid(7);
  run.set_addr(0x10000);
  run.set_npages(2);
  run.set_has_payload(true);
  int src[2];
  CHECK(pipe(src) == 0);
  CHECK_THROWS(w.pages_spliced(run, src[0]), kFail, "needs a payload and its digest");
  run.set_digest(1);
  std::string half(kPageSize, 'h');
  write_full(src[1], half.data(), half.size());
  close(src[1]);
  CHECK_THROWS(w.pages_spliced(run, src[0]), kFail,
               "page data of pid 7 at 0x10000 (2 pages) ended after 4096 of 8192 bytes");
  close(src[0]);
}

namespace {
// ck-memread's and ck-cgdump's way of passing a stream on.
std::string forward(const std::string& in) {
  ScopedFd ifd(memfd_create("in", 0)), ofd(memfd_create("out", 0));
  write_full(ifd.get(), in.data(), in.size());
  lseek(ifd.get(), 0, SEEK_SET);
  {
    StreamReader r(ifd.get(), "in");
    StreamWriter w(ofd.get());
    w.header(r.header());
    forward_frames(r, w, [](const pb::Frame& f) { return !f.has_header(); });
    w.finish();
  }
  lseek(ofd.get(), 0, SEEK_SET);
  return pipe_bytes(ofd.get());
}
}  // namespace

TEST(forwarding_a_1_1_stream_keeps_every_byte) {
  std::string s = make_stream(3);
  CHECK(forward(s) == s);
  std::string t = s;
  t[t.size() - 200] ^= 1;
  CHECK_THROWS(forward(t), kBadInput, "page data of pid 7 at 0x14000 (2 pages) does not match its digest");
}

TEST(forwarding_a_1_0_stream_gives_this_version_with_digests) {
  // 300 pages: more than the forwarder holds at once (256), so it comes out
  // as two runs, each with the digest of its part.
  std::string a = pattern(300, 7), b = pattern(2, 8);
  HandStream h(0);
  h.run(0x100000, a, false);
  h.run(0x800000, b, false);
  std::string s = h.finish();
  std::string out = forward(s);
  std::vector<pb::PageRun> runs;
  pb::Header hd;
  std::string data = payloads_of(out, 3000, &runs, &hd);
  CHECK(data == a + b);
  CHECK_EQ(hd.major(), 1u);
  CHECK_EQ(hd.minor(), ck::kMinor);
  CHECK_EQ(runs.size(), 3u);
  uint64_t at = 0;
  for (auto& r : runs) {
    CHECK(r.has_payload() && r.has_digest());
    uint64_t len = uint64_t{r.npages()} * kPageSize;
    CHECK_EQ(r.digest(), ck64(data.data() + at, len));
    at += len;
  }
  if (runs.size() == 3) {
    CHECK_EQ(runs[0].addr(), 0x100000u);
    CHECK_EQ(runs[0].npages(), 256u);
    CHECK_EQ(runs[1].addr(), 0x100000u + 256 * kPageSize);
    CHECK_EQ(runs[1].npages(), 44u);
    CHECK_EQ(runs[2].addr(), 0x800000u);
  }
  // and a corrupt 1.0 payload is still refused on the way (no trailer out)
  std::string t = s;
  t[t.find(b) + 10] ^= 1;
  CHECK_THROWS(forward(t), kBadInput, "checksum mismatch");
}

// ---- ck64 -----------------------------------------------------------------

static std::vector<unsigned char> random_bytes(size_t n, uint64_t seed) {
  std::vector<unsigned char> v(n);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (auto& c : v) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    c = static_cast<unsigned char>(x >> 24);
  }
  return v;
}

static uint64_t sum_of(const std::vector<unsigned char>& v) { return ck64(v.data(), v.size()); }

static void put_word(std::vector<unsigned char>& v, size_t word, uint64_t w) { std::memcpy(&v[word * 8], &w, 8); }

static void swap_words(std::vector<unsigned char>& v, size_t i, size_t j) {
  unsigned char t[8];
  std::memcpy(t, &v[i * 8], 8);
  std::memcpy(&v[i * 8], &v[j * 8], 8);
  std::memcpy(&v[j * 8], t, 8);
}

TEST(ck64_is_incremental) {
  std::vector<char> data(100003);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 31 + (i >> 7));
  uint64_t whole = ck64(data.data(), data.size());
  for (size_t step : {1, 7, 31, 32, 33, 127, 128, 129, 4096, 65536}) {
    Ck64 c;
    for (size_t off = 0; off < data.size(); off += step) c.update(data.data() + off, std::min(step, data.size() - off));
    CHECK_EQ(c.digest(), whole);
    CHECK_EQ(c.length(), data.size());
  }
  // Pieces of random sizes, and digest() in the middle changes nothing.
  uint64_t x = 12345;
  Ck64 c;
  for (size_t off = 0; off < data.size();) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    size_t n = std::min<size_t>((x >> 33) % 3000, data.size() - off);
    c.update(data.data() + off, n);
    (void)c.digest();
    off += n;
  }
  CHECK_EQ(c.digest(), whole);
  data[5000] ^= 1;
  CHECK(ck64(data.data(), data.size()) != whole);
}

TEST(ck64_state_round_trip) {
  // The lanes of a hasher fed some pages, handed to from_state, give the
  // same digest, and the rebuilt hasher goes on like the original.
  for (size_t pages : {0, 1, 2, 3, 16, 33}) {
    auto data = random_bytes(pages * 4096 + 4096, 100 + pages);
    Ck64 h;
    h.update(data.data(), pages * 4096);
    uint64_t a[Ck64::kLanes], b[Ck64::kLanes];
    h.state(a, b);
    Ck64 g = Ck64::from_state(a, b, h.length());
    CHECK_EQ(g.digest(), h.digest());
    CHECK_EQ(g.length(), h.length());
    CHECK_EQ(g.digest(), ck64(data.data(), pages * 4096));
    g.update(data.data() + pages * 4096, 4096);
    h.update(data.data() + pages * 4096, 4096);
    CHECK_EQ(g.digest(), h.digest());
  }
  uint64_t a[Ck64::kLanes] = {}, b[Ck64::kLanes] = {};
  CHECK_THROWS(Ck64::from_state(a, b, 100), kFail, "not a whole number of blocks");
}

TEST(ck64_value_is_stable) {
  // Images and streams carry this checksum: the algorithm must not drift.
  // (If it has to change, it is a new stream format version.)
  std::string s;
  for (int i = 0; i < 1000; ++i) s += static_cast<char>(i * 7 + (i >> 3));
  CHECK_EQ(ck64("", 0), 0x8fe9981ac8a97dc4ull);
  CHECK_EQ(ck64(s.data(), s.size()), 0xdf45aa4497f917f6ull);
}

TEST(ck64_portable_and_vector_paths_agree) {
  auto data = random_bytes(200000, 1);
  for (size_t len : {0, 1, 127, 128, 129, 4095, 4096, 4097, 70000, 200000}) {
    Ck64::force_portable(false);
    uint64_t fast = ck64(data.data(), len);
    Ck64::force_portable(true);
    uint64_t slow = ck64(data.data(), len);
    Ck64::force_portable(false);
    CHECK_EQ(fast, slow);
  }
}

TEST(ck64_sees_every_single_bit_flip) {
  // Every bit of the first 8 KiB (all 16 lanes, many blocks deep), then
  // bits spread over 1 MiB and in the tail, on random and on zero data.
  for (int zero = 0; zero < 2; ++zero) {
    auto data = zero ? std::vector<unsigned char>((1 << 20) + 77) : random_bytes((1 << 20) + 77, 2);
    uint64_t base = sum_of(data);
    int missed = 0;
    auto flip = [&](size_t bit) {
      data[bit / 8] ^= static_cast<unsigned char>(1u << (bit % 8));
      if (sum_of(data) == base) ++missed;
      data[bit / 8] ^= static_cast<unsigned char>(1u << (bit % 8));
    };
    std::vector<unsigned char> head(data.begin(), data.begin() + 8192);
    uint64_t head_sum = sum_of(head);
    for (size_t bit = 0; bit < head.size() * 8; ++bit) {
      head[bit / 8] ^= static_cast<unsigned char>(1u << (bit % 8));
      if (sum_of(head) == head_sum) ++missed;
      head[bit / 8] ^= static_cast<unsigned char>(1u << (bit % 8));
    }
    for (size_t bit = 0; bit < data.size() * 8; bit += 4099 * 8 + 13) flip(bit);
    for (size_t bit = (data.size() - 77) * 8; bit < data.size() * 8; ++bit) flip(bit);  // the tail
    CHECK_EQ(missed, 0);
  }
}

TEST(ck64_sees_swapped_words) {
  // Words that differ in bit 63 only (+1.0 and -1.0 as doubles), in the low
  // bit only, and random words; swapped within a lane (multiples of 128
  // bytes apart, powers of two included) and across lanes.
  const size_t nwords = (8 << 20) / 8;  // 8 MiB: lane distances up to 2^16 blocks
  std::vector<unsigned char> data(nwords * 8);
  uint64_t pairs[][2] = {{0x3ff0000000000000ull, 0xbff0000000000000ull},
                         {0x10, 0x11},
                         {0x8000000000000000ull, 0},
                         {0x123456789abcdef0ull, 0x0fedcba987654321ull}};
  int missed = 0, tried = 0;
  for (auto& pr : pairs) {
    for (size_t d = 1; d < nwords; d *= 2) {  // word distance; d >= 16 keeps the lane
      for (size_t extra : {size_t{0}, size_t{16 * 3}}) {
        size_t i = 5, j = 5 + d + extra;
        if (j >= nwords) continue;
        std::fill(data.begin(), data.end(), 0);
        put_word(data, i, pr[0]);
        put_word(data, j, pr[1]);
        uint64_t before = sum_of(data);
        swap_words(data, i, j);
        ++tried;
        if (sum_of(data) == before) ++missed;
      }
    }
  }
  // Random data, random swaps of different words.
  auto rnd = random_bytes(1 << 20, 3);
  uint64_t base = sum_of(rnd);
  for (size_t k = 0; k < 200; ++k) {
    size_t i = (k * 7919) % (rnd.size() / 8), j = (k * 104729 + 1) % (rnd.size() / 8);
    if (i == j) continue;
    swap_words(rnd, i, j);
    ++tried;
    if (sum_of(rnd) == base) ++missed;
    swap_words(rnd, i, j);
  }
  CHECK(tried > 150);
  CHECK_EQ(missed, 0);
}

TEST(ck64_sees_reordered_blocks) {
  // ABBA against BAAB (a Fletcher sum cannot tell them apart), two pages
  // swapped, in random data and in mostly-zero data; and length changes.
  for (size_t blk : {size_t{64}, size_t{128}, size_t{4096}}) {
    auto A = random_bytes(blk, 4), B = random_bytes(blk, 5);
    std::vector<unsigned char> abba, baab;
    for (auto* x : {&A, &B, &B, &A}) abba.insert(abba.end(), x->begin(), x->end());
    for (auto* x : {&B, &A, &A, &B}) baab.insert(baab.end(), x->begin(), x->end());
    CHECK(sum_of(abba) != sum_of(baab));
    // The same with blocks that differ in one bit only.
    auto C = A;
    C[blk / 2] ^= 0x80;
    abba.clear(), baab.clear();
    for (auto* x : {&A, &C, &C, &A}) abba.insert(abba.end(), x->begin(), x->end());
    for (auto* x : {&C, &A, &A, &C}) baab.insert(baab.end(), x->begin(), x->end());
    CHECK(sum_of(abba) != sum_of(baab));
  }
  for (int zero = 0; zero < 2; ++zero) {
    std::vector<unsigned char> mem(4 << 20);
    if (!zero) mem = random_bytes(mem.size(), 6);
    for (size_t pg = 0; pg < mem.size() / 4096; pg += 64) put_word(mem, pg * 512 + 1, pg + 1);  // the swapped pages differ
    uint64_t base = sum_of(mem);
    int missed = 0;
    for (size_t a = 0; a < mem.size() / 4096; a += 64)
      for (size_t b : {a + 64, a + 128, a + 512}) {
        if ((b + 1) * 4096 > mem.size()) continue;
        std::swap_ranges(mem.begin() + a * 4096, mem.begin() + (a + 1) * 4096, mem.begin() + b * 4096);
        if (sum_of(mem) == base) ++missed;
        std::swap_ranges(mem.begin() + a * 4096, mem.begin() + (a + 1) * 4096, mem.begin() + b * 4096);
      }
    CHECK_EQ(missed, 0);
    CHECK_EQ(sum_of(mem), base);
  }
  std::vector<unsigned char> z(4096);
  uint64_t z1 = sum_of(z);
  z.push_back(0);
  CHECK(sum_of(z) != z1);
  z.resize(8192);
  CHECK(sum_of(z) != z1);
}

UNIT_MAIN()
