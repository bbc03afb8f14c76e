// /proc parsers for task facts (memory maps are in vma.h).
#pragma once
#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace ck {

std::vector<pid_t> list_tids(pid_t pid);       // /proc/PID/task, the leader first
std::vector<pid_t> list_children(pid_t pid);   // every thread's children
bool pid_alive(pid_t pid);
// The state letter of /proc/PID[/task/TID]/stat ('R', 'S', 'Z', ...), or 0
// if the task is gone.
char task_state(pid_t pid, pid_t tid = 0);

// /proc/PID/status as key -> value (value trimmed).
std::map<std::string, std::string> read_status(pid_t pid, pid_t tid = 0);

// The fields of /proc/PID/stat after the comm, 1-based as in proc(5):
// stat_field(s, 4) is ppid.
struct Stat {
  std::string comm;
  std::vector<std::string> f;  // f[i] is field i (f[0..2] unused)
  uint64_t u(int i) const;
  int64_t i(int i) const;
};
Stat read_stat(pid_t pid, pid_t tid = 0);

std::string read_link(const std::string& path);  // throws
uint64_t parse_hex(const std::string& s);

}  // namespace ck
