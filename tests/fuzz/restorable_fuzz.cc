// libFuzzer target: the restorability check (restorable.h), the code that
// decides at every sink and in ck-restore whether an image may be used.
// Inputs are streams under structure-aware mutation, so the frames are
// well framed and say odd things: pids without processes, cycles of
// parents, page runs outside their layouts, kinds out of range.  Every
// frame the reader accepts goes through both flavours of the check; each
// must accept, refuse (status 1) or call the stream bad (status 3), and
// nothing else: another exception or a crash is a bug.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <vector>

#include "error.h"
#include "fd.h"
#include "restorable.h"
#include "stream.h"
#include "stream_mutator.h"

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size, unsigned seed) {
  return ckfuzz::mutate_stream(data, size, max_size, seed);
}

namespace {

// Runs one check over the frames; true if it got to the end.
template <typename Check>
void run_check(Check&& check, const std::vector<ck::pb::Frame>& frames) {
  try {
    for (auto& f : frames) check.frame(f);
    check.end();
  } catch (const ck::Error& e) {
    if (e.status() != ck::kFail && e.status() != ck::kBadInput) {
      std::fprintf(stderr, "unexpected status %d: %s\n", e.status(), e.what());
      abort();
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "not a ck::Error: %s\n", e.what());
    abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static int fd = memfd_create("fuzz", 0);
  if (fd < 0) abort();
  if (ftruncate(fd, 0) != 0 || lseek(fd, 0, SEEK_SET) != 0) abort();
  if (size) ck::write_full(fd, data, size);
  lseek(fd, 0, SEEK_SET);
  std::vector<ck::pb::Frame> frames;
  try {
    ck::StreamReader r(fd, "fuzz");
    ck::pb::Frame f;
    while (r.next(&f)) frames.push_back(f);  // payloads are skipped by next()
  } catch (const ck::Error& e) {
    if (e.status() != ck::kBadInput) abort();
    // what was read before the cut is still a prefix a check must survive
  }
  run_check(ck::RestoreCheck::for_sink(), frames);
  ck::RestoreEnv env;
  env.shell_job = frames.size() & 1;
  env.inherited.insert("pipe:[1]");
  run_check(ck::RestoreCheck::for_restore(env), frames);
  return 0;
}
