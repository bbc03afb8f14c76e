// Owners of kernel resources: a move-only fd.
#pragma once
#include <unistd.h>

#include <string>
#include <utility>

namespace ck {

class ScopedFd {
 public:
  ScopedFd() = default;
  explicit ScopedFd(int fd) : fd_(fd) {}
  ScopedFd(ScopedFd&& o) noexcept : fd_(o.extract()) {}
  ScopedFd& operator=(ScopedFd&& o) noexcept {
    if (this != &o) reset(o.extract());
    return *this;
  }
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  ~ScopedFd() { reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int extract() { return std::exchange(fd_, -1); }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

// A copy of fd number `fd` of process `pid` (pidfd_getfd, which needs
// ptrace access to it); invalid, with errno set, if that fails.
ScopedFd take_fd(pid_t pid, int fd);

// Writes/reads all of buf, retrying on EINTR and short counts.  Throw on error;
// read_full returns the bytes read, short only at EOF.
void write_full(int fd, const void* buf, size_t len);
size_t read_full(int fd, void* buf, size_t len);
std::string read_file(const std::string& path);  // whole small file (/proc)
bool try_read_file(const std::string& path, std::string* out);

}  // namespace ck
