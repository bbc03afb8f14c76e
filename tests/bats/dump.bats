#!/usr/bin/env bats
# Issue 2: ck-freeze and ck-dump on real processes; a failed dump leaves the
# tree running exactly as before.
load helpers

counter_of() { info counter "$1"; }

@test "a --leave-running dump records the task and its memory, and the task carries on" {
  start_wl counter 64
  local addr len fnv
  addr=$(info data "$T/counter.out"); len=$(info len "$T/counter.out"); fnv=$(info fnv "$T/counter.out")
  cp /proc/"$WPID"/maps "$T/maps"
  run ck-dump -t "$WPID" -D "$T/img" --leave-running
  assert_success
  # every VMA of /proc/PID/maps at dump time is in the image
  ck-crit decode -D "$T/img" > "$T/img.json"
  run python3 "$CK_TOP/tests/maps_vs_image.py" "$T/maps" "$T/img.json" "$WPID"
  assert_success
  # the pages of the data region hash to what the workload computed itself
  run ck-crit sum -D "$T/img" --pid "$WPID" --addr "$addr" --len "$len"
  assert_success
  assert_output "$fnv"
  ! any_stopped "$WPID"
  check_wl counter "$WPID"
}

@test "a --leave-running dump keeps the signal state: blocked SIGTRAP and its handler, a signal sent while frozen" {
  start_wl sigkeep
  # SIGUSR1 reaches the task while it is frozen, before the page parasite's
  # remote syscalls run in it: it must stay queued and arrive once after.
  ck-freeze -t "$WPID" --leave-running -- sh -c "kill -USR1 $WPID; sleep 0.1; ck-memread > /dev/null"
  check_wl sigkeep "$WPID"
  [ "$(info usr1 "$T/sigkeep.out")" = 1 ]
}

@test "a default dump kills the tree" {
  start_wl counter 16
  run ck-dump -t "$WPID" -D "$T/img"
  assert_success
  sleep 0.2
  [ ! -d /proc/"$WPID" ]
}

@test "a failing stage leaves the tree running and not stopped" {
  start_wl counter 16
  run ck-freeze -t "$WPID" -- false
  assert_failure 1
  ! any_stopped "$WPID"
  run ck-freeze -t "$WPID" -- sh -c 'ck-memread | (head -c 100000 >/dev/null; exit 0) | ck-store put -D "$0"' "$T/img"
  assert_failure
  [ ! -e "$T/img/pages.img" ] || [ ! -e "$T/img/frames.img" ] || ! ck-store ls -D "$T/img"
  ! any_stopped "$WPID"
  check_wl counter "$WPID"
}

@test "a stage killed with SIGKILL midway leaves the tree running" {
  start_wl counter 256
  proc_state "$WPID" > "$T/before"
  # ck-memread blocks on a full pipe (the page parasite in the target) once
  # its first MiB is read, is killed, and ck-store sees the cut (the MiB,
  # then the end)
  CK_LOG=tracer:debug run ck-freeze -t "$WPID" -- sh -c '{ ck-memread <&3 & echo $! > "$0.pid"; wait; } 3<&0 |
      { head -c 1048576 > "$0.head"; kill -9 "$(cat "$0.pid")"; cat "$0.head" - | ck-store put -D "$0"; }' "$T/img"
  assert_failure 3
  assert_output --partial "truncated"
  assert_output --regexp "the stage that ran the parasite in pid $WPID went away|a stage hung up: taking out its 1 parasites"
  # Nothing of it stays: maps, fds, signal masks as before.
  proc_state "$WPID" > "$T/after"
  run diff -u "$T/before" "$T/after"
  assert_success
  ! any_stopped "$WPID"
  [ -d /proc/"$WPID" ]
  check_wl counter "$WPID"
}

@test "a stage stopped midway (SIGSTOP): --timeout kills the command and the tree runs on as before" {
  start_wl counter 256
  proc_state "$WPID" > "$T/before"
  # ck-memread blocks on a full pipe with its page parasite in the target;
  # the reader stops itself for good, and so would the tree without a limit
  run ck-freeze -t "$WPID" --timeout 2 -- sh -c 'ck-memread | { head -c 65536 > /dev/null; kill -STOP "$(sh -c "echo \$PPID")"; cat > /dev/null; }'
  assert_failure 1
  assert_output --partial "'sh' did not finish within 2 s (--timeout): killed it; the tree resumes as it was"
  proc_state "$WPID" > "$T/after"
  run diff -u "$T/before" "$T/after"
  assert_success
  ! any_stopped "$WPID"
  # a command that stops before it reads anything
  run ck-freeze -t "$WPID" --timeout 1 -- sh -c 'kill -STOP $$'
  assert_failure 1
  assert_output --partial "did not finish within 1 s"
  ! any_stopped "$WPID"
  check_wl counter "$WPID"
}

@test "--timeout: a command that finishes in time is not touched; the default is stated" {
  start_wl counter 16
  run ck-freeze -t "$WPID" --leave-running --timeout 30 -- sh -c 'cat > /dev/null'
  assert_success
  run ck-freeze --help
  assert_output --regexp "--timeout.*600"
  ! any_stopped "$WPID"
}

@test "ck-freeze refuses a pid that does not exist, by name" {
  run ck-freeze -t 999999 -- cat
  assert_failure 1
  assert_output --partial "999999"
}

@test "a netlink socket is refused by name before anything changes; the task runs on" {
  start_py_counter 'import socket
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)'
  run ck-dump -t "$WPID" -D "$T/img"
  assert_failure 1
  assert_output --partial "AF_NETLINK"
  assert_output --partial "not supported"
  [ ! -e "$T/img/manifest" ]
  ! any_stopped "$WPID"
  counter_advances
}

@test "started with stdin closed, ck-freeze still pipes the stream to its command" {
  start_wl counter 8
  # (bats' run gives commands a stdin of its own: close it inside)
  run sh -c "exec 0<&-; ck-freeze -t $WPID --leave-running -- sh -c \"ck-memread | ck-store put -D '$T/img'\""
  assert_success
  run ck-store ls -D "$T/img"
  assert_success
  assert_output --partial "$WPID"
  ! any_stopped "$WPID"
  check_wl counter "$WPID"
}

@test "a dump that kills the tree without a COMMAND is a usage error; the tree runs on" {
  start_wl counter 1
  run ck-freeze -t "$WPID"
  assert_failure 2
  assert_output --partial "a dump that kills the tree needs a COMMAND that stores or restores the stream"
  ! any_stopped "$WPID"
  check_wl counter "$WPID"
}

@test "a task under another tracer is refused, naming the tracer's pid and comm" {
  start_wl holder task.traced "$T"
  local tracer
  tracer=$(info outside "$T/holder.out")
  PIDS+=("$tracer")
  run ck-dump -t "$WPID" -D "$T/img"
  assert_failure 1
  assert_output --partial "ck-freeze: unable to dump pid $WPID: thread $WPID is traced by pid $tracer (holder), and a task has one tracer only (task.traced)"
  check_wl holder "$WPID"
}

@test "a process whose main thread called pthread_exit is refused as that, not as a zombie" {
  start_wl holder task.leader-exited "$T"
  for ((i = 0; i < 100; i++)); do [ "$(awk '{print $3}' /proc/"$WPID"/stat)" = Z ] && break; sleep 0.02; done
  run ck-dump -t "$WPID" -D "$T/img"
  assert_failure 1
  assert_output --partial "ck-freeze: unable to dump pid $WPID: its main thread has exited (pthread_exit) while other threads run: not supported (task.leader-exited)"
  refute_output --partial "zombie"
  check_wl holder "$WPID"
}

@test "a dump into a directory that holds an image fails before anything is frozen; --force replaces it" {
  start_wl counter 8
  run ck-dump -t "$WPID" -D "$T/img" --leave-running
  assert_success
  local before
  before=$(cat "$T/img/manifest")
  run ck-dump -v -t "$WPID" -D "$T/img"
  assert_failure 1
  assert_output "ck-store: '$T/img' already holds an image (--force replaces it)"
  [ "$(cat "$T/img/manifest")" = "$before" ]
  ! any_stopped "$WPID"
  run ck-dump -v -t "$WPID" -D "$T/img" --force  # (-v goes to every stage: ck-store put takes it too)
  assert_success
  [ "$(cat "$T/img/manifest")" != "$before" ]
  run ck-restore -D "$T/img" -d
  assert_success
  check_wl counter "$WPID"
}

@test "--version: every tool and pipeline" {
  local t want
  want=$(ck-freeze --version)
  [[ $want == "ck-freeze "[0-9]* ]]
  for t in "$CK_TOP"/build/bin/ck-* "$CK_TOP"/pipelines/ck-*; do
    run "$t" --version
    assert_success
    assert_output "${t##*/} ${want#ck-freeze }"
  done
}
