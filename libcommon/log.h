// The logging API every tool uses.  Call sites look like
//
//   CK_LOG_MODULE("memread");            // once per .cc file
//   LOG_DEBUG("vma %#lx-%#lx", start, end);
//
// A disabled level costs one load and compare and does not evaluate the
// arguments.  An enabled one does not format: it copies the format pointer
// and the raw arguments (and the bytes of %s strings) into a per-thread ring;
// a background thread, or flush(), turns them into text.  Formats must be
// string literals; they are printf-style and checked by the compiler, and the
// conversions the engine cannot carry (%n, %ls, %lc, positional "%1$d") are
// refused at compile time.  See ck-log(7).
#pragma once
#include <cstdint>
#include <string>

namespace ck::log {

enum Level : int { kOff = -1, kError = 0, kWarn = 1, kInfo = 2, kDebug = 3, kTrace = 4 };

struct Module {
  const char* name;
  volatile int level;  // messages at or below this level are written
};

// Returns the module named `name`, created at the level CK_LOG / -v / -q set.
Module* module(const char* name);

// Configuration: spec is "all:info,memread:debug" (CK_LOG's syntax; an empty
// spec means $CK_LOG); verbosity adds to every module's level (-v = +1,
// -q = -1), errors are always kept unless a module is set to "off".
void configure(const std::string& spec, int verbosity);
void set_tool(const char* tool);        // prefix of every message: "ck-memread"
void set_output(int fd);                // default 2
void set_log_file(const std::string& path);  // appends (O_APPEND); full lines
// Writes every message logged so far (by any thread) before returning.
void flush();
// Installs handlers for SIGSEGV, SIGBUS, SIGFPE, SIGILL and SIGABRT that
// write every pending message, then let the signal do what it did before.
void install_crash_handlers();
// For code that creates a process with a raw clone(2) rather than fork():
// call it first thing in the child (fork() needs nothing).
void after_fork_child();
// Messages that could not be written as logged (only a signal handler that
// logs while its own thread is logging can cause it); 0 in normal runs.
uint64_t lost();

}  // namespace ck::log

#include "log_impl.h"

#define CK_LOG_MODULE(name) static ::ck::log::Module* const ck_log_module_ = ::ck::log::module(name)

// The local struct carries the format to the template as a compile-time
// constant: emit<> parses it at compile time and copies each argument the
// way its conversion needs.  check_format() is never called; it is there so
// that -Wformat checks every call site.
#define CK_LOG(lvl, fmt, ...)                                                        \
  do {                                                                               \
    if (__builtin_expect(ck_log_module_->level >= (lvl), 0)) {                       \
      struct ck_log_fmt_ {                                                           \
        static constexpr const char* str() { return fmt; }                          \
      };                                                                             \
      ::ck::log::detail::emit<ck_log_fmt_>(ck_log_module_, (lvl), ##__VA_ARGS__);    \
    }                                                                                \
    if (0) ::ck::log::detail::check_format(fmt, ##__VA_ARGS__);                      \
  } while (0)

#define LOG_ERROR(fmt, ...) CK_LOG(::ck::log::kError, fmt, ##__VA_ARGS__)
#define LOG_WARN(fmt, ...) CK_LOG(::ck::log::kWarn, fmt, ##__VA_ARGS__)
#define LOG_INFO(fmt, ...) CK_LOG(::ck::log::kInfo, fmt, ##__VA_ARGS__)
#define LOG_DEBUG(fmt, ...) CK_LOG(::ck::log::kDebug, fmt, ##__VA_ARGS__)
#define LOG_TRACE(fmt, ...) CK_LOG(::ck::log::kTrace, fmt, ##__VA_ARGS__)
