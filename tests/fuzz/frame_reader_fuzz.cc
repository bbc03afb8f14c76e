// libFuzzer target: arbitrary bytes as a ck stream.  The reader must either
// read it to its verified trailer or throw ck::Error with status 3 -- never
// crash, hang, read out of bounds or allocate without bound.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "error.h"
#include "fuzz_input.h"
#include "fd.h"
#include "stream.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  int fd = ckfuzz::input_fd(data, size);
  try {
    ck::StreamReader r(fd, "fuzz");
    ck::pb::Frame f;
    std::vector<char> buf(3 * ck::kPageSize);
    uint64_t n = 0;
    while (r.next(&f)) {
      // Read payloads in odd-sized pieces, or leave them to be skipped.
      while (r.payload_left() && (n & 1)) {
        size_t k = r.payload_left() < buf.size() ? r.payload_left() : buf.size();
        r.read_payload(buf.data(), k);
      }
      ++n;
    }
    // Reached only with a verified trailer.
    if (r.trailer().frames() != n) abort();
  } catch (const ck::Error& e) {
    if (e.status() != ck::kBadInput) {
      std::fprintf(stderr, "unexpected status %d: %s\n", e.status(), e.what());
      abort();
    }
  }
  return 0;
}
