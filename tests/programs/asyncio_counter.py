# An asyncio program (its loop wakes itself through a socketpair, AF_UNIX)
# writing a growing counter into argv[1] every 10 ms.
import asyncio
import os
import sys


async def main():
    n = 0
    while True:
        n += 1
        with open(sys.argv[1] + ".tmp", "w") as f:
            f.write(str(n))
        os.replace(sys.argv[1] + ".tmp", sys.argv[1])
        await asyncio.sleep(0.01)


asyncio.run(main())
