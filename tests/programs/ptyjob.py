#!/usr/bin/python3
"""A --shell-job round trip driven through real terminals and real shells.

usage: ptyjob.py WORKLOAD IMAGE_DIR

Terminal A: an interactive bash runs the counter workload in the background
(dumped, then restored from terminal B with --shell-job -d: it must be a
background job there) and WORKLOAD (build/workloads/ttyjob) as a
foreground job.  That one is dumped with ck-dump (which kills it), then restored
without --shell-job (must be refused by name, nothing left running), then
from an interactive bash on terminal B with `ck-restore --shell-job`.  The
job must come back on terminal B, in the foreground, in B's session, with
the terminal settings it had on A; ^Z must stop it and ck-restore with it
(bash reports a stopped job), `fg` must bring both back; at the end the
terminal and its settings return to bash.  Each step prints a line; any
mismatch exits 1 with what was seen.  ck tools are taken from PATH.
"""
import os
import re
import signal
import subprocess
import sys
import termios
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ptyshell import Shell, alive, dump, fail, shells, stat  # noqa: E402

WL, IMG = sys.argv[1], sys.argv[2]
job = []  # the workload's pid, killed at the end if a failure left it running


def main():
    # --- terminal A: a background job and a foreground job, both dumped -----
    a = Shell("A", 132, 43)
    a.send(f"{os.path.join(os.path.dirname(WL), 'counter')} 8 &\n")
    bg = int(a.expect(r"READY (\d+)").group(1))
    job.append(bg)
    st = stat(bg)
    if st["pgrp"] != bg or st["sid"] != a.pid or st["tty"] != a.rdev or st["tpgid"] == bg:
        fail(f"the background job is not one of bash A: {st}")
    dump(bg, IMG + "-bg")
    print(f"dump: background job {bg} of {a.tty}", flush=True)
    a.send(f"{WL}\n")
    m = a.expect(r"READY (\d+) tty=(\S+) fg=(\d)")
    pid = int(m.group(1))
    job.append(pid)
    if m.group(2) != a.tty or m.group(3) != "1":
        fail(f"the job started on {m.group(2)} fg={m.group(3)}, not in the foreground of {a.tty}")
    a.send("one\n")
    a.expect(r"GOT one n=1 tty=\S+ fg=1")
    st = stat(pid)
    if st["pgrp"] != pid or st["sid"] != a.pid or st["tty"] != a.rdev or st["tpgid"] != pid:
        fail(f"before the dump the job is not a foreground job of bash A: {st}")
    print(f"dump: job {pid} in the foreground of {a.tty}, session {a.pid}", flush=True)
    time.sleep(0.2)  # asleep in read(2) on the terminal
    dump(pid, IMG)

    # --- without --shell-job: refused by name, nothing left ------------------
    r = subprocess.run(["ck-restore", "-D", IMG], stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if r.returncode == 0 or "terminal" not in r.stderr or "--shell-job" not in r.stderr:
        fail(f"restore without --shell-job: status {r.returncode}, message {r.stderr!r}")
    if alive(pid):
        fail(f"a refused restore left pid {pid} running")
    print("refused without --shell-job: " + r.stderr.strip().splitlines()[-1], flush=True)

    # --- terminal B: ck-restore --shell-job from an interactive bash ----------
    b = Shell("B", 80, 24)  # while A is still open: B is another terminal
    a.close()
    if b.tty == a.tty:
        fail(f"terminal B is {b.tty}, like A")
    # the background job comes back on B, in the background
    b.send(f"ck-restore --shell-job -d -D {IMG}-bg\n")
    b.expect(r"PROMPT\$ ")
    if not alive(bg):
        fail(f"the background job {bg} was not restored")
    st = stat(bg)
    links = [os.readlink(f"/proc/{bg}/fd/{fd}") for fd in (0, 1, 2)]
    if st["pgrp"] != bg or st["sid"] != b.pid or st["tty"] != b.rdev or st["tpgid"] == bg or links != [b.tty] * 3:
        fail(f"the background job is not a background job of bash B on {b.tty}: {st}, fds {links}")
    os.kill(bg, signal.SIGKILL)
    print(f"restored: background job {bg} in the background of {b.tty}", flush=True)
    b.send(f"ck-restore --shell-job -D {IMG}\n")
    deadline = time.monotonic() + 10
    while not alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    b.send("two\n")
    b.expect(rf"GOT two n=2 tty={re.escape(b.tty)} fg=1")
    st = stat(pid)
    if st["pgrp"] != pid or st["sid"] != b.pid or st["tty"] != b.rdev or st["tpgid"] != pid:
        fail(f"after the restore the job is not a foreground job of bash B ({b.pid}, {b.tty}): {st}")
    links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in (0, 1, 2)]
    if links != [b.tty] * 3:
        fail(f"fds 0..2 of the restored job point to {links}, not {b.tty}")
    print(f"restored: job {pid} in the foreground of {b.tty}, session {b.pid}", flush=True)

    # ^Z stops the job and ck-restore; fg brings both back.
    b.send("\x1a")
    b.expect(r"Stopped")
    b.expect(r"PROMPT\$ ")
    if stat(pid)["state"] != "T":
        fail(f"^Z: the job is {stat(pid)['state']}, not stopped")
    if termios.tcgetattr(b.fd)[3] & termios.ECHO == 0:
        fail("^Z: bash got the terminal back with the job's settings (echo off)")
    b.send("fg\n")
    time.sleep(0.5)
    b.send("three\n")
    b.expect(rf"GOT three n=3 tty={re.escape(b.tty)} fg=1")
    print("^Z stopped the job with ck-restore, fg gave it the terminal again", flush=True)
    b.send("check\n")
    m = b.expect(r"PASS lines=3 tty=\S+ fg=1 winch=(\d+)")
    if m.group(1) == "0":
        fail("the job was not told (SIGWINCH) that its terminal has another size now")
    b.send("quit\n")
    b.expect(r"PROMPT\$ ")
    b.send('echo "RC=$?"\n')  # the status of the job `fg` waited for: ck-restore's
    m = b.expect(r"RC=(\d+)")
    if m.group(1) != "7":
        fail(f"ck-restore exited with {m.group(1)}, the job with 7")
    if os.tcgetpgrp(b.fd) != b.pid:
        fail(f"after the job: the foreground group is {os.tcgetpgrp(b.fd)}, not bash's {b.pid}")
    if termios.tcgetattr(b.fd)[3] & termios.ECHO == 0:
        fail("after the job: the terminal kept the job's settings (echo off)")
    b.close()
    print("PASS: the job passed its check, ck-restore passed on its status 7, bash has its terminal back", flush=True)


try:
    main()
finally:
    for p in job:
        if alive(p):
            os.kill(p, signal.SIGKILL)
    for s in shells:
        try:
            s.close()
        except OSError:
            pass
