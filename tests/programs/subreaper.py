#!/usr/bin/env python3
"""subreaper.py OUT CMD...: runs CMD as a child subreaper and writes one line
to OUT for every descendant it reaps, "PID exit N" or "PID signal NAME", so
that a test learns how a process that is not its child (a restored tree
that ck-restore -d left behind) ended.  It returns once none is left."""
import ctypes, os, signal, sys

PR_SET_CHILD_SUBREAPER = 36
if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
    sys.exit("subreaper.py: prctl: %s" % os.strerror(ctypes.get_errno()))
out = open(sys.argv[1], "a", buffering=1)
child = os.fork()
if child == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
status = 0
while True:
    try:
        pid, st = os.waitpid(-1, 0)
    except ChildProcessError:
        break
    if os.WIFSIGNALED(st):
        out.write("%d signal %s\n" % (pid, signal.Signals(os.WTERMSIG(st)).name))
    else:
        out.write("%d exit %d\n" % (pid, os.WEXITSTATUS(st)))
    if pid == child:
        status = os.WEXITSTATUS(st) if os.WIFEXITED(st) else 1
sys.exit(status)
