// crit::run: dispatches one ck-crit request to its subcommand.
#include "crit.h"

#include <cstdio>

#include "kinds.h"

namespace crit {

int run(const Request& r) {
  switch (r.command) {
    case Request::kKinds:
      return std::fputs((r.markdown ? ck::kinds_markdown() : ck::kinds_list()).c_str(), stdout) < 0 ? 1 : 0;
    case Request::kEncode:
      return encode(0, 1);
    default:
      break;
  }
  auto src = open_source(r.dir);
  switch (r.command) {
    case Request::kDecode: return decode(*src);
    case Request::kInfo: return info(*src);
    case Request::kSum: return sum(*src, r.pid, r.addr, r.len);
    default: return show(*src);
  }
}

}  // namespace crit
