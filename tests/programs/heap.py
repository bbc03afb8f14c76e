# A python3 process with ~200 MiB of heap (bytes objects); on SIGUSR2 it
# checks the heap against the digest it took at start and says PASS.
import hashlib, os, signal, sys, time
data = [os.urandom(1024) for _ in range(200000)]  # ~200 MiB heap of bytes objects
digest = hashlib.sha256(b"".join(data)).hexdigest()
out = open(sys.argv[1], "a", buffering=1)
done = False
def check(sig, frame):
    global done
    done = True
signal.signal(signal.SIGUSR2, check)
out.write(f"READY {os.getpid()}\n")
n = 0
while not done:
    n += 1
    time.sleep(0.001)
ok = hashlib.sha256(b"".join(data)).hexdigest() == digest
out.write(("PASS" if ok else "FAIL: heap changed") + f" n={n}\n")
