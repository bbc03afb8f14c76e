// libFuzzer target: the stream reader under structure-aware mutation (see
// stream_mutator.h), so the inputs are mostly well-framed streams with
// valid sums whose frames say odd things.  The reader must read each to its
// verified trailer or throw ck::Error with status 3.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

#include "error.h"
#include "fuzz_input.h"
#include "fd.h"
#include "stream.h"
#include "stream_mutator.h"

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size, unsigned seed) {
  return ckfuzz::mutate_stream(data, size, max_size, seed);
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  int fd = ckfuzz::input_fd(data, size);
  try {
    ck::StreamReader r(fd, "fuzz");
    ck::pb::Frame f;
    std::vector<char> buf(2 * ck::kPageSize + 512);
    uint64_t n = 0;
    while (r.next(&f)) {
      while (r.payload_left() && (n % 3)) {
        size_t k = r.payload_left() < buf.size() ? r.payload_left() : buf.size();
        r.read_payload(buf.data(), k);
      }
      ++n;
    }
    if (r.trailer().frames() != n) abort();
  } catch (const ck::Error& e) {
    if (e.status() != ck::kBadInput) {
      std::fprintf(stderr, "unexpected status %d: %s\n", e.status(), e.what());
      abort();
    }
  }
  return 0;
}
