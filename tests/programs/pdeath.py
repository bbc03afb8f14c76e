# A python3 process whose parent-death signal is set (run it under
# `setpriv --pdeathsig USR1`), with a child whose own is SIGTERM.  It counts
# the SIGUSR1s it gets; on SIGUSR2 it prints PASS if its parent-death signal
# is still SIGUSR1, none arrived, and the child's is still SIGTERM; else
# FAIL: why.
import ctypes
import os
import signal
import time

libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG, PR_GET_PDEATHSIG = 1, 2


def pdeathsig():
    v = ctypes.c_int()
    libc.prctl(PR_GET_PDEATHSIG, ctypes.byref(v), 0, 0, 0)
    return v.value


got = []
signal.signal(signal.SIGUSR1, lambda *a: got.append("SIGUSR1"))
ask_r, ask_w = os.pipe()
ans_r, ans_w = os.pipe()
child = os.fork()
if child == 0:
    libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    while os.read(ask_r, 1):
        os.write(ans_w, b"%d\n" % pdeathsig())
    os._exit(0)
check = []
signal.signal(signal.SIGUSR2, lambda *a: check.append(1))
print("READY", os.getpid(), "child", child, flush=True)
while not check:
    time.sleep(0.02)
os.write(ask_w, b"?")
theirs = int(os.read(ans_r, 64))
mine = pdeathsig()
os.kill(child, signal.SIGKILL)
if mine == signal.SIGUSR1 and not got and theirs == signal.SIGTERM:
    print("PASS", flush=True)
else:
    print(f"FAIL: parent-death signal {mine} (want {int(signal.SIGUSR1)}), received {got}, the child's {theirs}",
          flush=True)
