#!/usr/bin/env python3
"""A process that holds a distinct canary string in every place ck-anon
must clean (tests/bats/anon.bats): its memory (and a random region),
argv, an environment name and value (set by the caller), its cwd, a file
name, a deleted file's and a memfd's contents, pipe data, a unix socket
name and queue, a TCP connection on 127.83.91.17 with queued data both
ways, a corked UDP datagram, a thread name.  Prints READY, then sleeps.
    anon_canaries.py DIR argvCANARYarg"""
import ctypes, os, random, socket, sys, threading, time

d = sys.argv[1]
os.makedirs(d + "/cwdCANARYdir", exist_ok=True)
os.chdir(d + "/cwdCANARYdir")
mem = bytearray(b"memCANARYheap" * 4096)           # 52 KiB of it in the heap
rnd = bytes(random.getrandbits(8) for _ in range(65536))
open("rnd.bin", "wb").write(rnd)                    # for the test to look for
keep = open("fileCANARYname", "w")
dl = open("gone", "w+")
dl.write("delCANARYdata" * 10)
dl.flush()
os.unlink("gone")
mfd = os.memfd_create("memfdCANARYname")
os.write(mfd, b"memfdCANARYdata" * 10)
pr, pw = os.pipe()
os.write(pw, b"pipeCANARYdata")
ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
ls.bind("unixCANARYsock")
ls.listen(4)
uc = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
uc.connect("unixCANARYsock")
ua, _ = ls.accept()
uc.sendall(b"unixqCANARYdata")
tl = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
tl.bind(("127.83.91.17", 0))
tl.listen(4)
tc = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
tc.bind(("127.83.91.18", 0))
tc.connect(tl.getsockname())
ta, _ = tl.accept()
tc.sendall(b"tcpqCANARYdata")
ta.sendall(b"tcpbackCANARYdata")
ur = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
ur.bind(("127.83.91.17", 0))
ut = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
ut.setsockopt(socket.IPPROTO_UDP, 1, 1)             # UDP_CORK
ut.connect(ur.getsockname())
ut.send(b"corkCANARYdata")


def named():
    ctypes.CDLL(None).prctl(15, b"thrCANARY", 0, 0, 0)  # PR_SET_NAME
    while True:
        time.sleep(1)


threading.Thread(target=named, daemon=True).start()
time.sleep(0.2)
print("READY", os.getpid(), flush=True)
while True:
    time.sleep(1)
