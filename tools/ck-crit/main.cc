// ck-crit: explore ck streams and image sets (decode, encode, show, info,
// sum, x, mem, args, env, diff, kinds).  Parses the command line only.
#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>

#include "crit.h"
#include "error.h"
#include "tool.h"

namespace {

bool is_number(const std::string& s) {
  if (s.empty() || s[0] == '-') return false;
  char* end = nullptr;
  errno = 0;
  std::strtoull(s.c_str(), &end, 0);
  return !errno && !*end;
}

uint64_t number(const std::string& s, const char* what) {
  if (!is_number(s)) ck::usage_error(ck::strf("%s '%s' is not a number", what, s.c_str()));
  return std::strtoull(s.c_str(), nullptr, 0);
}

uint32_t pid_of(const std::string& s, const char* what) {
  uint64_t p = number(s, what);
  if (p == 0 || p > 0x7fffffff) ck::usage_error(std::string(what) + " '" + s + "' is not a pid");
  return static_cast<uint32_t>(p);
}

bool is_dir(const std::string& s) {
  struct stat st;
  return ::stat(s.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ck-crit: explore ck streams and image sets"};
  ck::CommonOptions co;
  ck::add_common_options(app, co);
  app.require_subcommand(1);
  std::string dir, image, pid, addr, len;
  std::vector<std::string> pos, pids;
  crit::Request r;
  // IMAGE: -D DIR, or DIR as the first positional argument; neither (or
  // "-"): the stream on stdin.
  auto with_dir = [&](CLI::App* c) { c->add_option("-D,--dir", dir, "read the image set in DIR instead of a stream on stdin"); };
  auto with_image = [&](CLI::App* c) {
    with_dir(c);
    c->add_option("IMAGE", image, "image directory (or - for the stream on stdin)");
  };
  auto with_pids = [&](CLI::App* c) {
    c->add_option("-p,--pid", pids, "only these processes (repeat, or comma-separated)")->delimiter(',');
    c->add_flag("--json", r.filter.json, "JSON for jq instead of text");
  };
  auto* decode = app.add_subcommand("decode", "stream or image set to one JSON document on stdout");
  with_image(decode);
  auto* encode = app.add_subcommand("encode", "JSON (as decode writes it) on stdin to a stream on stdout");
  auto* show = app.add_subcommand("show", "readable summary: processes, threads, fds, VMAs, page counts");
  with_image(show);
  with_pids(show);
  std::vector<std::string> kinds_opt;
  show->add_option("--kind", kinds_opt, "--json: only frames of these kinds (process, thread, fd, file, mm, pages, ...)")->delimiter(',');
  auto* info = app.add_subcommand("info", "header and trailer facts; verifies the checksum");
  with_image(info);
  auto* sum = app.add_subcommand("sum", "FNV-1a 64 of an address range of a process's memory as the image holds it");
  with_image(sum);
  sum->add_option("--pid", pid, "process")->required();
  sum->add_option("--addr", addr, "start address (0x... or decimal)")->required();
  sum->add_option("--len", len, "length in bytes")->required();
  auto* x = app.add_subcommand("x", "explore: [IMAGE] ps|fds|mems|rss|sk|cg");
  with_dir(x);
  with_pids(x);
  x->add_option("ARGS", pos, "[IMAGE] VIEW")->required();
  auto* mem = app.add_subcommand("mem", "bytes of a process's memory as the image holds them: [IMAGE] -p PID ADDR [LEN]");
  with_dir(mem);
  mem->add_option("-p,--pid", pid, "process (default: the root)");
  mem->add_flag("--raw", r.raw, "the bytes as they are instead of a hexdump");
  mem->add_option("ARGS", pos, "[IMAGE] ADDR [LEN] (LEN default 256)")->required();
  auto* args = app.add_subcommand("args", "a process's argv, read from its dumped memory");
  auto* env = app.add_subcommand("env", "a process's environment, read from its dumped memory");
  for (auto* c : {args, env}) {
    with_image(c);
    c->add_option("-p,--pid", pid, "process (default: the root)");
    c->add_flag("-0,--null", r.nul, "each string ended by a NUL byte (as /proc/PID/cmdline), not a newline");
  }
  auto* diff = app.add_subcommand("diff", "what differs between images A and B; exit 0 equal, 1 different, 2/3 trouble");
  diff->add_option("ARGS", pos, "A B: image directories (one of them may be - for a stream on stdin)");
  diff->add_option("--ignore", r.diff.ignore, "leave FIELD out too (Message.field, or pages, registers, rseq; repeat)");
  diff->add_flag("--no-default-ignores", r.diff.no_default_ignores, "compare what the default ignores leave out too");
  bool list_ignores = false;
  diff->add_flag("--list-ignores", list_ignores, "print the default ignores and exit");
  diff->add_option("--max", r.diff.max_lines, "print at most N differences (0: all)");
  bool markdown = false;
  auto* kinds = app.add_subcommand("kinds", "every resource kind ck knows, with its status (kinds.h; README's table)");
  kinds->add_flag("--markdown", markdown, "README's table of supported and refused resources");
  return ck::run_tool("ck-crit", app, co, argc, argv, [&] {
    if (!dir.empty() && !image.empty()) ck::usage_error("-D '" + dir + "' and IMAGE '" + image + "': name one image");
    r.dir = dir.empty() ? image : dir;
    r.markdown = markdown;
    for (const auto& p : pids) r.filter.pids.insert(pid_of(p, "--pid"));
    r.filter.kinds.insert(kinds_opt.begin(), kinds_opt.end());
    if (!pid.empty() && !sum->parsed()) r.pid = pid_of(pid, "--pid");
    if (kinds->parsed()) r.command = crit::Request::kKinds;
    else if (encode->parsed()) r.command = crit::Request::kEncode;
    else if (decode->parsed()) r.command = crit::Request::kDecode;
    else if (info->parsed()) r.command = crit::Request::kInfo;
    else if (sum->parsed()) {
      r.command = crit::Request::kSum;
      r.pid = pid_of(pid, "--pid");
      r.addr = number(addr, "--addr");
      r.len = number(len, "--len");
    } else if (x->parsed()) {
      r.command = crit::Request::kExplore;
      if (pos.size() > 2) ck::usage_error("x: too many arguments (want [IMAGE] VIEW)");
      if (pos.size() == 2) {
        if (!dir.empty()) ck::usage_error("x: -D '" + dir + "' and IMAGE '" + pos[0] + "': name one image");
        r.dir = pos[0];
      }
      r.what = pos.back();
    } else if (mem->parsed()) {
      r.command = crit::Request::kMem;
      // [IMAGE] ADDR [LEN]: a first argument that is no number (or is a
      // directory) is the image.
      size_t at = 0;
      if (dir.empty() && (pos.size() == 3 || !is_number(pos[0]) || is_dir(pos[0]))) r.dir = pos[at++];
      if (at >= pos.size()) ck::usage_error("mem: ADDR is missing");
      if (pos.size() - at > 2) ck::usage_error("mem: too many arguments (want [IMAGE] ADDR [LEN])");
      r.addr = number(pos[at], "ADDR");
      r.len = at + 1 < pos.size() ? number(pos[at + 1], "LEN") : 256;
    } else if (args->parsed()) r.command = crit::Request::kArgs;
    else if (env->parsed()) r.command = crit::Request::kEnv;
    else if (diff->parsed()) {
      r.command = crit::Request::kDiff;
      if (list_ignores) {
        std::fputs(crit::diff_default_ignores().c_str(), stdout);
        return 0;
      }
      if (pos.size() != 2) ck::usage_error("diff: want two images, A and B");
      r.dir = pos[0];
      r.dir2 = pos[1];
    } else r.command = crit::Request::kShow;  // show->parsed()
    return crit::run(r);
  });
}
