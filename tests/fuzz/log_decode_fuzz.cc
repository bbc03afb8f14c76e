// libFuzzer target: the log decoder (log_decode.cc), which turns a record of
// the logging engine (a format and raw argument slots) back into text, on
// the flusher thread or in a crash handler.  The slots are what a record in
// the ring holds; a record a crashing thread left half written, or a ring
// overwritten by a wild store, holds anything.  So the decoder must stay
// inside the record and the output buffer whatever the slots say: huge
// string lengths, widths, precisions, missing arguments.
// Input: one byte picks the format, one the output size, the rest are the
// record's argument bytes.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "log.h"
#include "log_impl.h"

namespace {

// Formats like the ones ck logs (any printf format the engine accepts).
const char* const kFormats[] = {
    "vma %#lx-%#lx",
    "pid %d: %s (%m)",
    "unable to read memory of pid %d at %#lx: %s",
    "%s",
    "%.*s|%-12s|%*d",
    "%5.2f %e %g %a %Lf",
    "%c%c%c %hhd %hd %lld %llu %zu %zd %jd %td",
    "%08x %-8X %+d % d %o %#o %p",
    "%%s %s %s %s %s %s %s %s",
    "%*.*s %.0s %.3s %10.4s",
    "plain text, no conversion",
    "%lu pages in %.3f ms (%.1f MiB/s)",
    "%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s",
    "%m %m %d",
    "%-*s:%*s",
    "%llx %p %s",
};
constexpr size_t kNumFormats = sizeof kFormats / sizeof kFormats[0];

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using ck::log::detail::RecHead;
  if (size < 2) return 0;
  const char* fmt = kFormats[data[0] % kNumFormats];
  size_t cap = 1 + data[1] * 4;
  data += 2;
  size -= 2;
  // The record as the ring holds it: header, slots, rounded to 8 bytes.
  size_t body = (size + 7) & ~size_t(7);
  std::vector<uint64_t> rec((sizeof(RecHead) + body) / 8);
  RecHead* h = reinterpret_cast<RecHead*>(rec.data());
  h->fmt = fmt;
  h->size = static_cast<uint32_t>(sizeof(RecHead) + body);
  h->err = 2;
  h->level = 2;
  std::memcpy(reinterpret_cast<char*>(rec.data()) + sizeof(RecHead), data, size);
  std::vector<char> out(cap);
  size_t n = ck::log::detail::decode_message(h, out.data(), cap);
  if (n >= cap) abort();  // one byte is kept for the NUL
  return 0;
}
