#!/bin/sh
# Restore time, against memcpy of 1 GiB measured in the same run.
#
#  - restore_1GiB: a 1 GiB random-content process (counter 1024) is dumped
#    to an image on tmpfs (ck-dump, which kills it), then restored with
#      ck-restore -D DIR -d --pidfile F
#    3 times (the restored process killed, by its pid, between runs); the
#    figure is the fastest wall-clock time until ck-restore has detached
#    from a running process.  "_vs_memcpy" is that time over the time of a
#    1 GiB memcpy (build/bench/memcpy_bw: 4 MiB pieces from a populated
#    source, best of 3); issue target: <= 2.  "_vs_memcpy_full" uses the
#    1 GiB -> 1 GiB copy instead; "_vs_memcpy_fresh" a copy into memory
#    mapped anew and never touched (the pages a restore must create).  "_cpu" counts ck-restore's own CPU time
#    (user + system, GNU time), which other load on the machine moves less.
#    After the last run the restored process checks its 1 GiB (SIGUSR2) and
#    must say PASS, or the figure is not printed.
#  - restore_tree10: a 10-process tree (tree10), dumped and restored the
#    same way, in milliseconds; it too must pass its check after the last.
#  - with CK_RESTORE_BEFORE=PATH (another ck-restore, say one built from
#    an older commit): restore_1GiB_before, the same figure for that binary
#    measured in this run just before ours, and _after_vs_before (wall and
#    CPU: the CPU figure moves less with other load on the machine).  Every
#    page a restore places is checked against its run's digest (since issue
#    10); this is how that cost was measured.
# Prints "bench: NAME = VALUE UNIT".
set -u
top=${CK_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
B=$top/build
PATH=$B/bin:$top/pipelines:$PATH
tmp=$(mktemp -d /dev/shm/ck-bench-restore.XXXXXX) || exit 1
pids=""   # every pid started (workloads, restored tasks), killed on exit
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

# wait_line FILE REGEX [TENTHS]: waits until a line of FILE matches.
wait_line() {
  i=0
  while ! grep -q "$2" "$1" 2>/dev/null; do
    i=$((i + 1))
    [ $i -gt "${3:-600}" ] && return 1
    sleep 0.1
  done
}

# tree_of PID: PID and all its descendants.
tree_of() {
  echo "$1"
  for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do tree_of "$c"; done
}

# kill_tree PIDS: SIGKILL each, then waits until each is gone from /proc
# (reaped: a zombie still holds its pid, which the next restore needs).
kill_tree() {
  for p in "$@"; do kill -9 "$p" 2>/dev/null; done
  for p in "$@"; do
    i=0
    while [ -e /proc/"$p" ] && [ $i -lt 250 ]; do i=$((i + 1)); sleep 0.02; done
  done
}

# bench_restore NAME WORKLOAD ARGS...: prints "NS CPU_NS" of the best of 3
# restores, or fails.
bench_restore() {
  name=$1; wl=$2; shift 2
  out=$tmp/$name.out
  "$B/workloads/$wl" "$@" > "$out" 2>&1 < /dev/null &
  root=$!
  pids="$pids $root"
  wait_line "$out" '^READY' || { echo "restore.sh: $wl did not get ready" >&2; return 1; }
  all=$(tree_of "$root")
  pids="$pids $all"
  ck-dump -t "$root" -D "$tmp/$name.img" 2>"$tmp/$name.err" || {
    echo "restore.sh: dump of $wl failed: $(cat "$tmp/$name.err")" >&2; return 1; }
  wait "$root" 2>/dev/null
  kill_tree $all
  best=""; cpu=0
  for run in 1 2 3; do
    rm -f "$tmp/pid"
    t0=$(nsec)
    if [ -n "$TIME" ]; then
      $TIME -f '%U %S' -o "$tmp/time" ${RESTORE:-ck-restore} -D "$tmp/$name.img" -d --pidfile "$tmp/pid" 2>"$tmp/$name.err"
    else
      ${RESTORE:-ck-restore} -D "$tmp/$name.img" -d --pidfile "$tmp/pid" 2>"$tmp/$name.err"
    fi
    st=$?
    t1=$(nsec)
    [ -s "$tmp/pid" ] && pids="$pids $(cat "$tmp/pid")"
    if [ $st -ne 0 ] || [ ! -s "$tmp/pid" ]; then
      echo "restore.sh: restore of $wl failed: $(cat "$tmp/$name.err")" >&2; return 1
    fi
    d=$((t1 - t0))
    if [ -z "$best" ] || [ "$d" -lt "$best" ]; then best=$d; fi
    if [ -n "$TIME" ]; then
      c=$(tail -n1 "$tmp/time" | awk '{ printf "%d", ($1 + $2) * 1e9 }')
      if [ "$cpu" -eq 0 ] || [ "$c" -lt "$cpu" ]; then cpu=$c; fi
    fi
    rp=$(cat "$tmp/pid")
    all=$(tree_of "$rp")
    pids="$pids $all"
    if [ $run -lt 3 ]; then
      kill_tree $all
    else
      # The last one proves the restore: it checks itself.
      kill -USR2 "$rp"
      wait_line "$out" '^PASS\|^FAIL' 600
      if ! grep -q '^PASS' "$out"; then
        echo "restore.sh: restored $wl did not pass its check: $(grep '^FAIL' "$out")" >&2
        kill_tree $all
        return 1
      fi
      kill_tree $all
    fi
  done
  echo "$best $cpu"
}

memcpy=$("$B/bench/memcpy_bw" 1024) || exit 1
full=$("$B/bench/memcpy_bw" 1024 full) || exit 1
fresh=$("$B/bench/memcpy_bw" 1024 fresh) || exit 1
echo "bench: restore_memcpy_4MiB_chunks = $memcpy GB/s"
echo "bench: restore_memcpy_1GiB_to_1GiB = $full GB/s"
echo "bench: restore_memcpy_1GiB_to_fresh = $fresh GB/s"
echo "bench: load_average = $(cut -d' ' -f1 /proc/loadavg) tasks"

rc=0
before=""
if [ -n "${CK_RESTORE_BEFORE:-}" ]; then
  if r=$(RESTORE=$CK_RESTORE_BEFORE bench_restore before counter 1024); then
    before=${r%% *}
    before_cpu=${r##* }
    awk -v ns="$before" -v cpu="$before_cpu" 'BEGIN {
      printf "bench: restore_1GiB_before = %.0f ms\n", ns / 1e6
      if (cpu > 0) printf "bench: restore_1GiB_before_cpu = %.0f ms\n", cpu / 1e6
    }'
  else
    rc=1
  fi
  rm -rf "$tmp/before.img"
fi
if r=$(bench_restore big counter 1024); then
  set -- $r
  awk -v ns="$1" -v cpu="$2" -v mc="$memcpy" -v full="$full" -v fr="$fresh" -v gib=$GIB 'BEGIN {
    t = ns / 1e9; m = gib / (mc * 1e9); f = gib / (full * 1e9); n = gib / (fr * 1e9)
    printf "bench: restore_1GiB = %.0f ms\n", t * 1000
    printf "bench: restore_1GiB_vs_memcpy = %.2f ratio\n", t / m
    printf "bench: restore_1GiB_vs_memcpy_full = %.2f ratio\n", t / f
    printf "bench: restore_1GiB_vs_memcpy_fresh = %.2f ratio\n", t / n
    if (cpu > 0) printf "bench: restore_1GiB_cpu_vs_memcpy = %.2f ratio\n", cpu / 1e9 / m
  }'
  [ -n "$before" ] && awk -v a="$1" -v b="$before" -v ca="$2" -v cb="$before_cpu" 'BEGIN {
    printf "bench: restore_1GiB_after_vs_before = %.2f ratio\n", a / b
    if (ca > 0 && cb > 0) {
      printf "bench: restore_1GiB_cpu = %.0f ms\n", ca / 1e6
      printf "bench: restore_1GiB_cpu_after_vs_before = %.2f ratio\n", ca / cb
    }
  }'
else
  rc=1
fi
rm -rf "$tmp/big.img"
if r=$(bench_restore tree tree10); then
  set -- $r
  awk -v ns="$1" -v cpu="$2" 'BEGIN {
    printf "bench: restore_tree10 = %.0f ms\n", ns / 1e6
    if (cpu > 0) printf "bench: restore_tree10_cpu = %.0f ms\n", cpu / 1e6
  }'
else
  rc=1
fi
exit $rc
