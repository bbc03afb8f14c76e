// The tracer service: how a stage that is not the tracer gets work done
// inside a frozen task.  ck-freeze, which holds every thread of the tree in
// a ptrace stop, gives its COMMAND a socket (its number in the environment
// variable CK_TRACER_FD).  A stage connects by sending one end of a fresh
// socket pair over it, then asks on that private connection, one request,
// one reply:
//   OPEN pid   put the page parasite into pid: reply with the args address
//              in pid, the target's fd numbers of its three pipes, and the
//              stage's ends of them (pages, bell, ack: passed along)
//   RUN pid    run the parasite once on the args the stage wrote there; the
//              reply comes when it has ended, meanwhile the stage reads the
//              chunks as parasite_abi.h says (and may send nothing: a
//              connection that hangs up or speaks during a run stops it)
//   CLOSE pid  take it out again
//   ROUND pid  a pre-dump round of the tree rooted at pid was begun (its
//              number in args, its tracking state directory passed along):
//              ck-freeze confirms it when it commits and marks it failed
//              when it rolls back (see round.h); it outlives the connection
// Whatever a connection left open is taken out when it closes, and all of
// it before ck-freeze commits or rolls back.  See parasite.h.
//
// The rollback registry.  A stage that changes something the tree shares
// (a socket in repair mode, an nftables lock, a corked datagram taken out)
// registers the change first, with the fds it needs to undo it:
//   UNDO_ADD   a pb::UndoBatch after the header, its fds (at most
//              kMaxUndoFds) passed along; the reply's result is the id of
//              the first record (the others follow in order)
//   UNDO_SET   replaces the fields of records by id (their fds stay): an
//              uncorked datagram's bytes once they are known
//   UNDO_DROP  forgets records by id: the stage has undone them itself
// ck-freeze undoes every record left, newest first, when it rolls back and
// after --leave-running / --leave-stopped, whether or not the stage is
// still alive; after a kill it drops them (the network lock stays: the
// image names it, and ck-restore or `ck-sockdump --unlock` lifts it).
#pragma once
#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "fd.h"

namespace ck {

class Parasite;
namespace pb {
class Undo;
class UndoBatch;
}
constexpr char kTracerEnv[] = "CK_TRACER_FD";
constexpr size_t kMaxUndoFds = 250;           // below SCM_MAX_FD (253)
constexpr size_t kMaxTracerPayload = 160 << 10;

struct TracerMsg {
  uint32_t op = 0;
  int32_t pid = 0;
  int64_t result = 0;  // RUN: the parasite's result; -1 with error[] set: refused or failed
  uint64_t args = 0;
  int32_t remote[3] = {-1, -1, -1};  // OPEN: the target's pages, bell, ack fds
  uint32_t pipe_size = 0;
  uint32_t rseq_len = 0;   // OPEN: the running thread's rseq area
  uint64_t rseq_addr = 0;
  char error[256] = {};
};

// ck-freeze's side.
class TracerService {
 public:
  // procs: the frozen processes a stage may ask about, each with a thread
  // in a ptrace stop of ours.
  explicit TracerService(std::map<pid_t, pid_t> procs);
  ~TracerService();
  int command_fd() const { return theirs_.get(); }  // give to COMMAND, then close_command_fd()
  void close_command_fd() { theirs_.reset(); }
  // Serves requests until `child` exits; returns its wait status.
  int serve_until_exit(pid_t child);
  void shutdown();  // takes every parasite out
  // The pre-dump rounds stages registered: stored (ck-freeze commits) or
  // not (it rolls back).  Never throws: a round it cannot settle stays
  // unconfirmed, which loses nothing.
  void settle_rounds(bool stored);

  // The registry: undo_all() runs every record left, newest first (a record
  // that fails is logged and the rest still run); drop_undo() forgets them.
  void undo_all();
  void drop_undo();
  size_t undo_count() const { return undo_.size(); }

 private:
  struct Conn;
  struct UndoEntry;
  bool accept();  // false when no stage connected (nothing queued, or hung up)
  bool serve(Conn& c);  // false: the connection is gone
  TracerMsg handle(Conn& c, const TracerMsg& req, std::vector<ScopedFd>& got, std::vector<int>* pass);
  TracerMsg handle_undo(const TracerMsg& req, const std::string& payload, std::vector<ScopedFd>& fds);

  std::map<pid_t, pid_t> procs_;
  ScopedFd ours_, theirs_;
  std::vector<std::unique_ptr<Conn>> conns_;
  std::set<pid_t> busy_;  // processes with a parasite in them
  std::vector<std::pair<ScopedFd, uint32_t>> rounds_;  // state directory, round number
  std::vector<std::unique_ptr<UndoEntry>> undo_;
  uint64_t next_undo_ = 1;
};

// A stage's side.
class TracerClient {
 public:
  // Connects to the tracer named in the environment; nullptr without one.
  static std::unique_ptr<TracerClient> from_env();
  explicit TracerClient(int conn) : conn_(conn) {}

  struct Opened {
    uint64_t args = 0;
    int remote[3] = {-1, -1, -1};  // the target's fds: pages, bell, ack
    ScopedFd pages, bell, ack;     // ours
    size_t pipe_size = 0;
    uint64_t rseq_addr = 0;        // the running thread's rseq area (see Parasite)
    uint32_t rseq_len = 0;
  };
  Opened open(pid_t pid);  // throws Error with the tracer's message
  // A run: start it, follow it (the connection becomes readable when it
  // has ended), then take its result.
  void start_run(pid_t pid);
  int fd() const { return conn_.get(); }
  long finish_run();
  void close(pid_t pid);
  // Throws unless the tracer still holds the connection: a stage calls it
  // before its trailer, so that what it read is known to come from a tree
  // that stayed frozen (ck-freeze killed midway lets the tree run on).
  void check_alive() const;
  // ROUND: round gen of root's tree, whose state directory is dir_fd.
  void hold_round(pid_t root, int dir_fd, uint32_t gen);

  // The registry (see above).  undo_add returns the id of the first record;
  // fds are the descriptors the records' fd/fd2 indexes name.
  uint64_t undo_add(const pb::UndoBatch& b, const std::vector<int>& fds);
  void undo_set(const pb::UndoBatch& b);
  void undo_drop(const std::vector<uint64_t>& ids);

 private:
  TracerMsg call(const TracerMsg& req, std::vector<ScopedFd>* fds_out);
  TracerMsg reply(std::vector<ScopedFd>* fds_out);
  ScopedFd conn_;
};

}  // namespace ck
