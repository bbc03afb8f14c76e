#!/usr/bin/env python3
"""A redis client that keeps one TCP connection across a dump and restore of
the server: it sets a counter, says "ready" in OUT, waits until the file GO
exists, then sends 100 INCRs in one write (pipelined) and checks that every
reply comes, in order, on the same connection.  Prints PASS or FAIL in OUT.
    redis_client.py PORT OUT GO"""
import os, socket, sys, time

port, out, go = int(sys.argv[1]), sys.argv[2], sys.argv[3]


def say(line):
    with open(out, "a") as f:
        f.write(line + "\n")


def read_line(s, buf):
    while b"\r\n" not in buf[0]:
        chunk = s.recv(65536)
        if not chunk:
            raise EOFError("the server closed the connection")
        buf[0] += chunk
    line, buf[0] = buf[0].split(b"\r\n", 1)
    return line


try:
    s = socket.create_connection(("127.0.0.1", port), 5)
    s.settimeout(30)
    me = s.getsockname()
    buf = [b""]
    s.sendall(b"SET n 1\r\n")
    if read_line(s, buf) != b"+OK":
        raise RuntimeError("SET failed")
    say("ready")
    while not os.path.exists(go):
        time.sleep(0.02)
    s.sendall(b"INCR n\r\n" * 100)
    for want in range(2, 102):
        got = read_line(s, buf)
        if got != b":%d" % want:
            raise RuntimeError("reply %r, not :%d" % (got, want))
    if s.getsockname() != me:
        raise RuntimeError("a new connection")
    say("PASS")
except Exception as e:
    say("FAIL: %s" % e)
