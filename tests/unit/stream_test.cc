// The frame reader and writer: round trip, checksum, and every way a stream
// can be cut or corrupted gives status 3 with a message saying how.
#include <fcntl.h>
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

TEST(corrupted_payload_fails_checksum) {
  std::string s = make_stream(2);
  s[s.size() - 200] ^= 1;  // inside the last page run's payload
  bool thrown = false;
  try {
    read_all(s);
  } catch (const Error& e) {
    thrown = true;
  }
  CHECK(thrown);
  std::string t = make_stream(2);
  t[t.size() / 2] ^= 0x40;
  CHECK_THROWS(read_all(t), kBadInput, "checksum");
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
  CHECK_THROWS(r.header(), kBadInput, "version 9.0 is newer than this ck reads (1.0)");
  close(p[0]);
}

TEST(oversized_frame_is_refused) {
  std::string s(kMagic, 8);
  s += std::string("\xff\xff\xff\x7f", 4);
  CHECK_THROWS(read_all(s), kBadInput, "over the");
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
