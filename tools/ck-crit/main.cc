// ck-crit: explore ck streams and image sets (decode, encode, show, info, sum).
#include <cerrno>
#include <cstdlib>

#include "crit.h"
#include "error.h"
#include "tool.h"

namespace {

uint64_t number(const std::string& s, const char* what) {
  if (s.empty() || s[0] == '-') ck::usage_error(ck::strf("%s '%s' is not a number", what, s.c_str()));
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(s.c_str(), &end, 0);
  if (errno || *end) ck::usage_error(ck::strf("%s '%s' is not a number", what, s.c_str()));
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ck-crit: explore ck streams and image sets"};
  ck::CommonOptions co;
  ck::add_common_options(app, co);
  app.require_subcommand(1);
  std::string dir, pid, addr, len;
  auto with_dir = [&](CLI::App* c) { c->add_option("-D,--dir", dir, "read the image set in DIR instead of a stream on stdin"); };
  auto* decode = app.add_subcommand("decode", "stream or image set to one JSON document on stdout");
  with_dir(decode);
  auto* encode = app.add_subcommand("encode", "JSON (as decode writes it) on stdin to a stream on stdout");
  auto* show = app.add_subcommand("show", "readable summary: processes, threads, fds, VMAs, page counts");
  with_dir(show);
  auto* info = app.add_subcommand("info", "header and trailer facts; verifies the checksum");
  with_dir(info);
  auto* sum = app.add_subcommand("sum", "FNV-1a 64 of an address range of a process's memory as the image holds it");
  with_dir(sum);
  sum->add_option("--pid", pid, "process")->required();
  sum->add_option("--addr", addr, "start address (0x... or decimal)")->required();
  sum->add_option("--len", len, "length in bytes")->required();
  bool markdown = false;
  auto* kinds = app.add_subcommand("kinds", "every resource kind ck knows, with its status (kinds.h; README's table)");
  kinds->add_flag("--markdown", markdown, "README's table of supported and refused resources");
  return ck::run_tool("ck-crit", app, co, argc, argv, [&] {
    crit::Request r;
    r.dir = dir;
    r.markdown = markdown;
    if (kinds->parsed()) r.command = crit::Request::kKinds;
    else if (encode->parsed()) r.command = crit::Request::kEncode;
    else if (decode->parsed()) r.command = crit::Request::kDecode;
    else if (info->parsed()) r.command = crit::Request::kInfo;
    else if (sum->parsed()) {
      r.command = crit::Request::kSum;
      uint64_t p = number(pid, "--pid");
      r.addr = number(addr, "--addr");
      r.len = number(len, "--len");
      if (p == 0 || p > 0x7fffffff) ck::usage_error("--pid '" + pid + "' is not a pid");
      r.pid = static_cast<uint32_t>(p);
    } else r.command = crit::Request::kShow;  // show->parsed()
    return crit::run(r);
  });
}
