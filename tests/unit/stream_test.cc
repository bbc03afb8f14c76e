// The frame reader and writer: round trip, checksum, and every way a stream
// can be cut or corrupted gives status 3 with a message saying how.
#include <fcntl.h>
#include <unistd.h>

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

TEST(ck64_is_incremental) {
  std::vector<char> data(100003);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 31 + (i >> 7));
  uint64_t whole = ck64(data.data(), data.size());
  for (size_t step : {1, 7, 31, 32, 33, 4096}) {
    Ck64 c;
    for (size_t off = 0; off < data.size(); off += step) c.update(data.data() + off, std::min(step, data.size() - off));
    CHECK_EQ(c.digest(), whole);
  }
  data[5000] ^= 1;
  CHECK(ck64(data.data(), data.size()) != whole);
}

UNIT_MAIN()
