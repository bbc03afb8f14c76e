// The restorability check: ck-restore's acceptance of a stream, one frame at
// a time.  ck-restore runs it over everything it restores, before it uses a
// frame, and rebuilds only what it accepted; every sink of a dump
// (ck-store put) runs the same object over the complete stream and fails
// before it reports success when ck-restore would refuse the image, so a
// dump that kills its tree never commits on an image that cannot come back.
// See ck-dump(1) for the list of what it checks.
//
// What it decides:
//  - every record's kind (kinds.h): kRefused ones are refused by name,
//    kNeedsState ones need the stage that writes their state in the
//    pipeline (the header's writers) and, by the end, that state; kExternal
//    ones need --inherit-fd at restore;
//  - the shape ck-restore needs: a root, every process's parent in the
//    image, thread state for every live process and none for zombies, the
//    fd tables consistent (validate_file_table), processes, threads and
//    files before the first memory layout, a layout for every live process,
//    every page run inside the layout it follows;
//  - at restore only, what depends on ck-restore's options: terminals need
//    --shell-job, external resources a replacement, cgroup v1 memberships
//    that differ from ck-restore's own a warning (or a refusal).
// What it cannot know at a sink (a different machine may restore): whether
// mapped files are unchanged, pids are free, cgroups can be made.
//
// Failure: a refusal is status 1 ("unable to dump fd 3 of pid 42 (socket
// AF_INET SOCK_STREAM 0.0.0.0:8000 listening): ... (fd.socket.tcp)"); a
// stream that no ck writes (a thread without its process, a page run
// outside every mapping) is status 3.
#pragma once
#include <sys/types.h>

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "ck.pb.h"
#include "kinds.h"
#include "stream.h"

namespace ck {

// What ck-restore has that a sink does not.
struct RestoreEnv {
  bool shell_job = false;
  std::set<std::string> inherited;  // --inherit-fd names
  bool cgroup_v1_refuse = false;    // --cgroup-v1 refuse
  std::vector<std::string> own_cgroup_v1;  // ck-restore's own v1 lines (/proc/self/cgroup)
};

class RestoreCheck : public FrameInspector {
 public:
  // A sink: checks a stream that ck-freeze started (others, such as
  // pre-dump rounds, are no dumps and pass unchecked), as ck-restore
  // would whatever its options.  Refusals say "unable to dump".
  static RestoreCheck for_sink();
  // ck-restore itself, with its options.  Refusals say "unable to restore".
  static RestoreCheck for_restore(const RestoreEnv& env);

  void frame(const pb::Frame& f) override;  // throws at the first refusal certain now
  void end() override;                      // whole-stream refusals

  bool active() const { return active_; }
  // Warnings issued so far (cgroup v1 differences), for tests.
  const std::vector<std::string>& warnings() const { return warnings_; }

 private:
  RestoreCheck(bool sink, RestoreEnv env);
  struct Proc {
    bool seen = false;
    uint32_t ppid = 0;
    bool zombie = false;
    uint32_t threads = 0;
    bool mm = false;
  };
  struct Range {
    uint64_t start, end;
  };
  void process(const pb::Process& p);
  void file(const pb::FileDesc& d);
  void layouts_begin();
  void layout(uint32_t pid, const pb::MemLayout& mm);
  void pages(const pb::PageRun& run);
  const pb::FileDesc* file_with_contents(uint32_t id) const;  // a deleted file or memfd described so far
  bool in_pipeline(const char* stage) const;
  std::string fd_subject(const pb::FileDesc& d) const;
  void cgroup_v1(const pb::Process& p);
  void refuse_stageless() const;

  bool sink_;
  RestoreEnv env_;
  bool active_ = true;
  const char* verb_;
  std::vector<std::string> writers_;
  uint32_t root_ = 0;
  std::map<uint32_t, Proc> procs_;
  std::vector<pb::FileDesc> descs_;  // without contents or pipe data
  std::vector<pb::Fd> fds_;
  std::vector<std::pair<KindId, uint32_t>> stageless_;  // needing a stage the pipeline lacks (desc ids)
  std::map<uint32_t, std::string> awaiting_state_;  // desc id -> refusal if no state comes
  std::set<uint32_t> have_state_;
  bool layouts_ = false;
  uint32_t mm_pid_ = 0;
  std::vector<Range> vmas_;                // of mm_pid_, in address order
  std::map<uint64_t, uint64_t> shm_size_;  // shared object -> bytes, as ck-restore sizes it
  std::map<uint64_t, uint64_t> shm_seen_;  // every VMA extent seen so far per object
  std::vector<std::string> warnings_;
};

}  // namespace ck
