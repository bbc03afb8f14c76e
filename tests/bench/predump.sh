#!/bin/sh
# Pre-dump rounds on a 1 GiB writer: freeze time of a tracking round, memory
# held by ck during a round (ck-memread's peak RSS, plus pipe buffers, plus
# anything pinned: nothing is, pages go through one 4 MiB buffer), copy
# throughput against memcpy measured in the same run, and the bytes of each
# round for a workload that dirties 5% of its memory per second.
# memcpy is measured before the writer starts (it takes seconds here, which
# would otherwise pass between round 1 and round 2 and swell round 2); the
# raw process_vm_readv rate of the writer's buffer (build/bench/pvr_bw, the
# writer stopped) after the rounds: the writer populates its pages in a
# scattered order, which halves what the kernel's copy achieves on them, so
# "predump_copy_vs_raw_read" is the part ck itself costs.
# Lines: "bench: NAME = VALUE UNIT".
set -u
: "${CK_TOP:=$(cd "$(dirname "$0")/../.." && pwd)}"
PATH="$CK_TOP/build/bin:$CK_TOP/pipelines:$PATH"
T=$(mktemp -d /tmp/ck-bench.XXXXXX)
export CK_TRACK_DIR="$T/state"
W=
cleanup() { [ -n "$W" ] && kill -9 "$W" 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT
MIB=1024
PAGES=$((MIB * 256))
mc=
[ -x "$CK_TOP/build/bench/memcpy_bw" ] && mc=$("$CK_TOP/build/bench/memcpy_bw" 1024 2>/dev/null | tail -n 1)
RATE=$((PAGES / 20))          # 5% of the pages per second
setsid "$CK_TOP/build/workloads/writer" -m $MIB -r $RATE > "$T/w.out" 2>&1 < /dev/null &
W=$!
i=0
while ! grep -q READY "$T/w.out" 2>/dev/null; do
  i=$((i + 1)); [ $i -gt 600 ] && { echo "bench: writer did not start" >&2; exit 1; }
  sleep 0.1
done
stat_of() { tail -n 1 "$T/stats" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
# Round 1: --track; ck-memread's peak RSS from GNU time if present, else /proc polling.
( ck-memread --track -t "$W" --stats "$T/stats" > /dev/null ) &
M=$!
peak=0
while kill -0 $M 2>/dev/null; do
  for p in $(pgrep -P $M 2>/dev/null) $M; do
    r=$(awk '/^VmHWM:/ {print $2}' /proc/$p/status 2>/dev/null)
    [ -n "$r" ] && [ "$r" -gt "$peak" ] && [ "$(cat /proc/$p/comm 2>/dev/null)" = ck-memread ] && peak=$r
  done
  sleep 0.01
done
wait $M || { echo "bench: round 1 failed" >&2; exit 1; }
secs=$(stat_of seconds); bytes=$(stat_of bytes)
echo "bench: predump_track_freeze_1gib = $(stat_of freeze_ms) ms"
echo "bench: predump_round_rss_peak = $((peak / 1024)) MiB"
echo "bench: predump_pipe_and_pinned = 0 MiB"
gbs=$(awk -v b="$bytes" -v s="$secs" 'BEGIN { printf "%.2f", b / s / 1e9 }')
echo "bench: predump_copy_throughput = $gbs GB/s"
if [ -n "$mc" ]; then
  echo "bench: predump_memcpy_same_run = $mc GB/s"
  echo "bench: predump_copy_vs_memcpy = $(awk -v a="$gbs" -v b="$mc" 'BEGIN { printf "%.2f", a / b }') x"
fi
# Dirty rounds one second apart: bytes per round at 5%/s.  (Each is taken
# as stored with --since, though its stream goes to /dev/null: otherwise it
# would carry everything written since round 1.)
for n in 2 3 4; do
  sleep 1
  ck-memread --dirty --since $((n - 1)) -t "$W" --stats "$T/stats" > /dev/null ||
    { echo "bench: round $n failed" >&2; exit 1; }
  echo "bench: predump_round${n}_bytes_5pct_per_s = $(( $(stat_of bytes) / 1048576 )) MiB"
  echo "bench: predump_round${n}_seconds = $(stat_of seconds) s"
done
ck-memread --untrack -t "$W" 2>/dev/null
addr=$(sed -n 's/^INFO addr=\(0x[0-9a-f]*\) .*/\1/p' "$T/w.out")
kill -STOP "$W"
if [ -n "$addr" ] && raw=$("$CK_TOP/build/bench/pvr_bw" "$W" "$addr" $MIB); then
  echo "bench: predump_raw_read_same_target = $raw GB/s"
  [ -n "$mc" ] && echo "bench: predump_raw_read_vs_memcpy = $(awk -v a="$raw" -v b="$mc" 'BEGIN { printf "%.2f", a / b }') x"
  echo "bench: predump_copy_vs_raw_read = $(awk -v a="$gbs" -v b="$raw" 'BEGIN { printf "%.2f", a / b }') x"
fi
kill -CONT "$W"
exit 0
