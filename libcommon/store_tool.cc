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
#include <cstdlib>
#include <map>

#include "error.h"
#include "image.h"
#include "restorable.h"
#include "store_proto.h"
#include "store_service.h"
#include "stream.h"

namespace ck {
namespace {

// -D DIR or the service: one of them.
bool use_dir(const StoreOptions& o) {
  if (!o.dir.empty() && !o.name.empty()) usage_error("-D DIR and --name NAME name two different stores: give one");
  if (!o.dir.empty() && !o.socket.empty()) usage_error("--socket is for the store service, not for -D DIR");
  return !o.dir.empty();
}

uint64_t parse_size(const std::string& s) {
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  uint64_t mul = 1;
  if (end && *end) {
    switch (*end) {
      case 'K': case 'k': mul = 1ull << 10; break;
      case 'M': case 'm': mul = 1ull << 20; break;
      case 'G': case 'g': mul = 1ull << 30; break;
      case 'T': case 't': mul = 1ull << 40; break;
      default: mul = 0;
    }
    ++end;
  }
  if (s.empty() || s[0] == '-' || errno || !mul || (end && *end) || v > UINT64_MAX / mul)
    usage_error("--max-memory '" + s + "' is not a size (bytes, or a number with K, M, G or T)");
  return v * mul;
}

void print_line(const std::string& s) {
  std::printf("%s\n", s.c_str());
  if (std::fflush(stdout) != 0) throw_errno("unable to write to stdout");
}

int list_service(const StoreOptions& o) {
  const std::string path = store_socket_path(o.socket);
  pb::StoreReply r = store_client_list(path, o.name);
  std::string cap = r.max_memory() ? strf(", --max-memory %" PRIu64, r.max_memory()) : "";
  std::printf("store service '%s' (pid %u): %d image%s, %" PRIu64 " logical page bytes, %" PRIu64 " held%s\n",
              path.c_str(), r.pid(), r.images_size(), r.images_size() == 1 ? "" : "s", r.logical_bytes(),
              r.held_bytes(), cap.c_str());
  std::printf("%-24s %8s %8s %14s %14s %14s %14s\n", "NAME", "ROOT", "FRAMES", "PAGE_BYTES", "ZERO_BYTES", "HELD_BYTES",
              "OWN_BYTES");
  for (const auto& i : r.images())
    std::printf("%-24s %8u %8" PRIu64 " %14" PRIu64 " %14" PRIu64 " %14" PRIu64 " %14" PRIu64 "\n", i.name().c_str(),
                i.root_pid(), i.frames(), i.logical_bytes(), i.zero_bytes(), i.held_bytes(), i.own_bytes());
  if (std::fflush(stdout) != 0) throw_errno("unable to write to stdout");
  return 0;
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

pb::Header store_put_checked(int in_fd, const std::function<pb::Header(StreamReader&)>& sink) {
  StreamReader r(in_fd, "stdin");
  RestoreCheck check = RestoreCheck::for_sink();
  r.set_inspector(&check);
  return sink(r);
}

pb::Header store_put(int in_fd, const std::string& dir, bool replace, const std::string& parent) {
  return store_put_checked(in_fd, [&](StreamReader& r) { return stream_to_image(r, dir, replace, parent); });
}

int run_store(const StoreOptions& o) {
  switch (o.cmd) {
    case StoreOptions::kPut: {
      if (!use_dir(o)) {
        if (o.check_only) usage_error("--check-dir needs -D DIR");
        if (!o.parent.empty())
          usage_error("--parent with the store service is not supported yet (store pre-dump rounds with -D)");
        if (isatty(0)) usage_error("refusing to read a stream from a terminal (pipe one in)");
        pb::StoreReply r = store_client_put(store_socket_path(o.socket), o.name, o.force, 0, o.compress ? 1 : 0);
        if (o.name.empty()) print_line(r.name());
        if (r.images_size() && !r.images(0).round().empty()) print_line(r.images(0).round());
        return 0;
      }
      if (o.compress) usage_error("--compress is for the store service, not for -D DIR");
      if (o.check_only) {
        check_image_dir(o.dir, o.force);
        return 0;
      }
      if (isatty(0)) usage_error("refusing to read a stream from a terminal (pipe one in)");
      pb::Header h = store_put(0, o.dir, o.force, o.parent);
      // A pre-dump round: its id, for the next round's --since.
      if (names_round(h)) print_line(round_id(h));
      return 0;
    }
    case StoreOptions::kGet:
      if (use_dir(o)) {
        image_to_stream(o.dir, 1);
        return 0;
      }
      if (o.name.empty()) usage_error("get needs -D DIR or --name NAME (an image of the store service)");
      store_client_get(store_socket_path(o.socket), o.name, 1);
      return 0;
    case StoreOptions::kLs:
      if (use_dir(o)) return list(o.dir);
      return list_service(o);
    case StoreOptions::kRm:
      store_client_remove(store_socket_path(o.socket), o.name);
      return 0;
    case StoreOptions::kServe: {
      ServeOptions so;
      so.socket = o.socket;
      so.ready_fd = o.ready_fd;
      if (!o.max_memory.empty()) so.max_memory = parse_size(o.max_memory);
      if (o.ready_fd >= 0 && fcntl(o.ready_fd, F_GETFD) < 0)
        usage_error(strf("--ready-fd %d: no such open fd", o.ready_fd));
      return store_serve(so);
    }
  }
  return 2;
}

}  // namespace ck
