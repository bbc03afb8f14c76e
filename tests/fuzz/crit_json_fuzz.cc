// libFuzzer target: ck-crit encode's JSON reader (crit_json.cc), which turns
// the JSON that ck-crit decode prints (or a person edited) back into a
// stream.  Any input must give a stream or ck::Error with status 3, never a
// crash, a hang or an allocation without bound.  Seeds: decodes of real
// streams (tests/fuzz/run makes them).
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "crit.h"
#include "error.h"
#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static int null = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  int fd = ckfuzz::input_fd(data, size);
  try {
    crit::encode(fd, null);
  } catch (const ck::Error& e) {
    if (e.status() != ck::kBadInput) {
      std::fprintf(stderr, "unexpected status %d: %s\n", e.status(), e.what());
      abort();
    }
  }
  return 0;
}
