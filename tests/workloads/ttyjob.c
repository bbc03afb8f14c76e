/* An interactive job on a terminal, for --shell-job: run it from a shell
 * with job control, so it is a process group of its own in the shell's
 * session, in the foreground.  It turns echo off and makes ^K its kill
 * character, fills 8 MiB with a pattern, prints
 *     READY <pid> tty=<its terminal> fg=<1 if its group is the foreground>
 * and then reads lines from the terminal (asleep in read(2) on it when
 * dumped).  For each line it answers on the terminal:
 *     check  -> "PASS tty=... fg=..." if the terminal settings, the memory
 *               and the line count are as they should be, else "FAIL: ..."
 *     quit   -> exits with status 7
 *     other  -> "GOT <line> n=<lines so far> tty=... fg=..."
 */
#include "wl.h"

#include <termios.h>

#define MEM_BYTES (8u << 20)

static unsigned char *mem;
static volatile sig_atomic_t winch;  /* SIGWINCHes seen */

static void on_winch(int sig) {
  (void)sig;
  winch++;
}
static struct termios want;

static int fg(void) { return tcgetpgrp(0) == getpgrp(); }

static const char *tty(void) {
  const char *n = ttyname(0);
  return n ? n : "none";
}

static void check(unsigned lines) {
  struct termios t;
  if (tcgetattr(0, &t) < 0) wl_fail("tcgetattr: %s", strerror(errno));
  if ((t.c_lflag & ECHO) != (want.c_lflag & ECHO) || t.c_cc[VKILL] != want.c_cc[VKILL])
    wl_fail("terminal settings: echo %d kill %#x, want echo %d kill %#x", !!(t.c_lflag & ECHO), t.c_cc[VKILL],
            !!(want.c_lflag & ECHO), want.c_cc[VKILL]);
  for (size_t i = 0; i < MEM_BYTES; i++)
    if (mem[i] != (unsigned char)(i * 13 + (i >> 12))) wl_fail("memory differs at byte %zu", i);
  wl_say("PASS lines=%u tty=%s fg=%d winch=%d", lines, tty(), fg(), (int)winch);
}

int main(void) {
  if (!isatty(0)) wl_fail("stdin is not a terminal");
  if (tcgetattr(0, &want) < 0) wl_fail("tcgetattr: %s", strerror(errno));
  want.c_lflag &= ~(tcflag_t)ECHO;
  want.c_cc[VKILL] = 0x0b;
  if (tcsetattr(0, TCSANOW, &want) < 0) wl_fail("tcsetattr: %s", strerror(errno));
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_winch;
  sa.sa_flags = SA_RESTART;
  sigaction(SIGWINCH, &sa, NULL);
  mem = malloc(MEM_BYTES);
  if (!mem) wl_fail("malloc");
  for (size_t i = 0; i < MEM_BYTES; i++) mem[i] = (unsigned char)(i * 13 + (i >> 12));
  wl_say("READY %d tty=%s fg=%d", (int)getpid(), tty(), fg());
  char line[256];
  size_t len = 0;
  unsigned lines = 0;
  for (;;) {
    ssize_t n = read(0, line + len, sizeof line - 1 - len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) wl_fail("read from the terminal: %s", n ? strerror(errno) : "end of file");
    len += (size_t)n;
    char *nl;
    while ((nl = memchr(line, '\n', len))) {
      *nl = 0;
      if (!strcmp(line, "quit")) exit(7);
      if (!strcmp(line, "check"))
        check(lines);
      else
        wl_say("GOT %s n=%u tty=%s fg=%d", line, ++lines, tty(), fg());
      len -= (size_t)(nl + 1 - line);
      memmove(line, nl + 1, len);
    }
    if (len == sizeof line - 1) len = 0;
  }
}
