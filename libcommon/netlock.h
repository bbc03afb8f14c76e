// The network lock: state that outlives one tool run, owned here.
//
// While the tree is dumped, and between a committed dump and the restore,
// no segment of a dumped TCP connection may reach a socket that is gone
// (the peer would get a reset) or be taken by one that was already read
// (the bytes would be lost).  The lock is one nftables table per dump and
// network namespace, named "ck_lock_<root pid>_<random>" in family inet,
// with sets of the connections' 4-tuples and of listening addresses, and
// drop rules in the input and output hooks at priority -300 (before
// conntrack and any filter of the host's own): nothing of a connection
// goes in or out, and a listener gets no new connection (the client's SYN
// is sent again once the socket is back).  Packets marked kInjectMark
// pass: those ck-restore makes to put a socket into its state.  A UDP
// socket with corked data gets a table of its own while its datagram is
// read back (sock_udp.cc: `log group N` + drop sends it to NFLOG instead
// of the wire).
//
// Lifecycle: lock() (ck-sockdump, registered with ck-freeze first), then
// either netlock_remove() on rollback / --leave-running (ck-freeze), or,
// for a committed dump, netlock_remove() by ck-restore once the sockets are
// back (ck-restore puts up a lock of its own in its namespace while it
// builds them, lifted with the dump's), or by `ck-sockdump --unlock` when
// no restore will follow.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "ck.pb.h"
#include "fd.h"

namespace ck {

class NetLock {
 public:
  // netns: an fd of the namespace the sockets live in (kept, not owned).
  NetLock(int netns, std::string table) : netns_(netns), table_(std::move(table)) {}
  static std::string new_name(pid_t root);  // "ck_lock_4242_1a2b3c4d"

  const std::string& table() const { return table_; }
  // A TCP socket: its connection, or the address it listens on (other
  // sockets are not locked).
  void add(const pb::Socket& s);
  void add_connection(const pb::InetAddr& local, const pb::InetAddr& remote);
  void add_listener(const pb::InetAddr& local);
  bool empty() const { return conns4_.empty() && conns6_.empty() && listen4_.empty() && listen6_.empty() && ports4_.empty() && ports6_.empty(); }
  // Creates the table with everything added so far (one nft transaction).
  void lock();

 private:
  int netns_;
  std::string table_;
  std::vector<std::string> conns4_, conns6_, listen4_, listen6_, ports4_, ports6_;
};

// Runs `nft -f -` with script on stdin inside the network namespace netns
// (-1: ours).  Throws with nft's own message.
void run_nft(int netns, const std::string& script);
// Deletes table (family inet) in netns; a table that is not there is fine.
void netlock_remove(int netns, const std::string& table);
// ck-sockdump --unlock: deletes the tables the NetLock frames of a stream
// name, in the current network namespace or in netns_path.
void netlock_remove_all(const std::vector<pb::NetLock>& locks, const std::string& netns_path);

}  // namespace ck
