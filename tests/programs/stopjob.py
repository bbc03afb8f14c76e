#!/usr/bin/python3
"""Stopped jobs and session leaders on real terminals, with real shells.

usage: stopjob.py IMAGE_DIR SCRATCH_DIR

1. An interactive bash is a session leader with a controlling terminal:
   ck-dump refuses it by name and the shell runs on (answers a command).
2. vim, run from bash on terminal A, gets text typed in and is stopped with
   ^Z; it is dumped (ck-dump kills it) and restored from bash on terminal
   B with `ck-restore --shell-job`: ck-restore must come back as a stopped
   job of B (vim stopped in B's session, in a group of its own); `bg` lets
   vim run in the background until it reads the terminal and stops again
   (and ck-restore with it); `kill -CONT` continues vim itself (it runs,
   then stops again on the terminal); `fg` gives vim the terminal:
   the text typed then and `:wq` must save both words to the file, and
   ck-restore ends with vim's status.
Each step prints a line; any mismatch exits 1 with what was seen.  ck tools
come from PATH.
"""
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ptyshell import Shell, alive, dump, fail, shells, stat  # noqa: E402

IMG, SCRATCH = sys.argv[1], sys.argv[2]
job = []  # vim's pid, killed at the end if a failure left it running


def sigcgt(pid):
    with open(f"/proc/{pid}/status") as f:
        return re.search(r"SigCgt:\s*(\S+)", f.read()).group(1)


def cpu_ns(pid):
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def wait_state(pid, want, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if alive(pid) and stat(pid)["state"] == want:
            return
        time.sleep(0.02)
    fail(f"pid {pid} is {stat(pid)['state'] if alive(pid) else 'gone'}, not {want}")


def main():
    # --- a session leader on its terminal: refused, runs on ----------------
    s = Shell("S", 80, 24)
    r = subprocess.run(["ck-dump", "-t", str(s.pid), "-D", IMG + "-sl"], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True)
    if r.returncode != 1 or "session leader" not in r.stderr or "controlling terminal" not in r.stderr:
        fail(f"dump of an interactive bash: status {r.returncode}, {r.stderr!r}")
    if os.path.exists(IMG + "-sl/manifest"):
        fail("a refused dump left an image")
    s.send("echo alive-$((40+2))\n")
    s.expect(r"alive-42")
    refusal = [l for l in r.stderr.strip().splitlines() if "unable to dump" in l] or r.stderr.strip().splitlines()[:1]
    print("refused: " + refusal[0], flush=True)
    s.close()
    shells.remove(s)

    # --- vim stopped with ^Z on terminal A ------------------------------------
    text = os.path.join(SCRATCH, "text")
    a = Shell("A", 80, 24)
    a.send(f"TERM=xterm vim -u NONE -i NONE -N -n {text}\n")
    time.sleep(1)  # vim has the terminal and reads it
    a.send("ihello\x1b")
    time.sleep(0.3)
    a.send("\x1a")
    a.expect(r"Stopped")
    a.expect(r"PROMPT\$ ")
    a.send("jobs -p\n")
    vim = int(a.expect(r"\n(\d+)\s").group(1))
    job.append(vim)
    wait_state(vim, "T")
    st = stat(vim)
    if st["pgrp"] != vim or st["sid"] != a.pid:
        fail(f"vim is not a job of bash A: {st}")
    print(f"dump: vim {vim} stopped with ^Z, a job of bash A on {a.tty}", flush=True)
    dump(vim, IMG)

    # --- restored as a stopped job of bash B ----------------------------------
    b = Shell("B", 80, 24)
    a.close()
    shells.remove(a)
    b.send(f"ck-restore --shell-job -D {IMG}\n")
    b.expect(r"Stopped")
    b.expect(r"PROMPT\$ ")
    if not alive(vim):
        fail("vim was not restored")
    wait_state(vim, "T")
    st = stat(vim)
    if st["pgrp"] != vim or st["sid"] != b.pid or st["tty"] != b.rdev:
        fail(f"restored vim is not in a group of its own in B's session on {b.tty}: {st}")
    print(f"restored: vim {vim} stopped, ck-restore a stopped job of bash B", flush=True)

    # bg: vim runs in the background until it touches the terminal, and
    # stops again; ck-restore with it (bash says so when asked: it reports
    # a background job's stop at its next prompt)
    restorer = stat(vim)["ppid"]
    caught = sigcgt(vim)
    b.send("bg\n")
    b.expect(r"PROMPT\$ ")
    wait_state(restorer, "T")
    wait_state(vim, "T")
    if sigcgt(vim) == caught:
        fail("bg: vim did not run (it sets its SIGTSTP handler again when it is continued)")
    b.send("jobs\n")
    b.expect(r"Stopped")
    b.expect(r"PROMPT\$ ")
    print("bg: vim ran in the background and stopped again on the terminal, ck-restore too", flush=True)

    # kill -CONT: vim itself continues (it runs: its CPU time grows), then
    # stops again on the terminal it does not have
    ran = cpu_ns(vim)
    b.send(f"kill -CONT {vim}\n")
    b.expect(r"PROMPT\$ ")
    end = time.monotonic() + 10
    while cpu_ns(vim) == ran and time.monotonic() < end:
        time.sleep(0.02)
    if cpu_ns(vim) == ran:
        fail("kill -CONT: vim did not run")
    wait_state(vim, "T")
    print("kill -CONT: vim ran and stopped again on the terminal", flush=True)

    # fg: vim has the terminal; type, save, quit
    b.send("fg\n")
    time.sleep(1)
    b.send("A world\x1b")
    time.sleep(0.3)
    b.send(":wq\r")
    b.expect(r"PROMPT\$ ", timeout=20)
    b.send('echo "RC=$?"\n')
    m = b.expect(r"RC=(\d+)")
    if m.group(1) != "0":
        fail(f"ck-restore ended with {m.group(1)}, not vim's 0")
    got = open(text).read()
    if got != "hello world\n":
        fail(f"vim saved {got!r}, not 'hello world'")
    if alive(vim):
        fail("vim still runs after :wq")
    print("PASS: fg gave vim the terminal; it saved 'hello world' and ck-restore passed on its status", flush=True)


try:
    main()
finally:
    for p in job:
        if alive(p):
            os.kill(p, signal.SIGKILL)
    for sh in shells:
        try:
            sh.close()
        except OSError:
            pass
