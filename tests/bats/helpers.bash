# Shared by every bats file: scratch directories, workloads that tell when
# they are ready, and cleanup of every process a test started (by pid only).
bats_load_library bats-support
bats_load_library bats-assert

: "${CK_TOP:=$(cd "$BATS_TEST_DIRNAME/../.." && pwd)}"
export PATH="$CK_TOP/build/bin:$CK_TOP/pipelines:$PATH"
WL="$CK_TOP/build/workloads"

setup() {
  T=$(mktemp -d /tmp/ck-test.XXXXXX)
  PIDS=()
}

teardown() {
  local p
  for p in "${PIDS[@]}"; do
    kill -9 "$p" 2>/dev/null || true
  done
  rm -rf "$T"
}

# only_std CMD...: execs CMD with no fd open but 0, 1 and 2.  bats hands
# every process it starts pipes of its own (fd 3 and others), which ck
# rightly refuses to dump: their other ends are outside the tree.
only_std() {
  local fd
  for fd in /proc/$BASHPID/fd/*; do
    fd=${fd##*/}
    [ "$fd" -gt 2 ] && eval "exec $fd>&-"
  done
  exec "$@"
}

# start_wl NAME [ARGS...]: runs workload NAME with stdout to $T/NAME.out in a
# new session, waits for its READY line, sets WPID.  $WRAP, if set, is a
# command that execs the workload in the end (setpriv ...): same pid.
start_wl() {
  local name=$1; shift
  only_std setsid ${WRAP:-} "$WL/$name" "$@" > "$T/$name.out" 2>&1 < /dev/null &
  WPID=$!
  PIDS+=("$WPID")
  wait_line "$T/$name.out" '^READY' 20
}

# start_prog PROG [ARGS...]: runs tests/programs/PROG (python3) as start_wl
# runs a workload: output in $T/PROG.out, new session, $WRAP, READY, WPID.
start_prog() {
  local name=$1; shift
  only_std setsid ${WRAP:-} python3 "$CK_TOP/tests/programs/$name" "$@" > "$T/$name.out" 2>&1 < /dev/null &
  WPID=$!
  PIDS+=("$WPID")
  wait_line "$T/$name.out" '^READY' 20
}

# start_py_counter SETUP: runs python3 with the SETUP lines (which open the
# resource a test is about: a socket, a pty...) and then a loop that writes
# a growing counter into $T/n every 10 ms, in a new session; sets WPID and
# waits until $T/n exists (SETUP has run: on a loaded machine python takes
# more than a second to get there).  counter_advances: $T/n still grows.
start_py_counter() {
  only_std setsid python3 -c "$1
import os, sys, time
n = 0
while True:
    n += 1
    open(sys.argv[1] + '.tmp', 'w').write(str(n))
    os.replace(sys.argv[1] + '.tmp', sys.argv[1])
    time.sleep(0.01)" "$T/n" < /dev/null > /dev/null 2>&1 &
  WPID=$!
  PIDS+=("$WPID")
  local i
  for ((i = 0; i < 1000; i++)); do [ -s "$T/n" ] && return 0; sleep 0.02; done
  echo "python3 did not start writing $T/n" >&2
  return 1
}
counter_advances() {
  local a b
  a=$(cat "$T/n"); sleep 0.3; b=$(cat "$T/n")
  [ "$b" -gt "$a" ]
}

# wait_line FILE REGEX [SECONDS]: waits until FILE has a line matching REGEX.
wait_line() {
  local i
  for ((i = 0; i < ${3:-10} * 50; i++)); do
    grep -Eq "$2" "$1" 2>/dev/null && return 0
    sleep 0.02
  done
  echo "timed out waiting for '$2' in $1:" >&2
  cat "$1" >&2
  return 1
}

# info KEY FILE: the value of KEY from the workload's INFO lines.
info() {
  grep -Eo "(^| )$1=[^ ]+" "$2" | tail -n1 | cut -d= -f2
}

# thread_states PID: the state letter of every thread, sorted (e.g. "R S S").
thread_states() {
  local t
  for t in /proc/"$1"/task/*; do
    awk '{print $3}' "$t/stat" 2>/dev/null
  done | sort | tr '\n' ' '
}

# is_stopped PID: true if any thread is stopped or traced.
any_stopped() {
  local t s
  for t in /proc/"$1"/task/*; do
    s=$(awk '{print $3}' "$t/stat" 2>/dev/null)
    case "$s" in t|T) return 0 ;; esac
  done
  return 1
}

# tls_dumped STREAM: the stream holds the TLS words (0i000000) of the
# threads workload's four threads, at the addresses it reported.
tls_dumped() {
  local i tls
  for i in 0 1 2 3; do
    tls=$(info "tls$i" "$T/threads.out")
    run "$CK_TOP/build/unit/memread_check" bytes "$1" "$WPID" "$tls" 4
    assert_output "0${i}000000"
  done
}

# check_wl NAME PID: asks a (restored) workload to check itself; asserts PASS.
check_wl() {
  kill -USR2 "$2"
  wait_line "$T/$1.out" '^(PASS|FAIL)' 30
  run grep -E '^(PASS|FAIL)' "$T/$1.out"
  assert_output PASS
}

# proc_state PID: what the harness compares before a dump and after a
# restore: maps (adjacent equal mappings merged), fd targets, creds,
# signal masks of every thread, thread ids.
proc_state() {
  local p=$1 t fd
  echo "# maps"
  awk '{
      split($1, a, "-"); path = $6; for (i = 7; i <= NF; i++) path = path " " $i;
      if (path ~ /^\[(vvar|vvar_vclock|vdso)\]$/ || path !~ /^\[/) key = $2 " " $4 " " $5 " " path; else key = $2 " " $4 " " $5 " " path;
      if ($4 == "00:01") key = $2 " " $4 " shmem " path;  # a new shmem object: its inode differs
      if (path ~ / \(deleted\)$/) key = $2 " " $4 " deleted " path;  # made again: a new inode
      if (a[1] == end && key == lastkey) { end = a[2]; next }
      if (lastkey != "") print start "-" end " " lastkey;
      start = a[1]; end = a[2]; lastkey = key
    } END { print start "-" end " " lastkey }' /proc/"$p"/maps
  echo "# fds"
  for fd in /proc/"$p"/fd/*; do
    printf '%s %s\n' "${fd##*/}" "$(readlink "$fd" | sed 's/:\[[0-9]*\]$/:[]/')"
  done | sort -n
  echo "# creds"
  grep -E '^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp|Umask):' /proc/"$p"/status
  echo "# threads"
  for t in /proc/"$p"/task/*; do
    echo "${t##*/} $(grep -E '^(SigBlk|SigIgn|SigCgt):' "$t/status" | tr '\n\t' '  ')"
  done
  echo "# cwd $(readlink /proc/"$p"/cwd) exe $(readlink /proc/"$p"/exe)"
  echo "# cmdline $(tr '\0' ' ' < /proc/"$p"/cmdline)"
}

# dump_counter_copy: runs a copy of the counter workload ($T/counter-copy,
# a mapped file a test may change) and dumps it into $T/img, killing it.
dump_counter_copy() {
  cp "$WL/counter" "$T/counter-copy"
  only_std setsid "$T/counter-copy" 8 > "$T/counter.out" 2>&1 < /dev/null &
  WPID=$!; PIDS+=("$WPID")
  wait_line "$T/counter.out" '^READY' 20
  run ck-dump -t "$WPID" -D "$T/img"
  assert_success
}

# redump_and_compare: dumps the restored $WPID again into $T/img2 (killing
# it), asserts the two images are equal in everything but time and restores
# the second one.
redump_and_compare() {
  run ck-dump -t "$WPID" -D "$T/img2"
  assert_success
  run ck-restore -D "$T/img2" -d
  assert_success
  run redump_diff "$T/img" "$T/img2"
  assert_success
}

# redump_diff A B: ck-crit diff of an image and the image of its restored
# tree dumped again.  Beyond diff's default ignores (times, timers,
# counters, rseq), what a restore changes by design: registers and pending
# signals (the tasks ran on), page contents (layouts are still compared),
# the root's parent, the device and size of files (a restored terminal,
# logs written on), the "ac" VmFlag (ck maps private file memory writable
# while filling it), the names --inherit-fd uses.  Kernel ids (inodes,
# pipe ids, shmem ids, netns) are compared as a renaming by diff itself.
redump_diff() {
  ck-crit diff "$1" "$2" --ignore registers --ignore Thread.pending --ignore pages --ignore root-ppid \
    --ignore FileDesc.dev --ignore FileDesc.size --ignore Vma.vmflags:ac --ignore UnixSock.external_id
}

# dump_kill_restore NAME: dumps workload $WPID into $T/img (killing it),
# checks it is gone, restores it detached and waits until it runs again.
dump_kill_restore() {
  proc_state "$WPID" > "$T/before"
  local tree p i
  tree=$(tree_pids "$WPID")
  run ck-dump -t "$WPID" -D "$T/img"
  assert_success
  # every pid of the tree must be free again (children are reaped by
  # whoever inherits them, a little later than the root)
  for p in $tree; do
    for ((i = 0; i < 250; i++)); do [ -d /proc/"$p" ] || break; sleep 0.02; done
    [ ! -d /proc/"$p" ] || { echo "pid $p still exists after the dump"; return 1; }
  done
  run ck-restore -D "$T/img" -d --pidfile "$T/pid"
  assert_success
  [ "$(cat "$T/pid")" = "$WPID" ]
  proc_state "$WPID" > "$T/after"
  diff -u "$T/before" "$T/after"
}

# tree_pids PID: PID and all its descendants, one per line.
tree_pids() {
  local p
  echo "$1"
  for p in $(cat /proc/"$1"/task/*/children 2>/dev/null); do tree_pids "$p"; done
}

# task_alive PID: prints 1 if PID exists and is not a zombie, else 0.
task_alive() {
  local s
  s=$(awk '{print $3}' /proc/"$1"/stat 2>/dev/null)
  if [ -n "$s" ] && [ "$s" != Z ]; then echo 1; else echo 0; fi
}

# gone PID: waits until PID is no process (a zombie counts as gone).
gone() {
  local i
  for ((i = 0; i < 250; i++)); do [ "$(task_alive "$1")" = 0 ] && return 0; sleep 0.02; done
  echo "pid $1 still runs"
  return 1
}
