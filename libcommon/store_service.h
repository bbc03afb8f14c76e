// The in-memory store service, `ck-store serve` (see man/ck-store.1), and
// what its clients share.  The service holds images in its own memory,
// deduplicated as they arrive:
//  - a page of zeros is never held (it comes back as zeros);
//  - a page whose bytes equal a page already held for the same uid (in the
//    same process, another process, another image) is held once, with a
//    reference count; equality is decided by comparing the bytes (a ck64 of
//    the page only picks the candidates);
//  - pages are never shared between uids (the client's SO_PEERCRED uid);
//    each uid sees, reads and removes only its own images;
//  - `rm` drops the image's references; a page goes back to the kernel
//    when none is left.
// A put becomes visible only once its whole stream was read and verified
// (trailer, digests, the restorability check of ck-store put -D); a put that
// fails, is cut short or would pass --max-memory is dropped whole.
//
// The service runs on libuv's event loop: the loop accepts connections and
// handles SIGTERM/SIGINT; each connection is one request, served by a
// thread of its own (a put reads a stream at the pace of its writer and
// must not hold up the others).  The images live and die with the process:
// a service restarted holds none.
//
// Protocol: store_proto.h.
#pragma once
#include <cstdint>
#include <string>

namespace ck {

struct ServeOptions {
  std::string socket;       // empty: store_socket_path("")
  int ready_fd = -1;        // write "PID\n" here once listening, then close it
  uint64_t max_memory = 0;  // page bytes the service may hold (0: no cap)
};

// Listens on o.socket (or on the socket systemd passed, LISTEN_FDS=1),
// says it is ready (ready_fd, and sd_notify READY=1 when NOTIFY_SOCKET is
// set), serves until SIGTERM or SIGINT, then removes the socket it created
// and ends the process with status 0 (sessions still running end with it).
// Throws Error when it cannot listen (another service already listens on
// the path: status 1).
int store_serve(const ServeOptions& o);

}  // namespace ck
