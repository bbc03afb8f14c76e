// Inside the socket rooms: what the driver (sock_tool.cc) hands the family
// rooms (sock_unix.cc, sock_inet.cc, sock_tcp.cc, sock_udp.cc) at dump
// time, and what the restorer (sock_restore.cc) asks of the inet ones.
// Not an API.
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

namespace google::protobuf {
class Message;
}

namespace ck {

struct SockItem {
  uint32_t desc = 0;
  pid_t pid = 0;  // an fd of the tree that holds it; 0: only in flight
  int fd = -1;
  ScopedFd sk;    // our duplicate
  uint64_t ino = 0;
  pb::Socket rec;
  std::string who;  // "socket fd 7 of pid 4242 (unix stream)"
  bool emitted = false;  // its frame is written (and rec cleared)
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
  // Writes the frame of a socket that is done (so that the queues of many
  // sockets are not all held at once) and clears its record.
  std::function<void(SockItem& it)> emit;
  // --external unix:INO / unix:NAME: peers outside the tree that are kept.
  std::set<uint64_t> external_ino;
  std::set<std::string> external_name;
  bool external_all = false;
  // Every socket inode of the tree (any family), to tell peers inside from
  // peers outside.
  std::set<uint64_t> tree_inodes;
  // The network locks made (one per network namespace and batch).
  std::vector<pb::NetLock> locks;
};

// Each fills item->rec (opts, family part) for its items; throws naming
// the socket.  check_*: refuses by name without changing anything.
void check_unix(std::vector<SockItem*>& items, SockDumpCtx& ctx);
void dump_unix(std::vector<SockItem*>& items, SockDumpCtx& ctx);
void check_inet(std::vector<SockItem*>& items, SockDumpCtx& ctx);
void dump_inet(std::vector<SockItem*>& items, SockDumpCtx& ctx);

// ---- inside the inet rooms ----------------------------------------------------------

// A table of integer options read and set through a message's fields (by
// name, proto2-style presence: a field is set when getsockopt answered).
struct IntOpt {
  int level, name;
  const char* field;
  int family;  // 0: any; AF_INET / AF_INET6: only sockets of that family
  bool dgram = false;  // only datagram sockets (multicast: a stream socket refuses it)
};
void dump_int_opts(int fd, int family, int type, const IntOpt* table, size_t n, google::protobuf::Message* m);
// Sets every recorded option whose value differs from what the socket has
// now (a fresh socket's).
void restore_int_opts(int fd, int family, int type, const IntOpt* table, size_t n, const google::protobuf::Message& m,
                      const std::string& who);

// sock_diag's view of inet sockets of one protocol in the namespace of
// sock_fd, by inode (one dump of the whole table per namespace).
struct InetDiag {
  uint32_t state = 0, shutdown = 0, rqueue = 0, wqueue = 0;
};
const InetDiag* inet_diag(int sock_fd, int family, int protocol, uint64_t ino);

void check_tcp(SockItem& it, SockDumpCtx& ctx);
void dump_tcp(std::vector<SockItem*>& items, SockDumpCtx& ctx);
void check_udp(SockItem& it, SockDumpCtx& ctx);
void dump_udp(std::vector<SockItem*>& items, SockDumpCtx& ctx);

// Restore side.  open: the socket as far as it is made before the tasks
// exist (bound, listening; a TCP connection rebuilt in repair mode with
// its queues); fill: once the tasks exist (datagram queues, corked data,
// shutdown, multicast); finish: just before the tree runs.
ScopedFd tcp_open(const pb::Socket& s, const std::string& who);
void tcp_finish(int fd, const pb::Socket& s, const std::string& who);
ScopedFd udp_open(const pb::Socket& s, const std::string& who);
void udp_fill(int fd, const pb::Socket& s, const std::string& who);
// Binds fd to the recorded local address (the socket's name in messages).
void inet_bind(int fd, const pb::Socket& s, const std::string& who);
void restore_ip_opts(int fd, const pb::Socket& s, const std::string& who);

// Packets made by hand and sent to a restored socket as if its peer had
// sent them (a raw socket, the packet marked so that the network lock lets
// it through): a TCP FIN or ACK, a datagram of a receive queue, a ping
// reply.  l4 is the transport header and payload, checksum left 0: filled
// here.  A v4-mapped pair goes as IPv4.
void inject(const pb::InetAddr& from, const pb::InetAddr& to, int protocol, std::string l4, const std::string& who);
// The mark: lock rules accept packets that carry it.
constexpr uint32_t kInjectMark = 0x636b0001;
bool v4_mapped(const pb::InetAddr& a);
pb::InetAddr unmapped(const pb::InetAddr& a);  // ::ffff:a.b.c.d as a.b.c.d; others as they are

}  // namespace ck
