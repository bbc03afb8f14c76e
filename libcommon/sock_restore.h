// Restore side of sockets, in ck-restore, in three steps:
//   open_all()  before the tasks are forked, in the restorer: every socket
//               created, bound, listening, connected (listeners first), so
//               that the file restorer installs them like any file;
//   fill()      once every task exists (credentials name live pids, owners
//               need their process): queues refilled with their fds in
//               flight and credentials, shutdowns, options;
//   finish()    just before the tree runs: TCP sockets leave repair mode,
//               the network locks are lifted.
// Until finish() the restorer keeps its own duplicate of every socket; the
// destructor closes them (and, with unlock_on_failure, lifts the locks).
// Messages name the socket: "unable to bind socket fd 3 of pid 42 (unix
// stream) to '/tmp/s': Address already in use".
#pragma once
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ck.pb.h"
#include "fd.h"

namespace ck {

class SockRestorer {
 public:
  SockRestorer();
  ~SockRestorer();
  SockRestorer(const SockRestorer&) = delete;
  SockRestorer& operator=(const SockRestorer&) = delete;

  // Every Socket and NetLock frame of the image (status 3 for state ck does
  // not rebuild, by name).
  void add(const pb::Socket& s);
  void add_lock(const pb::NetLock& l) { locks_.push_back(l); }
  bool has(uint32_t desc) const { return by_desc_.count(desc) != 0; }
  bool empty() const { return socks_.empty(); }
  void set_unlock_on_failure(bool v) { unlock_on_failure_ = v; }

  // descs: every description of the image; fd_of(id): the restorer's fd of
  // a description that is not a socket (for fds in flight); who(id): "fd 3
  // of pid 42".  Returns a new fd for every socket description, which the
  // caller owns.
  std::map<uint32_t, int> open_all(const std::vector<pb::FileDesc>& descs, const std::function<int(uint32_t)>& fd_of,
                                   const std::function<std::string(uint32_t)>& who);
  // outer(pid): the pid as the restorer sees it (--pidns).
  void fill(const std::function<pid_t(pid_t)>& outer);
  void finish();

 private:
  struct Sock;
  Sock& create(Sock& s);
  void open_unix();
  void open_inet();
  void fill_unix(Sock& s, const std::function<pid_t(pid_t)>& outer);
  Sock* by_ino(uint64_t ino);
  Sock* by_name(const std::string& name, uint64_t not_ino);

  std::vector<std::unique_ptr<Sock>> socks_;
  std::map<uint32_t, Sock*> by_desc_;
  std::vector<pb::NetLock> locks_;
  std::map<uint32_t, ScopedFd> in_flight_;  // desc id -> our fd of a file sent in flight
  std::vector<std::string> unlink_after_;   // names of deleted sockets, removed once all connected
  std::string own_lock_;  // the lock ck-restore put up itself while it rebuilds connections
  bool unlock_on_failure_ = false;
  bool finished_ = false;
};

}  // namespace ck
