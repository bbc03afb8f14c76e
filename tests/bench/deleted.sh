#!/bin/sh
# Contents of a deleted file: how fast they leave and come back, against
# floors measured in the same run, and the memory it takes.
#
# Target: `sleep` holding fd 3 on a 512 MiB file of random bytes on tmpfs
# (/dev/shm), deleted.
#  - deleted_dump_vs_read: ck-freeze -t PID --leave-running -- sh -c
#    'cat > /dev/null' (the contents hashed through a mapping and spliced
#    into the stream) against reading the file once with dd into /dev/null
#    (bs=4M: one copy out of the page cache).  Above 1: faster than a read.
#  - deleted_restore_vs_tmpfs_write: ck-restore -d of the stored image (the
#    file made again on tmpfs from pages.img) against writing the same bytes
#    into a new tmpfs file with dd (the floor: the pages are fresh memory
#    either way).  Above 1: faster than that write.
#  - deleted_dump_freeze_rss: peak RSS of ck-freeze in that dump (KiB):
#    bounded, whatever the file's size.
# Best of 3 wall-clock times each.  Prints "bench: NAME = VALUE UNIT".
set -u
top=${CK_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
PATH=$top/build/bin:$top/pipelines:$PATH
tmp=$(mktemp -d /dev/shm/ck-bench-del.XXXXXX) || exit 1
pid=""
cleanup() {
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
nsec() { date +%s%N; }
best() {  # best ELAPSED_NS... -> the smallest
  printf '%s\n' "$@" | sort -n | head -n1
}
MIB=512
python3 -c "
import os, sys
with open(sys.argv[1], 'wb') as f:
    for _ in range($MIB):
        f.write(os.urandom(1 << 20))" "$tmp/data" || exit 1
setsid sleep 1000 3< "$tmp/data" < /dev/null > /dev/null 2>&1 &
pid=$!
sleep 0.2
rm "$tmp/data"

runs=""
for i in 1 2 3; do
  t0=$(nsec); dd if=/proc/$pid/fd/3 of=/dev/null bs=4M 2>/dev/null; t1=$(nsec)
  runs="$runs $((t1 - t0))"
done
read_ns=$(best $runs)
runs=""
for i in 1 2 3; do
  t0=$(nsec); ck-freeze -t "$pid" --leave-running -- sh -c 'cat > /dev/null' || exit 1; t1=$(nsec)
  runs="$runs $((t1 - t0))"
done
dump_ns=$(best $runs)
echo "bench: deleted_dump_vs_read = $(echo "$read_ns $dump_ns" | awk '{printf "%.2f", $1 / $2}') ratio"
if [ -x /usr/bin/time ]; then
  rss=$(/usr/bin/time -f %M ck-freeze -t "$pid" --leave-running -- sh -c 'cat > /dev/null' 2>&1 >/dev/null | tail -n1)
  echo "bench: deleted_dump_freeze_rss = $rss KiB"
fi

ck-dump -t "$pid" -D "$tmp/img" || exit 1
runs=""
for i in 1 2 3; do
  # the floor: the same bytes into a new tmpfs file
  t0=$(nsec); dd if="$tmp/img/pages.img" of="$tmp/copy" bs=4M 2>/dev/null; t1=$(nsec)
  rm -f "$tmp/copy"
  runs="$runs $((t1 - t0))"
done
write_ns=$(best $runs)
runs=""
for i in 1 2 3; do
  t0=$(nsec); ck-restore -D "$tmp/img" -d || exit 1; t1=$(nsec)
  runs="$runs $((t1 - t0))"
  kill -9 "$pid"
  while [ -d /proc/"$pid" ]; do sleep 0.01; done
done
pid=""
restore_ns=$(best $runs)
echo "bench: deleted_restore_vs_tmpfs_write = $(echo "$write_ns $restore_ns" | awk '{printf "%.2f", $1 / $2}') ratio"
