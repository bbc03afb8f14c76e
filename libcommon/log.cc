// A direct logging engine: formats at the call site and writes one line per
// message with a single write(2), so lines from threads and pipeline stages
// never interleave.  Issue 4 replaces the engine; the API in log.h stays.
#include "log.h"

#include <fcntl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <mutex>
#include <vector>

namespace ck::log {
namespace {

struct State {
  std::mutex mu;
  std::vector<Module*> modules;
  std::string spec;
  int verbosity = 0;
  int fd = 2;
  const char* tool = "ck";
};

State& state() {
  static State* s = new State;  // never destroyed: usable from any destructor
  return *s;
}

const char* const kNames[] = {"error", "warn", "info", "debug", "trace"};

int parse_level(const std::string& s) {
  for (int i = 0; i < 5; ++i)
    if (s == kNames[i]) return i;
  if (s == "off") return -1;
  return -2;
}

// Level for module `name` from a spec and a verbosity.
int level_for(const State& st, const char* name) {
  int lvl = kWarn + st.verbosity;
  const std::string& spec = st.spec;
  size_t pos = 0;
  while (pos <= spec.size() && !spec.empty()) {
    size_t comma = spec.find(',', pos);
    std::string item = spec.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    size_t colon = item.find(':');
    std::string mod = colon == std::string::npos ? "all" : item.substr(0, colon);
    std::string lv = colon == std::string::npos ? item : item.substr(colon + 1);
    int l = parse_level(lv);
    if (l != -2 && (mod == "all" || mod == name)) lvl = l;
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  if (lvl > kTrace) lvl = kTrace;
  return lvl;
}

}  // namespace

Module* module(const char* name) {
  State& st = state();
  std::lock_guard<std::mutex> g(st.mu);
  for (Module* m : st.modules)
    if (std::strcmp(m->name, name) == 0) return m;
  if (st.spec.empty()) {
    const char* env = std::getenv("CK_LOG");
    if (env) st.spec = env;
  }
  auto* m = new Module{name, level_for(st, name)};
  st.modules.push_back(m);
  return m;
}

void configure(const std::string& spec, int verbosity) {
  State& st = state();
  std::lock_guard<std::mutex> g(st.mu);
  st.spec = spec;
  if (st.spec.empty()) {
    const char* env = std::getenv("CK_LOG");
    if (env) st.spec = env;
  }
  st.verbosity = verbosity;
  for (Module* m : st.modules) m->level = level_for(st, m->name);
}

void set_tool(const char* tool) { state().tool = tool; }
void set_output(int fd) { state().fd = fd; }

void set_log_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd >= 0) state().fd = fd;
}

void flush() {}

void emit(Module* m, int level, const char* file, int line, const char* fmt, ...) {
  State& st = state();
  char buf[4096];
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  int n = 0;
  if (level <= kWarn && st.fd == 2 && m->level < kDebug) {
    // Terse shape for the user: "ck-memread: warning: ..."
    n = std::snprintf(buf, sizeof buf, "%s: %s", st.tool, level == kError ? "" : "warning: ");
  } else {
    n = std::snprintf(buf, sizeof buf, "(%5ld.%06ld) %s[%ld] %s %s: ", static_cast<long>(ts.tv_sec),
                      ts.tv_nsec / 1000, st.tool, static_cast<long>(::syscall(SYS_gettid)), kNames[level],
                      m->name);
    (void)file;
    (void)line;
  }
  if (n < 0) n = 0;
  va_list ap;
  va_start(ap, fmt);
  int k = std::vsnprintf(buf + n, sizeof buf - n - 1, fmt, ap);
  va_end(ap);
  if (k < 0) k = 0;
  size_t len = std::min(sizeof buf - 2, static_cast<size_t>(n + k));
  buf[len++] = '\n';
  (void)!::write(st.fd, buf, len);
}

}  // namespace ck::log
