// Inside ck-sockdump: what the driver (sock_tool.cc) hands the family
// rooms (sock_unix.cc, sock_inet.cc).  Not an API.
#pragma once
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "ck.pb.h"
#include "fd.h"
#include "sock.h"

namespace ck {

struct SockItem {
  uint32_t desc = 0;
  pid_t pid = 0;  // an fd of the tree that holds it; 0: only in flight
  int fd = -1;
  ScopedFd sk;    // our duplicate
  uint64_t ino = 0;
  pb::Socket rec;
  std::string who;  // "socket fd 7 of pid 4242 (unix stream)"
};

struct SockDumpCtx {
  explicit SockDumpCtx(UndoLog& u) : undo(u) {}
  UndoLog& undo;
  pid_t root = 0;
  // Describes a file received in flight (SCM_RIGHTS peeked out of a unix
  // queue, `fd` ours): returns its FileDesc id, a description of the tree
  // when it is one, else a new description (and, for a socket, a new item
  // that the driver dumps too).
  std::function<uint32_t(int fd, const std::string& where)> in_flight;
  // --external unix:INO / unix:NAME: peers outside the tree that are kept.
  std::set<uint64_t> external_ino;
  std::set<std::string> external_name;
  bool external_all = false;
  // Every socket inode of the tree (any family), to tell peers inside from
  // peers outside.
  std::set<uint64_t> tree_inodes;
  // The network lock, one per network namespace (by cookie).
  std::vector<pb::NetLock> locks;
};

// Each fills item->rec (opts, family part) for its items; throws naming
// the socket.  check_*: refuses by name without changing anything.
void check_unix(std::vector<SockItem*>& items, SockDumpCtx& ctx);
void dump_unix(std::vector<SockItem*>& items, SockDumpCtx& ctx);
void check_inet(std::vector<SockItem*>& items, SockDumpCtx& ctx);
void dump_inet(std::vector<SockItem*>& items, SockDumpCtx& ctx);

}  // namespace ck
