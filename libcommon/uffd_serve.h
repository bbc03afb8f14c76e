// ck-uffd-serve: serves the page faults of a lazily restored tree from a
// page source (page_source.h), on libuv's event loop.
#pragma once
#include <string>
#include <vector>

namespace ck {

struct UffdServeOptions {
  std::string dir;                 // image set (a pre-dump chain included)
  std::vector<std::string> uffds;  // "PID:FD": fd FD (inherited) is the uffd of image pid PID
  bool progress = false;           // a line on stderr as runs go in
};

// Returns 0 once every page of the image is in (or its task is gone).
int uffd_serve(const UffdServeOptions& o);

}  // namespace ck
