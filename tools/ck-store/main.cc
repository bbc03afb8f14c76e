// ck-store: puts a stream into an image directory, gets it back, lists it.
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <map>

#include "error.h"
#include "image.h"
#include "stream.h"
#include "tool.h"

namespace {

struct Options {
  std::string dir;
  std::string parent;
  std::string name;
  bool force = false;
  bool check_only = false;
};

void need_dir(const Options& o, const char* what) {
  if (!o.name.empty()) ck::usage_error("--name (the in-memory store service) is not supported yet");
  if (o.dir.empty()) ck::usage_error(ck::strf("%s needs -D DIR (the in-memory store service is not supported yet)", what));
}

struct TaskSum {
  uint64_t frames = 0, runs = 0, pages = 0, zero_pages = 0, bytes = 0;
  std::string comm;
};

int list(const std::string& dir) {
  ck::ImageSet im = ck::ImageSet::open(dir);
  std::map<uint32_t, TaskSum> tasks;
  ck::pb::Frame f;
  while (im.next(&f)) {
    TaskSum& t = tasks[f.pid()];
    ++t.frames;
    if (f.has_process()) t.comm = f.process().comm();
    if (f.has_pages()) {
      ++t.runs;
      (f.pages().has_payload() ? t.pages : t.zero_pages) += f.pages().npages();
      if (f.pages().has_payload()) t.bytes += uint64_t{f.pages().npages()} * ck::kPageSize;
    }
  }
  const auto& h = im.header();
  std::printf("image %s: format %u.%u, root pid %u, %" PRIu64 " frames, %" PRIu64 " page bytes%s\n", dir.c_str(),
              h.major(), h.minor(), h.root_pid(), im.trailer().frames(), im.trailer().payload_bytes(),
              h.incremental() ? ", incremental" : "");
  for (size_t i = 1; i < im.chain_length(); ++i) std::printf("parent %zu: %s\n", i, im.chain_dir(i).c_str());
  std::printf("%8s %-16s %8s %8s %10s %10s %14s\n", "PID", "COMM", "FRAMES", "RUNS", "PAGES", "ZERO", "PAGE_BYTES");
  for (auto& [pid, t] : tasks)
    std::printf("%8u %-16s %8" PRIu64 " %8" PRIu64 " %10" PRIu64 " %10" PRIu64 " %14" PRIu64 "\n", pid,
                pid == 0 ? "(stream)" : (t.comm.empty() ? "-" : t.comm.c_str()), t.frames, t.runs, t.pages,
                t.zero_pages, t.bytes);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ck-store: the image store: put a stream into an image directory, get it back, list it"};
  ck::CommonOptions co;
  ck::add_common_options(app, co);
  app.require_subcommand(1);
  Options o;
  auto* put = app.add_subcommand("put", "read a stream on stdin, store it in DIR");
  put->add_option("-D,--dir", o.dir, "image directory (created if missing)");
  put->add_flag("-f,--force", o.force, "replace an image already in DIR");
  put->add_flag("--check-dir", o.check_only, "only check that DIR can take an image (as put would), read nothing");
  put->add_option("--parent", o.parent, "store a pre-dump round on top of the image in PREV (an incremental image set)");
  put->add_option("--name", o.name, "store in the in-memory store service (not supported yet)");
  auto* get = app.add_subcommand("get", "write the stream stored in DIR to stdout");
  get->add_option("-D,--dir", o.dir, "image directory");
  get->add_option("--name", o.name, "get from the in-memory store service (not supported yet)");
  auto* ls = app.add_subcommand("ls", "one line per task of the image in DIR");
  ls->add_option("-D,--dir", o.dir, "image directory");
  ls->add_option("--name", o.name, "list the in-memory store service (not supported yet)");
  return ck::run_tool("ck-store", app, co, argc, argv, [&] {
    if (put->parsed()) {
      need_dir(o, "put");
      if (o.check_only) {
        ck::check_image_dir(o.dir, o.force);
        return 0;
      }
      if (isatty(0)) ck::usage_error("refusing to read a stream from a terminal (pipe one in)");
      ck::store_put(0, o.dir, o.force, o.parent);
      return 0;
    }
    if (get->parsed()) {
      need_dir(o, "get");
      ck::image_to_stream(o.dir, 1);
      return 0;
    }
    need_dir(o, "ls");
    return list(o.dir);
  });
}
