// Errors are exceptions that carry an exit status and gather context on the
// way up: "dumping pid 42: reading /proc/42/maps: No such file or directory".
#pragma once
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

namespace ck {

enum Exit : int { kOk = 0, kFail = 1, kUsage = 2, kBadInput = 3 };

class Error : public std::runtime_error {
 public:
  Error(int status, const std::string& msg) : std::runtime_error(msg), status_(status) {}
  int status() const { return status_; }
  // A new error with "context: " in front of this one's message.
  Error wrap(const std::string& context) const { return Error(status_, context + ": " + what()); }

 private:
  int status_;
};

// "unable to open '/x': No such file or directory" from errno.
[[noreturn]] void throw_errno(const std::string& what, int err = errno);
[[noreturn]] void fail(const std::string& what);       // status 1
[[noreturn]] void bad_input(const std::string& what);  // status 3
[[noreturn]] void usage_error(const std::string& what);  // status 2

// Runs f(); an Error escaping it gets "context: " prepended.
template <class F>
auto with_context(const std::string& context, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Error& e) {
    throw e.wrap(context);
  }
}

std::string strf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

}  // namespace ck
