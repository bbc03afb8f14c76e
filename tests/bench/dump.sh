#!/bin/sh
# Dump throughput of ck-memread against the memcpy bandwidth of this machine,
# measured in the same run.
#
# Baseline: build/bench/memcpy_bw copies a populated 1 GiB buffer in 4 MiB
# pieces into one reused 4 MiB buffer (the access pattern of a dump: the
# source streams from DRAM, the destination stays in cache); best of 3.
# Ratios are against that one.  For reference, also a 1 GiB -> 1 GiB copy
# (DRAM to DRAM, "memcpy_1GiB_to_1GiB"), which is slower and would flatter
# the ratios.
# Dumps: `ck-memread -t PID` of a 1 GiB random-content process (counter 1024)
# and of a 1 GiB mostly-zero one (zeros 1024: every page populated, one in 64
# non-zero), into /dev/null and into a file on tmpfs (/dev/shm), and through
# `ck-store put -D DIR` on tmpfs when ck-store exists.  Each figure is the
# best of 3 runs of wall-clock time (date +%s%N around the command), as
# 1 GiB / time.  The target is stopped (SIGSTOP) while it is read, as
# ck-freeze would have it, so its busy loop does not take a CPU from the
# dump; it is continued afterwards.  "_cpu" figures use the dump's own CPU
# time (user + system, from GNU time) instead of wall-clock time: they do not
# move with the load other processes put on the machine.
# Peak RSS of every stage: GNU time's %M (maximum resident set, KiB) when
# /usr/bin/time is there.
# Prints "bench: NAME = VALUE UNIT".  Issue targets: >= 0.5 of memcpy into
# /dev/null, >= 0.35 into tmpfs, no stage above 64 MiB RSS.
set -u
top=${CK_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
B=$top/build
PATH=$B/bin:$PATH
tmp=$(mktemp -d /dev/shm/ck-bench.XXXXXX) || exit 1
pids=""
cleanup() {
  for p in $pids; do kill -9 "$p" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

GIB=1073741824
TIME=""
[ -x /usr/bin/time ] && TIME=/usr/bin/time

nsec() { date +%s%N; }

# start NAME ARGS: starts a workload, waits for READY, prints its pid.
start() {
  name=$1; shift
  "$B/workloads/$name" "$@" > "$tmp/$name.out" 2>&1 < /dev/null &
  p=$!
  i=0
  while ! grep -q '^READY' "$tmp/$name.out" 2>/dev/null; do
    i=$((i + 1))
    if [ $i -gt 1200 ]; then echo "dump.sh: $name did not get ready" >&2; kill -9 $p; return 1; fi
    sleep 0.05
  done
  echo $p
}

# run_best NAME CMD: runs `sh -c CMD` 3 times; prints "NS RSS_KIB CPU_NS":
# the fastest wall-clock time, the largest peak RSS GNU time saw in any run,
# and the smallest CPU time (0 without GNU time).
run_best() {
  best=""; rss=0; cpu=0
  for _ in 1 2 3; do
    t0=$(nsec)
    if [ -n "$TIME" ]; then
      $TIME -f '%M %U %S' -o "$tmp/rss" sh -c "$2" || { echo "dump.sh: $1 failed" >&2; return 1; }
      set -- "$1" "$2" $(tail -n1 "$tmp/rss")
      [ "$3" -gt "$rss" ] && rss=$3
      c=$(awk -v u="$4" -v s="$5" 'BEGIN { printf "%d", (u + s) * 1e9 }')
      if [ "$cpu" -eq 0 ] || [ "$c" -lt "$cpu" ]; then cpu=$c; fi
    else
      sh -c "$2" || { echo "dump.sh: $1 failed" >&2; return 1; }
    fi
    t1=$(nsec)
    d=$((t1 - t0))
    if [ -z "$best" ] || [ "$d" -lt "$best" ]; then best=$d; fi
  done
  echo "$best $rss $cpu"
}

report() {  # NAME NS RSS_KIB CPU_NS
  awk -v n="$1" -v ns="$2" -v rss="$3" -v cpu="$4" -v mc="$memcpy" -v gib=$GIB 'BEGIN {
    gbs = gib / (ns / 1e9) / 1e9
    printf "bench: dump_%s = %.2f GB/s\n", n, gbs
    printf "bench: dump_%s_vs_memcpy = %.2f ratio\n", n, gbs / mc
    if (cpu > 0) printf "bench: dump_%s_cpu_vs_memcpy = %.2f ratio\n", n, gib / (cpu / 1e9) / 1e9 / mc
    if (rss > 0) printf "bench: dump_%s_peak_rss = %.1f MiB\n", n, rss / 1024
  }'
}

memcpy=$("$B/bench/memcpy_bw" 1024) || exit 1
echo "bench: memcpy_4MiB_chunks = $memcpy GB/s"
full=$("$B/bench/memcpy_bw" 1024 full) && echo "bench: memcpy_1GiB_to_1GiB = $full GB/s"
echo "bench: load_average = $(cut -d' ' -f1 /proc/loadavg) tasks"

rc=0
for wl in counter zeros; do
  pid=$(start $wl 1024) || exit 1
  pids="$pids $pid"
  kill -STOP "$pid"
  set -- $(run_best "${wl}_devnull" "ck-memread -t $pid > /dev/null") || rc=1
  [ $# -eq 3 ] && report "${wl}_devnull" "$1" "$2" "$3"
  set -- $(run_best "${wl}_tmpfs" "ck-memread -t $pid > $tmp/s.ck") || rc=1
  [ $# -eq 3 ] && report "${wl}_tmpfs" "$1" "$2" "$3"
  [ -f "$tmp/s.ck" ] && echo "bench: dump_${wl}_stream_size = $(($(stat -c %s "$tmp/s.ck") >> 20)) MiB"
  rm -f "$tmp/s.ck"
  if command -v ck-store > /dev/null 2>&1; then
    # Both stages' peak RSS: GNU time reports the largest of the process tree's
    # members (the shell waits for both).  Measured apart too, for each stage.
    set -- $(run_best "${wl}_store" "rm -rf $tmp/img; ck-memread -t $pid | ck-store put -D $tmp/img") || rc=1
    [ $# -eq 3 ] && report "${wl}_store_tmpfs" "$1" "$2" "$3"
    if [ -n "$TIME" ]; then
      rm -rf "$tmp/img"
      $TIME -f %M -o "$tmp/rss_store" sh -c "ck-memread -t $pid | ck-store put -D $tmp/img" &&
        echo "bench: ck-store_put_${wl}_peak_rss = $(awk '{printf "%.1f", $1/1024}' "$tmp/rss_store") MiB"
    fi
    rm -rf "$tmp/img"
  fi
  kill -CONT "$pid" 2>/dev/null
  kill -9 "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
done
exit $rc
