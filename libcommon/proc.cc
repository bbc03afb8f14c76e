#include "proc.h"

#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <sstream>

#include "error.h"
#include "fd.h"

namespace ck {

std::vector<pid_t> list_tids(pid_t pid) {
  std::vector<pid_t> out;
  std::string dir = strf("/proc/%d/task", pid);
  DIR* d = opendir(dir.c_str());
  if (!d) throw_errno(strf("unable to list threads of pid %d", pid));
  while (struct dirent* e = readdir(d))
    if (e->d_name[0] != '.') out.push_back(static_cast<pid_t>(std::atoi(e->d_name)));
  closedir(d);
  // The leader first (callers take threads[0] for it), the rest in order:
  // sorting alone would put a thread whose tid wrapped past pid_max first.
  std::sort(out.begin(), out.end(), [pid](pid_t a, pid_t b) { return (a == pid) != (b == pid) ? a == pid : a < b; });
  return out;
}

std::vector<pid_t> list_children(pid_t pid) {
  std::vector<pid_t> out;
  for (pid_t tid : list_tids(pid)) {
    std::string s;
    if (!try_read_file(strf("/proc/%d/task/%d/children", pid, tid), &s)) continue;
    std::istringstream in(s);
    pid_t c;
    while (in >> c) out.push_back(c);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

bool pid_alive(pid_t pid) { return ::kill(pid, 0) == 0 || errno == EPERM; }

char task_state(pid_t pid, pid_t tid) {
  std::string s;
  if (!try_read_file(tid ? strf("/proc/%d/task/%d/stat", pid, tid) : strf("/proc/%d/stat", pid), &s)) return 0;
  size_t close = s.rfind(')');
  return close != std::string::npos && close + 2 < s.size() ? s[close + 2] : 0;
}

std::map<std::string, std::string> read_status(pid_t pid, pid_t tid) {
  std::string path = tid ? strf("/proc/%d/task/%d/status", pid, tid) : strf("/proc/%d/status", pid);
  std::string s = read_file(path);
  std::map<std::string, std::string> m;
  std::istringstream in(s);
  std::string line;
  while (std::getline(in, line)) {
    size_t c = line.find(':');
    if (c == std::string::npos) continue;
    size_t v = line.find_first_not_of(" \t", c + 1);
    m[line.substr(0, c)] = v == std::string::npos ? "" : line.substr(v);
  }
  return m;
}

Stat read_stat(pid_t pid, pid_t tid) {
  std::string path = tid ? strf("/proc/%d/task/%d/stat", pid, tid) : strf("/proc/%d/stat", pid);
  std::string s = read_file(path);
  size_t open = s.find('('), close = s.rfind(')');
  if (open == std::string::npos || close == std::string::npos) fail("unable to parse '" + path + "'");
  Stat st;
  st.comm = s.substr(open + 1, close - open - 1);
  st.f.assign(3, "");
  std::istringstream in(s.substr(close + 2));
  std::string w;
  while (in >> w) st.f.push_back(w);
  return st;
}

uint64_t Stat::u(int idx) const { return idx < static_cast<int>(f.size()) ? std::strtoull(f[idx].c_str(), nullptr, 10) : 0; }
int64_t Stat::i(int idx) const { return idx < static_cast<int>(f.size()) ? std::strtoll(f[idx].c_str(), nullptr, 10) : 0; }

std::string read_link(const std::string& path) {
  char buf[4096];
  ssize_t n = ::readlink(path.c_str(), buf, sizeof buf);
  if (n < 0) throw_errno("unable to read link '" + path + "'");
  return std::string(buf, static_cast<size_t>(n));
}

uint64_t parse_hex(const std::string& s) { return std::strtoull(s.c_str(), nullptr, 16); }

}  // namespace ck
