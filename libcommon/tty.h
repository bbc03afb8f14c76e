// Terminals: what ck keeps of a tty (its termios and window size, as the
// kernel's own structures), and the job control a --shell-job restore does
// on the caller's terminal.  The kernel's struct termios2 is used rather
// than glibc's struct termios, whose layout differs from the kernel's.
#pragma once
#include <sys/types.h>

#include <string>

namespace ck {

// If fd is a terminal: its termios2 and winsize bytes, true.  Not a
// terminal (ENOTTY, EINVAL): false.  Anything else throws.
bool tty_state(int fd, std::string* termios, std::string* winsize);

// Sets termios2 bytes from tty_state() on fd (after output drains).
void tty_set_termios(int fd, const std::string& termios);

// The caller's terminal while a restored job uses it, as a shell does for
// a foreground job: give() makes pgrp the foreground group, take_back()
// returns the terminal to the caller's group and its termios as found.
// Both block SIGTTOU, so they work from the background too; give() only
// happens when the caller is itself in the foreground.
class ShellTerminal {
 public:
  ~ShellTerminal();
  // Finds the caller's terminal (fd 0, 1 or 2 if one is a terminal, else
  // /dev/tty); false if there is none.
  bool open();
  const std::string& path() const { return path_; }
  int fd() const { return fd_; }
  bool foreground() const;  // is the caller's process group the foreground one?
  void give(pid_t pgrp, const std::string& termios);
  void take_back();
  bool given() const { return given_ != 0; }
  pid_t job() const { return given_; }

 private:
  int fd_ = -1;
  std::string path_;
  std::string saved_;  // the caller's termios, as found
  pid_t given_ = 0;
};

}  // namespace ck
