# A sqlite3 writer inside BEGIN IMMEDIATE (python3's sqlite3 module): it
# inserts 100 rows and waits; on SIGUSR2 it commits and prints PASS, or
# FAIL: why.   usage: sqlwriter.py DB
#   sqlwriter.py --second DB: a second writer that tries to commit one row
#   at once (no waiting) and prints "second: committed" or "second: ERROR".
import os
import signal
import sqlite3
import sys
import time

if sys.argv[1] == "--second":
    con = sqlite3.connect(sys.argv[2], isolation_level=None, timeout=0)
    try:
        con.execute("BEGIN IMMEDIATE")
        con.execute("INSERT INTO t VALUES (1000, 'second')")
        con.execute("COMMIT")
        print("second: committed", flush=True)
    except sqlite3.OperationalError as e:
        print(f"second: {e}", flush=True)
    sys.exit(0)

con = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=0)
con.execute("BEGIN IMMEDIATE")
for i in range(100):
    con.execute("INSERT INTO t VALUES (?, 'first')", (i,))
check = []
signal.signal(signal.SIGUSR2, lambda *a: check.append(1))
print("READY", os.getpid(), flush=True)
while not check:
    time.sleep(0.02)
try:
    con.execute("COMMIT")
    n = con.execute("SELECT count(*) FROM t WHERE who = 'first'").fetchone()[0]
    ok = con.execute("PRAGMA integrity_check").fetchone()[0]
    print("PASS" if n == 100 and ok == "ok" else f"FAIL: {n} rows after the commit, integrity {ok}", flush=True)
except sqlite3.Error as e:
    print(f"FAIL: COMMIT: {e}", flush=True)
