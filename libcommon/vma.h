// Memory maps of a process: /proc/PID/maps (or smaps) parsed into pb::Vma,
// with the kind of each mapping, its VmFlags and, for file mappings, the
// file's size and mtime.
#pragma once
#include <sys/types.h>

#include <string>
#include <vector>

#include "ck.pb.h"

namespace ck {

// Parses the text of /proc/PID/maps or /proc/PID/smaps.  Header lines become
// VMAs (start/end/prot/flags/pgoff/dev/ino/path/kind); a "VmFlags:" line
// fills the vmflags of the VMA before it; other smaps lines are ignored.
// `what` names the source in messages.  A malformed line: status 3.
std::vector<pb::Vma> parse_maps(const std::string& text, const std::string& what = "maps");

// The kind of a mapping from its path (as maps shows it) and whether it is
// MAP_SHARED.
pb::VmaKind vma_kind(const std::string& path, bool shared);

// Whether the VMA's pages are memory of a shared object (shmem: shared
// anonymous, SysV shm, memfd) that is dumped once per object.
bool vma_is_shmem_object(const pb::Vma& v);

// Whether ck-memread looks for page contents in this VMA at all (not for
// [vvar]/[vdso]/[vsyscall] or shared file mappings).
bool vma_has_private_pages(const pb::Vma& v);

// "/proc/PID/map_files/START-END" for the VMA.
std::string map_files_path(pid_t pid, const pb::Vma& v);

// Every VMA of pid, from /proc/PID/smaps (so vmflags are set), with file
// size and mtime filled in for file mappings.  A pid that does not exist:
// status 1, "no such process" naming the pid.
std::vector<pb::Vma> read_vmas(pid_t pid);

// One line in /proc/PID/maps format (single spaces, no padding):
// "00400000-00452000 r-xp 00000000 08:02 173521 /usr/bin/dbus-daemon".
std::string format_vma(const pb::Vma& v);

}  // namespace ck
