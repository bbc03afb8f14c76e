#include "error.h"

#include <cstdarg>
#include <cstdio>

namespace ck {

void throw_errno(const std::string& what, int err) {
  throw Error(kFail, what + ": " + std::strerror(err));
}
void fail(const std::string& what) { throw Error(kFail, what); }
void bad_input(const std::string& what) { throw Error(kBadInput, what); }
void usage_error(const std::string& what) { throw Error(kUsage, what); }

std::string strf(const char* fmt, ...) {
  char small[256];
  va_list ap;
  va_start(ap, fmt);
  int n = std::vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  if (n < 0) return {};
  if (static_cast<size_t>(n) < sizeof small) return std::string(small, n);
  std::string out(n, '\0');
  va_start(ap, fmt);
  std::vsnprintf(out.data(), n + 1, fmt, ap);
  va_end(ap);
  return out;
}

}  // namespace ck
