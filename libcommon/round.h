// Pre-dump rounds of one tracked tree: which pages each round copies, and
// the state that lives between rounds.  ck-memread only reads memory; this
// module decides which pages (a PagePlan per process) and owns everything a
// round leaves behind.  See man/ck-memread.1 (ROUNDS) and ck-predump(1).
//
// The rule: a round's dirty set is released only once the round is known to
// be stored.  Every round has a number (its generation: 1 for the --track
// round, one more for each round begun, whatever became of it) and is
// computed against a base: an earlier round known to be stored.  It copies
// every page written since the base, which is the union of what the kernel
// reports as written now and the dirty sets of every round after the base
// (rounds that failed, or whose output nobody confirmed).  Those sets are
// kept on disk; they are dropped when a later round is confirmed stored:
//   - by name: the next round is begun with --since ROUND (the id ck-store
//     put printed for it), which works wherever the store is (behind ssh, a
//     service), or
//   - by ck-freeze: a round taken under ck-freeze registers with it, and is
//     confirmed when ck-freeze commits, rolled back (marked failed) when it
//     resumes the tree.
// Lifecycle: arm (--track), begin (--dirty), written (its stream is out),
// confirm / rollback (ck-freeze, or confirm through a later --since),
// release (--untrack, or the target is gone).
// Without --since a round is computed against the newest round confirmed
// so far (round 1 at first).  Round ids carry the dump's identity (a random
// number chosen by --track), and ck-store put / ck-restore refuse a round on
// a chain that does not hold its base (image.h): a round cannot be stored
// where it would lose or mix pages.
//
// Order within a round, so that a SIGKILL of ck-memread at any instant
// loses nothing: the written pages are found with a scan that clears
// nothing; the round's record (what it found written, and what it copies
// whole) is written to disk; only then are new processes and mappings armed
// and the written pages protected again (exactly those: a page written after
// the first scan stays "written"); then the pages are copied.  A round that
// dies anywhere leaves its record behind, and the next round takes it in.
//
// State, per tracked tree, in STATE_DIR/ROOTPID/ (STATE_DIR: --state-dir,
// else $CK_TRACK_DIR, else /run/ck/track); every file is replaced whole
// (written aside, then renamed):
//   tree            "ck-track 2", the dump id, the last round begun, the
//                   newest round confirmed stored
//   PID             one per tracked process: its start time, its holder,
//                   and its layout as last armed ("uw": registered)
//   rounds/N        round N's record: its base, and per process the ranges
//                   it found written and the ranges it copied whole
//   rounds/N.done   its stream was written out whole
//   rounds/N.failed ck-freeze rolled it back
// STATE_DIR/ROOTPID.lock is flock()ed by whoever works on the state: one
// round at a time.
#pragma once
#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ck.pb.h"
#include "fd.h"
#include "memread.h"
#include "track.h"

namespace ck {

// The state directory: opt if set, else $CK_TRACK_DIR, else /run/ck/track.
std::string track_state_dir(const std::string& opt);

class Round {
 public:
  // arm (--track): tracking of root's tree from scratch, whatever was
  // there: round 1 of a new dump, every page copied after arming.
  static std::unique_ptr<Round> arm(const std::string& state_dir, pid_t root);
  // The next round (--dirty), computed against `since` ("DUMP:N", "N", or
  // empty: the newest round confirmed stored); naming a round confirms it.
  // standalone: this process may seize and arm processes (not under
  // ck-freeze, where nothing new is armed: the tree is frozen and the
  // round is meant to be the last).  Status 3 for a since that names no
  // round that can be a base; 1 when root is not tracked.
  static std::unique_ptr<Round> begin(const std::string& state_dir, pid_t root, const std::string& since,
                                      bool standalone);
  ~Round();

  const pb::Round& id() const { return id_; }
  bool incremental() const { return id_.base() != 0; }
  // MemReader's planner: the pages of each process this round.  Writes the
  // round's record, then arms and protects (see above).
  std::vector<PagePlan> plan(const std::vector<pid_t>& pids, std::vector<std::vector<pb::Vma>>& layouts);
  // The round's stream went out whole (its trailer written).
  void written();
  // Under ck-freeze: the fd (a directory) and root to register with it, so
  // that its commit confirms the round and its rollback marks it failed.
  int state_fd() const { return dir_fd_.get(); }
  uint32_t armed() const { return armed_; }
  double freeze_ms() const { return freeze_ms_; }

  // After a round taken under ck-freeze, by its number (tree_dir: the
  // state directory of its tree).  confirm: ck-freeze committed, the round
  // is stored, the dirty sets up to it are released.  rollback: the tree
  // resumed, the round is stored nowhere (no base for --since), and what it
  // found written stays for the next round.
  static void confirm(const std::string& tree_dir, uint32_t gen);
  static void rollback(const std::string& tree_dir, uint32_t gen);
  // release (--untrack, or the target is gone): stops every holder and
  // removes the state of root's tree.
  static void release(const std::string& state_dir, pid_t root);

 private:
  struct State;
  Round(std::unique_ptr<State> st, bool standalone);
  std::unique_ptr<State> st_;
  bool standalone_;
  pb::Round id_;
  ScopedFd dir_fd_;
  uint32_t armed_ = 0;
  double freeze_ms_ = 0;
};

}  // namespace ck
