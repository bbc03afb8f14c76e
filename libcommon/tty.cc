#include "tty.h"

#include <asm/termbits.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstring>

#include "error.h"
#include "log.h"

CK_LOG_MODULE("tty");

namespace ck {
namespace {

// SIGTTOU blocked for the scope: a background process may then set the
// foreground group and termios without being stopped.
struct NoTtou {
  sigset_t old;
  NoTtou() {
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGTTOU);
    sigprocmask(SIG_BLOCK, &s, &old);
  }
  ~NoTtou() { sigprocmask(SIG_SETMASK, &old, nullptr); }
};

}  // namespace

bool tty_state(int fd, std::string* termios, std::string* winsize) {
  struct termios2 t;
  if (::ioctl(fd, TCGETS2, &t) < 0) {
    if (errno == ENOTTY || errno == EINVAL) return false;
    throw_errno("unable to read the terminal settings");
  }
  struct winsize w = {};
  if (::ioctl(fd, TIOCGWINSZ, &w) < 0) throw_errno("unable to read the terminal window size");
  termios->assign(reinterpret_cast<const char*>(&t), sizeof t);
  winsize->assign(reinterpret_cast<const char*>(&w), sizeof w);
  return true;
}

void tty_set_termios(int fd, const std::string& termios) {
  struct termios2 t;
  if (termios.size() != sizeof t) bad_input(strf("terminal settings of %zu bytes, not %zu", termios.size(), sizeof t));
  std::memcpy(&t, termios.data(), sizeof t);
  NoTtou guard;
  if (::ioctl(fd, TCSETSW2, &t) < 0) throw_errno("unable to set the terminal settings");
}

ShellTerminal::~ShellTerminal() {
  try {
    take_back();
  } catch (const Error& e) {
    LOG_WARN("%s", e.what());
  }
  if (fd_ >= 0) ::close(fd_);
}

bool ShellTerminal::open() {
  for (int fd = 0; fd < 3 && fd_ < 0; ++fd)
    if (::isatty(fd)) fd_ = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (fd_ < 0) fd_ = ::open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (fd_ < 0) return false;
  char name[256];
  if (::ttyname_r(fd_, name, sizeof name) != 0) throw_errno("unable to name the caller's terminal");
  path_ = name;
  std::string ws;
  if (!tty_state(fd_, &saved_, &ws)) fail("the caller's terminal '" + path_ + "' answers no terminal request");
  return true;
}

bool ShellTerminal::foreground() const { return fd_ >= 0 && ::tcgetpgrp(fd_) == ::getpgrp(); }

void ShellTerminal::give(pid_t pgrp, const std::string& termios) {
  if (!foreground()) return;  // a background caller keeps its job in the background
  if (!termios.empty()) tty_set_termios(fd_, termios);
  NoTtou guard;
  if (::tcsetpgrp(fd_, pgrp) < 0) throw_errno(strf("unable to give the terminal '%s' to process group %d", path_.c_str(), pgrp));
  given_ = pgrp;
  LOG_DEBUG("terminal %s: foreground group %d", path_.c_str(), pgrp);
}

void ShellTerminal::take_back() {
  if (!given_) return;
  given_ = 0;
  NoTtou guard;
  if (::tcsetpgrp(fd_, ::getpgrp()) < 0) throw_errno("unable to take the terminal '" + path_ + "' back");
  tty_set_termios(fd_, saved_);
}

}  // namespace ck
