// The one list of resource kinds: every kind of fd, mapping and task state
// that a process of a dumped tree can hold, whether ck rebuilds it, why not
// when it does not, and the test that proves it.  Everything that decides
// about a kind asks here: ck-freeze and ck-memread refuse at dump what is
// kRefused, the restorability check (restorable.h) run by every sink and by
// ck-restore itself accepts or refuses each record of a stream by its kind,
// and ck-restore's rebuilding code dispatches on the same KindId.  README's
// table of supported and refused resources is made from it (`ck-crit kinds
// --markdown`), and tests/bats/kinds.bats makes a real process hold every
// kind.
//
// To add a kind: an entry in kKinds (kinds.cc) and its KindId, in the same
// order; what classifies it (kind_of below); a mode of the holder workload
// (tests/workloads/holder.c); then `make readme-kinds`.
#pragma once
#include <cstddef>
#include <string>

#include "ck.pb.h"

namespace ck {

enum class Support {
  kSupported,  // dumped and restored
  kRefused,    // refused by name wherever it is met: at dump, the tree runs on
  kNeedsState, // restorable only with its state from a later stage (Kind::stage),
               // which the stream must carry: refused by the sink otherwise
  kExternal,   // its other end is outside the tree: refused at dump unless
               // accepted with --external; ck-restore needs --inherit-fd for it
};

enum class KindId {
  // fds
  kFdFile,
  kFdFileDeleted,
  kFdDir,
  kFdDirDeleted,
  kFdPipe,
  kFdPipeExternal,
  kFdFifo,
  kFdFifoExternal,
  kFdDevice,
  kFdDeviceDeleted,
  kFdDeviceOther,
  kFdTty,
  kFdPtyMaster,
  kFdEventfd,
  kFdEpoll,
  kFdSignalfd,
  kFdTimerfd,
  kFdInotify,
  kFdMemfd,
  kFdMemfdHugetlb,
  kFdSocketUnix,
  kFdSocketTcp,
  kFdSocketUdp,
  kFdSocketInetOther,
  kFdSocketNetlink,
  kFdSocketPacket,
  kFdSocketOther,
  kFdPidfd,
  kFdIoUring,
  kFdFanotify,
  kFdUserfaultfd,
  kFdBpf,
  kFdPerfEvent,
  kFdAnonOther,
  kFdOther,
  kFdLock,
  // mappings
  kVmaAnon,
  kVmaHeap,
  kVmaStack,
  kVmaSharedAnon,
  kVmaFilePrivate,
  kVmaFileShared,
  kVmaFileDeleted,
  kVmaVdso,
  kVmaVsyscall,
  kVmaSysvShm,
  kVmaMemfd,
  kVmaHugetlb,
  kVmaAio,
  kVmaOther,
  // tasks
  kTaskThreads,
  kTaskZombie,
  kTaskLeaderExited,
  kTaskSeccomp,
  kTaskTraced,
  kTaskCgroupV2,
  kTaskCgroupV1,
  kTaskStopped,
  kTaskPdeathsig,
  kTaskCwdDeleted,
  kTaskSessionLeader,
  kCount
};

struct Kind {
  KindId id;
  const char* name;   // "fd.socket.tcp": how messages, README and tests name it
  const char* what;   // "TCP socket (AF_INET, AF_INET6)"
  Support support;
  const char* note;   // kRefused: why ("not supported"); others: how, or on what condition
  const char* stage;  // kNeedsState: the stage that writes its state ("ck-sockdump")
  const char* test;   // the test that proves it, beyond tests/bats/kinds.bats
};

// Every kind, in KindId order.
const Kind* kinds_begin();
const Kind* kinds_end();
const Kind& kind(KindId id);
// By name; nullptr when there is none.
const Kind* kind_named(const std::string& name);
const char* support_name(Support s);  // "supported", "refused", "needs-state", "external"

// What a record of the stream is.  A FileDesc as ck-freeze fills it in
// (kind, path, deleted, tty, rdev, socket_*, external); a Vma as
// ck-memread does (kind, path, vmflags).
KindId kind_of(const pb::FileDesc& d);
KindId kind_of(const pb::Vma& v);

// "socket AF_INET SOCK_STREAM 0.0.0.0:8000 listening", "pipe:[1234]",
// "'/dev/null'": what a message shows of a description.
std::string describe(const pb::FileDesc& d);
// "7f0000000000-7f0000200000 '/anon_hugepage (deleted)'"
std::string describe(const pb::Vma& v);

// The refusal of a kind, as every tool words it: "SUBJECT: NOTE (NAME)",
// e.g. "unable to dump fd 3 of pid 42 (socket AF_NETLINK SOCK_RAW): not
// supported (fd.socket.netlink)".  Status 1: the input is good, ck cannot
// take it.
[[noreturn]] void refuse_kind(KindId id, const std::string& subject);
[[noreturn]] void refuse_kind(KindId id, const std::string& subject, const std::string& why);

// README's table, one row per kind (markdown), and a plain list
// ("NAME STATUS") for scripts.
std::string kinds_markdown();
std::string kinds_list();

}  // namespace ck
