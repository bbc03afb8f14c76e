#!/bin/sh
# Logging engine benchmarks (see ck-log(7)), one line per figure:
#   bench: NAME = VALUE UNIT
# 1. build/bench/log_bench: ns per call for a disabled level, an enabled level
#    to a file (in bursts that fit the ring, and sustained), fprintf and
#    snprintf+write to a file, all in the same run, and their ratios.
# 2. If ck-memread and the counter workload are built: the dump of a 1 GiB
#    process at full debug logging (CK_LOG=all:debug, to a file) against the
#    same dump with logging at errors only; best of 5 each, interleaved.
cd "$(dirname "$0")/../.." || exit 1
B=build
dir=$(mktemp -d /tmp/ck-logbench.XXXXXX) || exit 1
wl=""
cleanup() {
  [ -n "$wl" ] && kill "$wl" 2>/dev/null && wait "$wl" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM

if [ ! -x "$B/bench/log_bench" ]; then
  echo "log.sh: $B/bench/log_bench is not built (run make)" >&2
  exit 1
fi
out=$("$B/bench/log_bench" "$dir" "${CK_LOG_BENCH_N:-1000000}") || exit 1
echo "$out"
burst=$(echo "$out" | awk '/log_enabled_call_file_burst/ {print $4}')

# one_time CMD...: wall time of one run, in seconds (stdout of CMD discarded)
one_time() {
  s=$(date +%s.%N)
  "$@" > /dev/null || return 1
  e=$(date +%s.%N)
  echo "$s $e" | awk '{print $2 - $1}'
}
min() { if [ -z "$1" ]; then echo "$2"; else echo "$1 $2" | awk '{print ($2 < $1) ? $2 : $1}'; fi; }

memread=$B/bin/ck-memread
[ -x "$memread" ] || memread=$(command -v ck-memread)
if [ -z "$memread" ] || [ ! -x "$B/workloads/counter" ]; then
  echo "# log.sh: ck-memread or build/workloads/counter not built: dump figures skipped"
  exit 0
fi

"$B/workloads/counter" 1024 > "$dir/counter.out" 2>&1 < /dev/null &
wl=$!
i=0
until grep -q '^READY' "$dir/counter.out" 2>/dev/null; do
  i=$((i + 1))
  if [ "$i" -gt 1200 ]; then
    echo "log.sh: counter workload did not get ready" >&2
    exit 1
  fi
  sleep 0.05
done

debug_run() {
  rm -f "$dir/dump.log"
  CK_LOG=all:debug "$memread" -t "$wl" --log-file "$dir/dump.log"
}
quiet_run() {
  CK_LOG=all:error "$memread" -t "$wl"
}
quiet_run > /dev/null || { echo "log.sh: ck-memread -t $wl failed" >&2; exit 1; }  # warm the page cache
# Runs alternate (off, debug, off, debug...) so that drift in the machine's
# load hits both alike; the best of ${CK_LOG_BENCH_RUNS:-5} each counts.
off=""
on=""
r=0
while [ "$r" -lt "${CK_LOG_BENCH_RUNS:-5}" ]; do
  t=$(one_time quiet_run) || exit 1
  off=$(min "$off" "$t")
  t=$(one_time debug_run) || exit 1
  on=$(min "$on" "$t")
  r=$((r + 1))
done
lines=$(wc -l < "$dir/dump.log")
echo "bench: log_dump_1gib_logging_off = $off s"
echo "bench: log_dump_1gib_full_debug = $on s"
echo "bench: log_dump_1gib_debug_lines = $lines lines"
echo "$on $off" | awk '{printf "bench: log_dump_1gib_debug_overhead = %.2f %%\n", ($1 - $2) / $2 * 100}'
# The wall-clock difference is within the machine's noise for a few hundred
# lines; this is the logging threads' own share, from the measured ns/call.
echo "$lines $burst $off" | awk '{printf "bench: log_dump_1gib_debug_cost_from_ns_per_call = %.4f %%\n", $1 * $2 / 1e9 / $3 * 100}'
