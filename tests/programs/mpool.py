# python3 multiprocessing: a Pool of two workers (pipes between them, locks
# and semaphores in /dev/shm, unlinked while mapped MAP_SHARED) and a
# Semaphore(3) with one taken.  On SIGUSR2 it maps work over the pool again
# and checks the semaphore's count (one of three held, in its shared
# mapping): PASS or FAIL: why.
import multiprocessing as mp
import os
import signal
import time


def square(x):
    return x * x


def main():
    sem = mp.Semaphore(3)
    pool = mp.Pool(2)
    if pool.map(square, range(50)) != [x * x for x in range(50)]:
        print("FAIL: the pool before the dump", flush=True)
        return
    sem.acquire()
    check = []
    signal.signal(signal.SIGUSR2, lambda *a: check.append(1))
    print("READY", os.getpid(), flush=True)
    while not check:
        time.sleep(0.02)
    if pool.map(square, range(1000), chunksize=7) != [x * x for x in range(1000)]:
        print("FAIL: the pool after the restore", flush=True)
        return
    if not (sem.acquire(timeout=2) and sem.acquire(timeout=2)) or sem.acquire(timeout=0.2):
        print("FAIL: the semaphore does not hold 2 of 3 any more", flush=True)
        return
    pool.close()
    pool.join()
    print("PASS", flush=True)


main()
