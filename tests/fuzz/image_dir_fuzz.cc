// libFuzzer target: the image directory reader (image.h).  The input is cut
// into the files of an image directory: manifest, frames.img, pages.img and
// (sometimes) parent, so that each can be corrupt on its own.  Layout of the
// input: three little-endian u32 lengths (manifest, frames.img, parent),
// then those bytes in that order, the rest being pages.img.  A manifest of
// "auto" is replaced by a correct one for the files given (sizes, the
// frames' sum, the checksum of the trailer found in frames.img), so the fuzzer
// reaches past the manifest's sizes and checksum into the frames.  Opening,
// reading every frame and payload, verifying, and turning the image back
// into a stream must each succeed or throw ck::Error with status 3.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "ck64.h"
#include "error.h"
#include "fd.h"
#include "image.h"
#include "stream.h"

namespace {

std::string dir_path() {
  static std::string d = [] {
    char t[] = "/tmp/ck-fuzz-img.XXXXXX";
    if (!mkdtemp(t)) abort();
    return std::string(t);
  }();
  return d;
}

void put_file(const std::string& path, const uint8_t* p, size_t n) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) abort();
  if (n) ck::write_full(fd, p, n);
  ::close(fd);
}

uint32_t take_u32(const uint8_t*& p, size_t& left) {
  uint32_t v = 0;
  if (left >= 4) {
    std::memcpy(&v, p, 4);
    p += 4;
    left -= 4;
  } else {
    left = 0;
  }
  return v;
}

std::string ck64_hex(const uint8_t* p, size_t n) {
  ck::Ck64 s;
  s.update(p, n);
  char b[32];
  std::snprintf(b, sizeof b, "0x%016llx", static_cast<unsigned long long>(s.digest()));
  return b;
}

// The trailer checksum of frames.img's last frame, if it parses (else 0).
uint64_t trailer_checksum(const uint8_t* p, size_t n) {
  if (n < sizeof ck::kMagic) return 0;
  size_t at = sizeof ck::kMagic, last = 0, last_len = 0;
  while (at + 4 <= n) {
    uint32_t len;
    std::memcpy(&len, p + at, 4);
    if (len > n - at - 4) break;
    last = at + 4;
    last_len = len;
    at += 4 + len;
  }
  ck::pb::Frame f;
  if (!last_len || !f.ParseFromArray(p + last, static_cast<int>(last_len)) || !f.has_trailer()) return 0;
  return f.trailer().checksum();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const uint8_t* p = data;
  size_t left = size;
  size_t lens[3];
  for (auto& l : lens) l = take_u32(p, left) % (1 << 20);
  const uint8_t* part[3];
  for (int i = 0; i < 3; ++i) {
    if (lens[i] > left) lens[i] = left;
    part[i] = p;
    p += lens[i];
    left -= lens[i];
  }
  const std::string d = dir_path();
  ::unlink((d + "/parent").c_str());
  put_file(d + "/frames.img", part[1], lens[1]);
  put_file(d + "/pages.img", p, left);
  if (lens[2]) put_file(d + "/parent", part[2], lens[2]);
  if (lens[0] >= 4 && std::memcmp(part[0], "auto", 4) == 0) {
    // a manifest that matches the files: the frames themselves are fuzzed
    std::string m = "ck-image 1\nframes.img " + std::to_string(lens[1]) + " " + ck64_hex(part[1], lens[1]) +
                    "\npages.img " + std::to_string(left) + "\nchecksum " + std::to_string(0) + "x" +
                    [&] {
                      char b[32];
                      std::snprintf(b, sizeof b, "%016llx",
                                    static_cast<unsigned long long>(trailer_checksum(part[1], lens[1])));
                      return std::string(b);
                    }() + "\n";
    put_file(d + "/manifest", reinterpret_cast<const uint8_t*>(m.data()), m.size());
  } else {
    put_file(d + "/manifest", part[0], lens[0]);
  }
  int step = 0;
  try {
    ck::ImageSet im = ck::ImageSet::open(d);
    ck::pb::Frame f;
    std::vector<char> buf(2 * ck::kPageSize);
    step = 1;
    while (im.next(&f)) {
      while (im.payload_left()) {
        size_t k = im.payload_left() < buf.size() ? im.payload_left() : buf.size();
        im.read_payload(buf.data(), k);
      }
    }
    step = 2;
    im.verify();
    step = 3;
    int null = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    try {
      ck::image_to_stream(d, null);
    } catch (...) {
      ::close(null);
      throw;
    }
    ::close(null);
  } catch (const ck::Error& e) {
    if (e.status() != ck::kBadInput) {
      std::fprintf(stderr, "unexpected status %d at step %d: %s\n", e.status(), step, e.what());
      abort();
    }
  }
  return 0;
}
