#!/bin/sh
# make demo: start a sample process, dump it (which kills it), restore it,
# and show it carrying on from where it was, with its memory intact.
set -e
cd "$(dirname "$0")/.."
PATH="$PWD/build/bin:$PWD/pipelines:$PATH"
dir=$(mktemp -d /tmp/ck-demo.XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

setsid build/workloads/ticker > "$dir/out" 2>&1 < /dev/null &
pid=$!
sleep 1.2
say "a sample process (pid $pid) counts five ticks a second:"
tail -n 3 "$dir/out"

say "ck-dump -t $pid -D $dir/img   (freeze, stream through ck-memread into ck-store, kill)"
ck-dump -t "$pid" -D "$dir/img"
ck-store ls -D "$dir/img"
sleep 0.5
if kill -0 "$pid" 2>/dev/null; then echo "pid $pid is still running: the dump failed"; exit 1; fi
last=$(tail -n 1 "$dir/out")
say "pid $pid is gone; its last line was: $last"

say "ck-restore -D $dir/img -d"
ck-restore -D "$dir/img" -d
sleep 1.2
say "pid $pid is back, same pid, and goes on counting:"
sed -n "/^$last\$/,\$p" "$dir/out" | head -n 6
kill -USR2 "$pid"
i=0
while ! grep -qE '^(PASS|FAIL)' "$dir/out" && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
say "asked to check its own memory, it says: $(grep -E '^(PASS|FAIL)' "$dir/out")"
grep -q '^PASS' "$dir/out"
pid=
