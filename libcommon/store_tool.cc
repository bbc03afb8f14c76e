// ck-store, the tool: put a stream into an image directory, get it back,
// list it.  See man/ck-store.1.
#include "store_tool.h"

#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <map>

#include "error.h"
#include "image.h"
#include "stream.h"

namespace ck {
namespace {

void need_dir(const StoreOptions& o, const char* what) {
  if (!o.name.empty()) usage_error("--name (the in-memory store service) is not supported yet");
  if (o.dir.empty()) usage_error(strf("%s needs -D DIR (the in-memory store service is not supported yet)", what));
}

struct TaskSum {
  uint64_t frames = 0, runs = 0, pages = 0, zero_pages = 0, bytes = 0;
  std::string comm;
};

// One line for the image as ck-restore and ck-crit read it (a chain as the
// one image it makes: its own counts, never "incremental"), one per task.
int list(const std::string& dir) {
  ImageSet im = ImageSet::open(dir);
  std::map<uint32_t, TaskSum> tasks;
  pb::Frame f;
  pb::Header h;
  uint64_t frames = 0, bytes = 0;
  while (im.next(&f)) {
    ++frames;
    if (f.has_header()) h = f.header();
    TaskSum& t = tasks[f.pid()];
    ++t.frames;
    if (f.has_process()) t.comm = f.process().comm();
    if (f.has_pages()) {
      ++t.runs;
      (f.pages().has_payload() ? t.pages : t.zero_pages) += f.pages().npages();
      if (f.pages().has_payload()) t.bytes += uint64_t{f.pages().npages()} * kPageSize;
    }
  }
  for (auto& [pid, t] : tasks) bytes += t.bytes;
  std::string round;
  if (names_round(h)) round = ", " + round_name(h);
  if (im.chain_length() > 1) round += strf(", read through a chain of %zu images", im.chain_length());
  std::printf("image %s: format %u.%u, root pid %u%s, %" PRIu64 " frames, %" PRIu64 " page bytes%s\n", dir.c_str(),
              h.major(), h.minor(), h.root_pid(), round.c_str(), frames, bytes,
              h.incremental() ? ", incremental" : "");
  for (size_t i = 1; i < im.chain_length(); ++i)
    std::printf("parent %zu: %s (%s)\n", i, im.chain_dir(i).c_str(), round_name(im.chain_header(i)).c_str());
  std::printf("%8s %-16s %8s %8s %10s %10s %14s\n", "PID", "COMM", "FRAMES", "RUNS", "PAGES", "ZERO", "PAGE_BYTES");
  for (auto& [pid, t] : tasks)
    std::printf("%8u %-16s %8" PRIu64 " %8" PRIu64 " %10" PRIu64 " %10" PRIu64 " %14" PRIu64 "\n", pid,
                pid == 0 ? "(stream)" : (t.comm.empty() ? "-" : t.comm.c_str()), t.frames, t.runs, t.pages,
                t.zero_pages, t.bytes);
  return 0;
}

}  // namespace

int run_store(const StoreOptions& o) {
  switch (o.cmd) {
    case StoreOptions::kPut: {
      need_dir(o, "put");
      if (isatty(0)) usage_error("refusing to read a stream from a terminal (pipe one in)");
      StreamReader r(0, "stdin");
      pb::Header h = stream_to_image(r, o.dir, o.force, o.parent);
      // A pre-dump round: its id, for the next round's --since.
      if (names_round(h)) {
        std::printf("%s\n", round_id(h).c_str());
        if (std::fflush(stdout) != 0) throw_errno("unable to print the round id");
      }
      return 0;
    }
    case StoreOptions::kGet:
      need_dir(o, "get");
      image_to_stream(o.dir, 1);
      return 0;
    case StoreOptions::kLs:
      need_dir(o, "ls");
      return list(o.dir);
  }
  return 2;
}

}  // namespace ck
