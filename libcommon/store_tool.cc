// ck-store, the tool: put a stream into an image directory, get it back,
// list it.  See man/ck-store.1.  A put goes through the restorability check,
// so that a dump ck-restore would refuse fails here, before anything is
// committed (and, under ck-freeze, before the tree is killed).
#include "store_tool.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <map>

#include "error.h"
#include "image.h"
#include "restorable.h"
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

void check_image_dir(const std::string& dir, bool replace) {
  struct stat st;
  if (::stat(dir.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) fail(strf("unable to use '%s' as an image directory: Not a directory", dir.c_str()));
    const std::string m = dir + "/" + kManifestFile;
    if (!replace && ::lstat(m.c_str(), &st) == 0) fail(strf("'%s' already holds an image (--force replaces it)", dir.c_str()));
    if (::access(dir.c_str(), W_OK | X_OK) != 0) throw_errno("unable to write into image directory '" + dir + "'");
    return;
  }
  if (errno != ENOENT) throw_errno("unable to use '" + dir + "' as an image directory");
  std::string parent = dir.substr(0, dir.find_last_not_of('/') + 1);
  size_t slash = parent.rfind('/');
  parent = slash == std::string::npos ? "." : slash == 0 ? "/" : parent.substr(0, slash);
  if (::access(parent.c_str(), W_OK | X_OK) != 0) throw_errno("unable to create image directory '" + dir + "'");
}

pb::Header store_put(int in_fd, const std::string& dir, bool replace, const std::string& parent) {
  StreamReader r(in_fd, "stdin");
  RestoreCheck check = RestoreCheck::for_sink();
  r.set_inspector(&check);
  return stream_to_image(r, dir, replace, parent);
}

int run_store(const StoreOptions& o) {
  switch (o.cmd) {
    case StoreOptions::kPut: {
      need_dir(o, "put");
      if (o.check_only) {
        check_image_dir(o.dir, o.force);
        return 0;
      }
      if (isatty(0)) usage_error("refusing to read a stream from a terminal (pipe one in)");
      pb::Header h = store_put(0, o.dir, o.force, o.parent);
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
