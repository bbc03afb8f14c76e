// ck-store's one entry point (tools/ck-store/main.cc parses into it).
#pragma once
#include <string>

namespace ck {

struct StoreOptions {
  enum Cmd { kPut, kGet, kLs, kRm, kServe } cmd = kLs;
  std::string dir;          // an image directory; empty: the store service
  std::string parent;       // put: the image this round goes on
  std::string name;         // an image in the store service
  bool force = false;       // put: replace an image already in dir (or of that name)
  bool check_only = false;  // put --check-dir: check dir as put would, read nothing
  bool compress = false;    // put: zstd on the wire to the service
  std::string socket;       // the service's socket (empty: $CK_STORE_SOCKET, then the default)
  int ready_fd = -1;        // serve: say "PID\n" here once listening
  std::string max_memory;   // serve: "512M", "4G", bytes (empty: no cap)
};

// put: reads a stream on stdin into dir through the restorability check
// (store_put), or into the store service (starting one if none runs), and
// prints the round id of a pre-dump round (what ck-memread --since takes);
// into the service with no --name, first the name the image got.  get:
// writes dir's (or the service's image's) stream to stdout.  ls: lists dir,
// or the caller's images in the service.  rm: removes an image from the
// service.  serve: store_serve.  Returns the exit status or throws Error.
int run_store(const StoreOptions& o);

}  // namespace ck
