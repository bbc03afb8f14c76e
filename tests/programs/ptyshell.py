"""Interactive shells on real terminals for the --shell-job tests: a bash on
a new pseudo-terminal that a test types into and reads from, and the /proc
facts of a task the tests compare.  Used by ptyjob.py and stopjob.py."""
import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time

shells = []


def fail(msg):
    print("FAIL: " + msg, flush=True)
    sys.exit(1)


class Shell:
    """An interactive bash on a new terminal; expect() reads its output."""

    def __init__(self, name, cols, rows):
        self.name = name
        env = dict(os.environ, PS1="PROMPT$ ", TERM="dumb")
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            # Only the terminal: a pipe of the test runner's that the job
            # inherited would be refused at dump (held outside the tree).
            os.closerange(3, 65536)
            os.execvpe("bash", ["bash", "--norc", "--noprofile", "--noediting", "-i"], env)
        shells.append(self)
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.buf = ""
        self.expect(r"PROMPT\$ ")
        self.tty = os.readlink(f"/proc/{self.pid}/fd/0")
        self.rdev = os.stat(self.tty).st_rdev

    def send(self, s):
        os.write(self.fd, s.encode())

    def expect(self, pattern, timeout=15):
        end = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.buf)
            if m:
                self.buf = self.buf[m.end():]
                return m
            left = end - time.monotonic()
            if left <= 0:
                fail(f"terminal {self.name}: no /{pattern}/ in {timeout} s; it showed: {self.buf[-600:]!r}")
            r, _, _ = select.select([self.fd], [], [], left)
            if r:
                try:
                    data = os.read(self.fd, 4096)
                except OSError:
                    data = b""
                if not data:
                    fail(f"terminal {self.name} closed; it showed: {self.buf[-600:]!r}")
                self.buf += data.decode(errors="replace")

    def close(self):
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        os.close(self.fd)


def stat(pid):
    """pgrp, session, tty_nr, tpgid and state of a task, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    rest = s[s.rindex(")") + 2:].split()
    return {"state": rest[0], "ppid": int(rest[1]), "pgrp": int(rest[2]), "sid": int(rest[3]), "tty": int(rest[4]),
            "tpgid": int(rest[5])}


def alive(pid):
    try:
        return stat(pid)["state"] != "Z"
    except FileNotFoundError:
        return False


def dump(pid, img):
    r = subprocess.run(["ck-dump", "-t", str(pid), "-D", img], stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"ck-dump -t {pid}: status {r.returncode}: {r.stderr}")
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(pid):
        fail(f"pid {pid} still runs after the dump")


