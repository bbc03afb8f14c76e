#!/bin/sh
# Dump throughput against the memcpy bandwidth of this machine, measured in
# the same run, and the peak RSS of every stage.
#
# Baseline: build/bench/memcpy_bw copies a populated 1 GiB buffer in 4 MiB
# pieces into one reused 4 MiB buffer (the access pattern of a dump: the
# source streams from DRAM, the destination stays in cache); best of 3.
# Ratios are against that one.  For reference, also a 1 GiB -> 1 GiB copy
# ("memcpy_1GiB_to_1GiB"), which is slower and would flatter the ratios.
# build/bench/ck64_bw: the stream checksum on cache-hot data (CPU time).
# "write_1GiB_to_tmpfs": build/bench/memcpy_bw tmpfs, the cost of storing
# 1 GiB on tmpfs at all; "_vs_tmpfs_write" compares the tmpfs dumps to it.
#
# Targets: a 1 GiB random-content process (counter 1024) and a 1 GiB
# mostly-zero one (zeros 1024: every page populated, one in 64 non-zero).
#  - freeze_devnull: the real pipeline into /dev/null:
#      ck-freeze -t PID --leave-running -- sh -c 'ck-memread > /dev/null'
#  - freeze_store_tmpfs: the real pipeline into an image on tmpfs (/dev/shm):
#      ck-freeze -t PID --leave-running -- sh -c 'ck-memread | ck-store put -D DIR'
#  - memread_devnull, memread_tmpfs: ck-memread -t PID alone (the target
#    SIGSTOPped meanwhile, as ck-freeze would have it), into /dev/null and
#    into a stream file on tmpfs: the page reading without the freezing.
#  - freeze_devnull_copy: freeze_devnull with ck-memread --no-parasite (pages
#    copied with process_vm_readv, the naive method); "parasite_vs_copy" is
#    its time over the parasite's (above 1: the parasite is faster).
#  - dump_1MiB_freeze_devnull_fixed_cost: freeze_devnull of a 1 MiB counter,
#    what a dump costs whatever its size; "_marginal" figures are 1 GiB over
#    (time - that), the rate at which pages go once the pipeline runs.
# Each is run 3 times: the figure is 1 GiB over the fastest wall-clock time
# ("_vs_memcpy"); "_cpu_vs_memcpy" uses instead the least CPU time (user +
# system of every process of the command, from GNU time), which does not
# move with the load other work puts on this 2-CPU machine, and counts every
# stage's CPU even when two stages ran in parallel (so it is the harder one).
# Peak RSS: each stage of the freeze_store_tmpfs pipeline measured on its
# own (GNU time %M, KiB) in one more run.
# "_raw_read": build/bench/pvr_bw, process_vm_readv alone over the
# workload's data on the same target (stopped): the ceiling of any dump
# that copies through process_vm_readv, against memcpy in the same run.
# Prints "bench: NAME = VALUE UNIT".  Issue targets: >= 0.5 of memcpy into
# /dev/null, >= 0.35 into tmpfs, no stage above 64 MiB RSS.
set -u
top=${CK_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
B=$top/build
PATH=$B/bin:$top/pipelines:$PATH
tmp=$(mktemp -d /dev/shm/ck-bench.XXXXXX) || exit 1
pids=""
cleanup() {
  for p in $pids; do kill -CONT "$p" 2>/dev/null; kill -9 "$p" 2>/dev/null; done
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

# run_best NAME CMD: runs `sh -c CMD` 3 times; prints "NS CPU_NS": the
# fastest wall-clock time and the smallest CPU time (0 without GNU time).
run_best() {
  best=""; cpu=0
  for _ in 1 2 3; do
    t0=$(nsec)
    if [ -n "$TIME" ]; then
      $TIME -f '%U %S' -o "$tmp/time" sh -c "$2" || { echo "dump.sh: $1 failed" >&2; return 1; }
      t1=$(nsec)
      c=$(tail -n1 "$tmp/time" | awk '{ printf "%d", ($1 + $2) * 1e9 }')
      if [ "$cpu" -eq 0 ] || [ "$c" -lt "$cpu" ]; then cpu=$c; fi
    else
      sh -c "$2" || { echo "dump.sh: $1 failed" >&2; return 1; }
      t1=$(nsec)
    fi
    d=$((t1 - t0))
    if [ -z "$best" ] || [ "$d" -lt "$best" ]; then best=$d; fi
  done
  echo "$best $cpu"
}

report() {  # NAME NS CPU_NS
  awk -v n="$1" -v ns="$2" -v cpu="$3" -v mc="$memcpy" -v gib=$GIB 'BEGIN {
    gbs = gib / (ns / 1e9) / 1e9
    printf "bench: dump_%s = %.2f GB/s\n", n, gbs
    printf "bench: dump_%s_vs_memcpy = %.2f ratio\n", n, gbs / mc
    if (cpu > 0) printf "bench: dump_%s_cpu_vs_memcpy = %.2f ratio\n", n, gib / (cpu / 1e9) / 1e9 / mc
  }'
}

memcpy=$("$B/bench/memcpy_bw" 1024) || exit 1
echo "bench: memcpy_4MiB_chunks = $memcpy GB/s"
full=$("$B/bench/memcpy_bw" 1024 full) && echo "bench: memcpy_1GiB_to_1GiB = $full GB/s"
if ck=$("$B/bench/ck64_bw" 256); then
  echo "bench: ck64_cache_hot = $ck GB/s"
  echo "bench: ck64_cache_hot_vs_memcpy = $(awk -v a="$ck" -v b="$memcpy" 'BEGIN { printf "%.2f", a / b }') ratio"
fi
# The floor of any dump into tmpfs: storing 1 GiB that is already in memory
# there (write(2) from a populated buffer into a new file, best of 3).  On
# this VM, pages the guest has freed cost a host fault again when touched,
# so this one moves a lot from run to run.
tmpfs_w=$("$B/bench/memcpy_bw" 1024 tmpfs "$tmp") && echo "bench: write_1GiB_to_tmpfs = $tmpfs_w GB/s"
echo "bench: load_average = $(cut -d' ' -f1 /proc/loadavg) tasks"

rc=0
img=$tmp/img
# The fixed cost of the pipeline (process start-ups, freezing, the record,
# the layout): the same dump of a 1 MiB counter.  "_marginal" figures take
# it out: 1 GiB over (time - fixed), the rate at which the pages go.
fixed=""
if small=$(start counter 1); then
  pids="$small"
  set -- $(run_best fixed "ck-freeze -q -t $small --leave-running -- sh -c 'ck-memread > /dev/null'") &&
    fixed=$1 && echo "bench: dump_1MiB_freeze_devnull_fixed_cost = $(awk -v ns="$1" 'BEGIN { printf "%.1f", ns / 1e6 }') ms"
  kill -9 "$small"; wait "$small" 2>/dev/null
  pids=""
fi
marginal() {  # NAME NS
  [ -n "$fixed" ] && [ "$2" -gt "$fixed" ] && awk -v n="$1" -v ns="$2" -v f="$fixed" -v mc="$memcpy" -v gib=$GIB 'BEGIN {
    gbs = gib / ((ns - f) / 1e9) / 1e9
    printf "bench: dump_%s_marginal = %.2f GB/s\n", n, gbs
    printf "bench: dump_%s_marginal_vs_memcpy = %.2f ratio\n", n, gbs / mc
  }'
}
for wl in counter zeros; do
  pid=$(start $wl 1024) || exit 1
  pids="$pids $pid"

  set -- $(run_best "${wl}_freeze_devnull" "ck-freeze -q -t $pid --leave-running -- sh -c 'ck-memread > /dev/null'") || rc=1
  if [ $# -eq 2 ]; then
    report "${wl}_freeze_devnull" "$1" "$2"
    marginal "${wl}_freeze_devnull" "$1"
    with=$1
    # The naive method, same pipeline: pages copied with process_vm_readv.
    set -- $(run_best "${wl}_freeze_devnull_copy" "ck-freeze -q -t $pid --leave-running -- sh -c 'ck-memread --no-parasite > /dev/null'") || rc=1
    [ $# -eq 2 ] && report "${wl}_freeze_devnull_copy" "$1" "$2" &&
      echo "bench: dump_${wl}_freeze_devnull_parasite_vs_copy = $(awk -v a="$1" -v b="$with" 'BEGIN { printf "%.2f", a / b }') ratio"
  fi
  set -- $(run_best "${wl}_freeze_store" "rm -rf $img; ck-freeze -q -t $pid --leave-running -- sh -c 'ck-memread | ck-store put -D $img'") || rc=1
  if [ $# -eq 2 ]; then
    report "${wl}_freeze_store_tmpfs" "$1" "$2"
    marginal "${wl}_freeze_store_tmpfs" "$1"
    [ -n "${tmpfs_w:-}" ] && awk -v ns="$1" -v w="$tmpfs_w" -v n="$wl" 'BEGIN {
      printf "bench: dump_%s_freeze_store_tmpfs_vs_tmpfs_write = %.2f ratio\n", n, 1073741824 / (ns / 1e9) / 1e9 / w }'
  fi
  [ -f "$img/pages.img" ] && echo "bench: dump_${wl}_pages_img_size = $(($(stat -c %s "$img/pages.img") >> 20)) MiB"
  if [ -n "$TIME" ]; then
    rm -rf "$img"
    T="$TIME -f %M -o"
    if $T "$tmp/rss_freeze" ck-freeze -q -t "$pid" --leave-running -- \
         sh -c "$T $tmp/rss_memread ck-memread | $T $tmp/rss_store ck-store put -D $img"; then
      for s in freeze memread store; do
        echo "bench: ck-${s}_${wl}_peak_rss = $(awk '{ v = $1 } END { printf "%.1f", v / 1024 }' "$tmp/rss_$s") MiB"
      done
    else
      echo "dump.sh: the RSS run of $wl failed" >&2; rc=1
    fi
  fi
  rm -rf "$img"

  kill -STOP "$pid"
  data=$(sed -n 's/^INFO data=\(0x[0-9a-f]*\) .*/\1/p' "$tmp/$wl.out")
  if [ -n "$data" ] && raw=$("$B/bench/pvr_bw" "$pid" "$data" 1024); then
    echo "bench: dump_${wl}_raw_read = $raw GB/s"
    echo "bench: dump_${wl}_raw_read_vs_memcpy = $(awk -v a="$raw" -v b="$memcpy" 'BEGIN { printf "%.2f", a / b }') ratio"
  fi
  set -- $(run_best "${wl}_memread_devnull" "ck-memread -t $pid > /dev/null") || rc=1
  [ $# -eq 2 ] && report "${wl}_memread_devnull" "$1" "$2"
  set -- $(run_best "${wl}_memread_tmpfs" "ck-memread -t $pid > $tmp/s.ck") || rc=1
  [ $# -eq 2 ] && report "${wl}_memread_tmpfs" "$1" "$2"
  rm -f "$tmp/s.ck"
  kill -CONT "$pid" 2>/dev/null
  kill -9 "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  pids=""
done
exit $rc
