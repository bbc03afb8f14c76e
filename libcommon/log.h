// The logging API every tool uses.  Call sites look like
//
//   CK_LOG_MODULE("memread");            // once per .cc file
//   LOG_DEBUG("vma %#lx-%#lx", start, end);
//
// A disabled level costs one load and compare and does not evaluate the
// arguments.  Formats are printf-style and checked by the compiler.
#pragma once
#include <cstdint>
#include <string>

namespace ck::log {

enum Level : int { kError = 0, kWarn = 1, kInfo = 2, kDebug = 3, kTrace = 4 };

struct Module {
  const char* name;
  volatile int level;  // messages at or below this level are written
};

// Returns the module named `name`, created at the level CK_LOG / -v / -q set.
Module* module(const char* name);

// Configuration: spec is "all:info,memread:debug" (CK_LOG's syntax);
// verbosity adds to the default level (-v = +1, -q = -1).
void configure(const std::string& spec, int verbosity);
void set_tool(const char* tool);        // prefix of every message: "ck-memread"
void set_output(int fd);                // default 2
void set_log_file(const std::string& path);
void flush();

void emit(Module* m, int level, const char* file, int line, const char* fmt, ...)
    __attribute__((format(printf, 5, 6)));

}  // namespace ck::log

#define CK_LOG_MODULE(name) static ::ck::log::Module* const ck_log_module_ = ::ck::log::module(name)

#define CK_LOG(lvl, fmt, ...)                                                       \
  do {                                                                              \
    if (__builtin_expect(ck_log_module_->level >= (lvl), 0))                        \
      ::ck::log::emit(ck_log_module_, (lvl), __FILE__, __LINE__, fmt, ##__VA_ARGS__); \
  } while (0)

#define LOG_ERROR(fmt, ...) CK_LOG(::ck::log::kError, fmt, ##__VA_ARGS__)
#define LOG_WARN(fmt, ...) CK_LOG(::ck::log::kWarn, fmt, ##__VA_ARGS__)
#define LOG_INFO(fmt, ...) CK_LOG(::ck::log::kInfo, fmt, ##__VA_ARGS__)
#define LOG_DEBUG(fmt, ...) CK_LOG(::ck::log::kDebug, fmt, ##__VA_ARGS__)
#define LOG_TRACE(fmt, ...) CK_LOG(::ck::log::kTrace, fmt, ##__VA_ARGS__)
