#!/usr/bin/env python3
"""UDP state that ck-sockdump must carry over, checked by the program itself
on SIGUSR2 (prints PASS or FAIL: ...):
  rx   bound to 127.0.0.1:0, three datagrams queued, unread, from two senders
  tx   connected to rx, UDP_CORK set, "corked-" pending (not sent yet)
  mm   unconnected, "more-" pending through MSG_MORE for rx
On SIGUSR2 tx appends "data" and uncorks, mm sends "tail" without
MSG_MORE: rx must read the three old datagrams with their sources, then
"corked-data" and "more-tail" as one datagram each (the peer gets exactly
what it would have without the dump).
    udp_cork.py"""
import signal, socket, sys

UDP_CORK = 1
check = False


def on_usr2(*_):
    global check
    check = True


signal.signal(signal.SIGUSR2, on_usr2)
rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
rx.bind(("127.0.0.1", 0))
a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
a.bind(("127.0.0.1", 0))
b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
b.bind(("127.0.0.1", 0))
queued = [(a, b"one"), (b, b"two" * 100), (a, b"three")]
for s, d in queued:
    s.sendto(d, rx.getsockname())
tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
tx.connect(rx.getsockname())
tx.setsockopt(socket.IPPROTO_UDP, UDP_CORK, 1)
tx.send(b"corked-")
mm = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
mm.sendto(b"more-", socket.MSG_MORE, rx.getsockname())
print("READY", flush=True)
while not check:
    signal.pause()
try:
    rx.settimeout(10)
    for s, d in queued:
        got, frm = rx.recvfrom(65536)
        if got != d or frm != s.getsockname():
            raise RuntimeError("queued %r from %s, not %r from %s" % (got[:20], frm, d[:20], s.getsockname()))
    if tx.getsockopt(socket.IPPROTO_UDP, UDP_CORK) != 1:
        raise RuntimeError("tx is not corked")
    tx.send(b"data")
    tx.setsockopt(socket.IPPROTO_UDP, UDP_CORK, 0)
    got, frm = rx.recvfrom(65536)
    if got != b"corked-data" or frm != tx.getsockname():
        raise RuntimeError("uncorked %r from %s, not b'corked-data' from %s" % (got, frm, tx.getsockname()))
    mm.sendto(b"tail", rx.getsockname())
    got, frm = rx.recvfrom(65536)
    if got != b"more-tail" or frm[1] != mm.getsockname()[1]:  # mm is bound to 0.0.0.0: the port says it
        raise RuntimeError("MSG_MORE datagram %r from %s, not b'more-tail' from port %d" % (got, frm, mm.getsockname()[1]))
    rx.setblocking(False)
    try:
        extra = rx.recv(65536)
        raise RuntimeError("an extra datagram %r" % extra[:20])
    except BlockingIOError:
        pass
    print("PASS", flush=True)
except Exception as e:
    print("FAIL: %s" % e, flush=True)
