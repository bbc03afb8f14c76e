#!/bin/sh
# ck-anon throughput on a 1 GiB image (a counter with 1 GiB of random data,
# stored on tmpfs) against ck-store get alone in the same run: the figure is
# "get | ck-anon > /dev/null" over "get > /dev/null", best of 3 each (issue
# 16 target: >= 0.8).  ck-anon reads every payload (the reader checks its
# digest) and writes none.  The pipe alone costs most of the difference
# (ck-store get > /dev/null moves no byte through one), so the run also
# measures "get | cat > /dev/null" and ck-anon against that, and
# "ck-anon -D DIR" (the image read in place, verified again at the end).
# Prints "bench: NAME = VALUE UNIT".
set -u
top=${CK_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
B=$top/build
PATH=$B/bin:$top/pipelines:$PATH
tmp=$(mktemp -d /dev/shm/ck-bench-anon.XXXXXX) || exit 1
pid=""
cleanup() {
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
nsec() { date +%s%N; }
best() {  # best CMD: the fastest of 3 runs of sh -c CMD, in ns
  b=""
  for _ in 1 2 3; do
    t0=$(nsec)
    sh -c "$1" || { echo "anon.sh: '$1' failed" >&2; exit 1; }
    t=$(($(nsec) - t0))
    if [ -z "$b" ] || [ "$t" -lt "$b" ]; then b=$t; fi
  done
  echo "$b"
}
"$B/workloads/counter" 1024 > "$tmp/counter.out" 2>&1 < /dev/null &
pid=$!
i=0
while ! grep -q '^READY' "$tmp/counter.out" 2>/dev/null; do
  i=$((i + 1))
  [ $i -gt 1200 ] && { echo "anon.sh: counter did not get ready" >&2; exit 1; }
  sleep 0.05
done
ck-freeze -t "$pid" --leave-running -- sh -c "ck-memread | ck-store put -D '$tmp/img'" || exit 1
kill -9 "$pid"; pid=""
get=$(best "ck-store get -D '$tmp/img' > /dev/null")
cat=$(best "ck-store get -D '$tmp/img' | cat > /dev/null")
anon=$(best "ck-store get -D '$tmp/img' | ck-anon --key '$top/Makefile' > /dev/null")
dir=$(best "ck-anon -D '$tmp/img' --key '$top/Makefile' > /dev/null")
awk -v g="$get" -v a="$anon" -v c="$cat" -v d="$dir" 'BEGIN {
  printf "bench: store_get_1GiB = %.0f MiB/s\n", 1024 / (g / 1e9)
  printf "bench: anon_1GiB = %.0f MiB/s\n", 1024 / (a / 1e9)
  printf "bench: anon_vs_store_get = %.2f ratio\n", g / a
  printf "bench: anon_vs_store_get_cat = %.2f ratio\n", c / a
  printf "bench: anon_dir_1GiB = %.0f MiB/s\n", 1024 / (d / 1e9)
  printf "bench: anon_dir_vs_store_get = %.2f ratio\n", g / d
}'
