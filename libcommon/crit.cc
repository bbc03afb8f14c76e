// crit::run: dispatches one ck-crit request to its subcommand.
#include "crit.h"

#include <cstdio>

#include "error.h"
#include "kinds.h"

namespace crit {

int run(const Request& r) {
  switch (r.command) {
    case Request::kKinds:
      return std::fputs((r.markdown ? ck::kinds_markdown() : ck::kinds_list()).c_str(), stdout) < 0 ? 1 : 0;
    case Request::kEncode:
      return encode(0, 1);
    case Request::kDiff:
      // 1 means "different" here, as for diff(1) and cmp(1): trouble is 2
      // (or 3 for bad input), never 1.
      try {
        return diff(r.dir, r.dir2, r.diff);
      } catch (const ck::Error& e) {
        if (e.status() == ck::kFail) throw ck::Error(ck::kUsage, e.what());
        throw;
      } catch (const std::exception& e) {
        throw ck::Error(ck::kUsage, e.what());
      }
    default:
      break;
  }
  auto src = open_source(r.dir);
  switch (r.command) {
    case Request::kDecode: return decode(*src);
    case Request::kInfo: return info(*src);
    case Request::kSum: return sum(*src, r.pid, r.addr, r.len);
    case Request::kExplore: return explore(*src, r.what, r.filter);
    case Request::kMem: return mem(*src, r.pid, r.addr, r.len, r.raw);
    case Request::kArgs: return args(*src, r.pid, false, r.nul);
    case Request::kEnv: return args(*src, r.pid, true, r.nul);
    default:
      if (r.filter.json) return show_json(*src, r.filter);
      if (!r.filter.kinds.empty()) ck::usage_error("show: --kind filters the frames of --json only");
      return show(*src, r.filter);
  }
}

}  // namespace crit
