// ck-store's one entry point (tools/ck-store/main.cc parses into it).
#pragma once
#include <string>

namespace ck {

struct StoreOptions {
  enum Cmd { kPut, kGet, kLs } cmd = kLs;
  std::string dir;
  std::string parent;       // put: the image this round goes on
  std::string name;         // the in-memory store service (not supported yet)
  bool force = false;       // put: replace an image already in dir
  bool check_only = false;  // put --check-dir: check dir as put would, read nothing
};

// put: reads a stream on stdin into dir through the restorability check
// (store_put), and prints the round id of a pre-dump round (what ck-memread
// --since takes).  get: writes dir's stream to stdout.  ls: lists dir.
// Returns the exit status or throws Error.
int run_store(const StoreOptions& o);

}  // namespace ck
