// Sockets, the parts every socket room shares: which sockets ck handles
// (the one place that decides), SOL_SOCKET options, the undo log of a
// dump's side effects and the undo actions themselves.
//
// Dump side: ck-sockdump (sock_tool.cc) takes a duplicate of every socket
// of the frozen tree (pidfd_getfd) and hands it to its family's room:
// sock_unix.cc, sock_inet.cc.  Restore side: sock_restore.cc, called by
// the file restorer where it meets a socket.  The network lock is
// netlock.cc's.
#pragma once
#include <sys/socket.h>
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ck.pb.h"
#include "fd.h"

namespace ck {

class TracerClient;

// ---- ck-sockdump ---------------------------------------------------------------

struct SockdumpOptions {
  // --external unix[:INO|:NAME]: unix peers outside the tree that are kept
  // (the restored socket connects to the peer's name again).
  std::vector<std::string> external;
  bool unlock = false;   // --unlock: lift the network locks a stream names
  std::string netns;     // with --unlock: in this network namespace
};
// The stage: forwards the stream, adding the state of every socket of the
// tree before the first memory layout.  Returns the exit status.
int run_sockdump(const SockdumpOptions& o, int in_fd, int out_fd);

// ---- what ck supports -----------------------------------------------------------

// "unix stream", "TCP/IPv6", "UDP-Lite/IPv4", "AF_NETLINK raw" ...
std::string sock_kind_name(int family, int type, int protocol);
// Live sockets (dump side, before anything changes): "" when ck dumps and
// restores sockets of this family, type and protocol; else why not
// ("not supported").
std::string sock_refusal(int family, int type, int protocol);
// A recorded socket (restore side, and any sink checking a stream): "" when
// ck-restore rebuilds it as recorded; else why not.
std::string sock_unrestorable(const pb::Socket& s);

// "ESTABLISHED", "FIN-WAIT-1" ...
const char* tcp_state_name(uint32_t state);

// One line for ck-crit show: "unix stream '/run/x.sock' connected to
// socket:[123], 3 messages queued (30 bytes), shut down for writing".
std::string sock_summary(const pb::Socket& s);

// ---- SOL_SOCKET options ---------------------------------------------------------

void dump_sock_opts(int fd, pb::SockOpts* o);
// Sets every option that differs from a fresh socket's.  `who` names the
// socket in messages.  With bufs, the buffer sizes too (restore_sock_bufs).
void restore_sock_opts(int fd, const pb::SockOpts& o, const std::string& who, bool bufs = true);
// The buffer sizes as recorded (at least at_least each, for queues that are
// refilled), locked as they were: a size the kernel chose stays free to
// grow (SO_BUF_LOCK).
void restore_sock_bufs(int fd, const pb::SockOpts& o, const std::string& who, uint32_t at_least = 0);

// ---- the undo log -----------------------------------------------------------------

// Every side effect of a dump on a socket the tree shares is registered here
// before it is made.  Under ck-freeze (a tracer in the environment) the
// records go to ck-freeze, which undoes them on rollback and after
// --leave-running even if this process is killed; alone, they stay here and
// are undone when the log is destroyed (a standalone dump leaves the
// sockets as they were).
class UndoLog {
 public:
  explicit UndoLog(std::unique_ptr<TracerClient> tracer);
  ~UndoLog();
  UndoLog(const UndoLog&) = delete;
  UndoLog& operator=(const UndoLog&) = delete;

  bool remote() const { return tracer_ != nullptr; }
  void check_tracer() const;  // see TracerClient::check_alive
  // Registers the records; recs[i] needs fds[i] (first: its fd, second: its
  // fd2; -1: none).  Returns their ids, in order.
  std::vector<uint64_t> add(std::vector<pb::Undo> recs, const std::vector<std::pair<int, int>>& fds);
  uint64_t add_one(pb::Undo rec, int fd, int fd2 = -1);
  void set(uint64_t id, pb::Undo rec);  // new fields for a record (its fds stay)
  void drop(uint64_t id);               // undone by the caller

 private:
  struct Local {
    pb::Undo rec;
    ScopedFd fd, fd2;
  };
  std::unique_ptr<TracerClient> tracer_;
  std::vector<Local> local_;
  uint64_t next_ = 1;
};

// Puts an uncorked datagram back: corked again with the same bytes (the
// record's, or what the NFLOG socket nflog_fd caught).  sock_udp.cc.
void udp_recork(int fd, int nflog_fd, const pb::Undo& u);

// Undoes one record (ck-freeze, or the local log).  fd/fd2 as registered.
void run_undo(const pb::Undo& u, int fd, int fd2);
std::string undo_name(const pb::Undo& u);  // "TCP repair mode", "network lock inet ck_lock_..."

// Tests of the failure paths: with CK_FAULT=NAME in the environment, the
// process kills itself with SIGKILL when it reaches fault point NAME.
void fault_point(const char* name);

// ---- small shared helpers ---------------------------------------------------

int sockopt_int(int fd, int level, int name, const char* what);
void set_sockopt_int(int fd, int level, int name, int v, const std::string& who, const char* what);
// An InetAddr from / into a sockaddr_storage (len out).
void to_inet_addr(const struct sockaddr* sa, pb::InetAddr* a);
socklen_t from_inet_addr(const pb::InetAddr& a, struct sockaddr_storage* ss);
std::string inet_addr_str(const pb::InetAddr& a);  // "127.0.0.1:80", "[::1]:80"
// The network namespace a socket lives in (SIOCGSKNS) and its cookie.
ScopedFd sock_netns(int fd);
uint64_t netns_cookie(int sock_fd);
// Runs f in the network namespace of the socket sock_fd (this thread
// enters it and comes back, also when f throws).
void in_netns(int sock_fd, const std::function<void()>& f);
// A NETLINK_SOCK_DIAG socket made in the network namespace of sock_fd,
// one per namespace for the whole run (not to be closed).
int sock_diag_fd(int sock_fd);

}  // namespace ck
