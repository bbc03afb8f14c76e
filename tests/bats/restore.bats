#!/usr/bin/env bats
# Issue 3: dump, kill, restore, and let the process check itself; the
# harness compares /proc state before and after.
load helpers

@test "counter with 64 MiB of random data survives dump, kill and restore" {
  start_wl counter 64
  dump_kill_restore
  ! any_stopped "$WPID"
  check_wl counter "$WPID"
}

@test "restore from a stream on stdin, waiting for the root and passing its status on" {
  start_wl counter 8
  run ck-freeze -t "$WPID" -- sh -c 'ck-memread > "$0"' "$T/s.ck"
  assert_success
  ( sleep 0.5; kill -USR2 "$WPID" ) &
  run ck-restore < "$T/s.ck"
  assert_success
  run tail -n1 "$T/counter.out"
  assert_output PASS
}

@test "restore refuses a pid in use, by name, and leaves nothing behind" {
  start_wl counter 8
  run ck-dump -t "$WPID" -D "$T/img" --leave-running
  assert_success
  run ck-restore -D "$T/img" -d
  assert_failure 1
  assert_output --partial "pid $WPID is in use"
  check_wl counter "$WPID"
}

@test "restore of a corrupt image fails cleanly" {
  start_wl counter 8
  run ck-dump -t "$WPID" -D "$T/img"
  assert_success
  printf 'garbage' > "$T/junk"
  run ck-restore < "$T/junk"
  assert_failure 3
  [ ! -d /proc/"$WPID" ]
}

@test "a restored process can be dumped and restored again" {
  start_wl counter 16
  dump_kill_restore
  mv "$T/img" "$T/img1"
  proc_state "$WPID" > "$T/before2"
  run ck-dump -t "$WPID" -D "$T/img"
  assert_success
  # the second image matches the first in everything but time
  run redump_diff "$T/img1" "$T/img"
  assert_success
  run ck-restore -D "$T/img" -d
  assert_success
  proc_state "$WPID" > "$T/after2"
  diff -u "$T/before2" "$T/after2"
  check_wl counter "$WPID"
}

@test "another user's process with fewer capabilities keeps its uids, gids, groups and capabilities" {
  WRAP="setpriv --reuid 1234 --regid 2345 --groups 5,6,7 --inh-caps=-all --bounding-set=-net_raw,-sys_time,-mknod --" \
    start_wl threads 4
  grep -q '^Uid:.*1234' /proc/"$WPID"/status
  dump_kill_restore
  grep -E '^(Uid|Gid|Groups|CapBnd):' /proc/"$WPID"/status
  [ "$(awk '/^Uid:/ {print $2 $3 $4 $5}' /proc/"$WPID"/status)" = 1234123412341234 ]
  [ "$(awk '/^Groups:/ {print $2 $3 $4}' /proc/"$WPID"/status)" = 567 ]
  [ "$(stat -c %u /proc/"$WPID")" = 1234 ]  # dumpable again after the uid change
  for t in /proc/"$WPID"/task/*; do  # credentials are per thread
    [ "$(awk '/^Uid:/ {print $3}' "$t/status")" = 1234 ]
    [ "$(awk '/^CapEff:/ {print $2}' "$t/status")" = 0000000000000000 ]
  done
  redump_and_compare
  check_wl threads "$WPID"
}

@test "root with ambient capabilities, securebits and no_new_privs keeps them all" {
  WRAP="setpriv --inh-caps=+net_bind_service,+kill --ambient-caps=+net_bind_service --securebits=+no_setuid_fixup --bounding-set=-sys_module --no-new-privs --" \
    start_wl counter 8
  grep -q '^CapAmb:.*0000000000000400' /proc/"$WPID"/status
  dump_kill_restore
  [ "$(awk '/^NoNewPrivs:/ {print $2}' /proc/"$WPID"/status)" = 1 ]
  [ "$(awk '/^CapAmb:/ {print $2}' /proc/"$WPID"/status)" = 0000000000000400 ]
  redump_and_compare
  check_wl counter "$WPID"
  # no_setuid_fixup is bit 2 of the securebits, in both images
  ck-crit decode -D "$T/img" > "$T/1.json"
  ck-crit decode -D "$T/img2" > "$T/2.json"
  for j in 1 2; do
    run python3 -c 'import json,sys; print([f["frame"]["process"]["creds"].get("securebits") for f in json.load(open(sys.argv[1]))["frames"] if "process" in f["frame"]])' "$T/$j.json"
    assert_output "[4]"
  done
}

@test "a task under seccomp is refused by name and keeps running" {
  WRAP="python3 $CK_TOP/tests/programs/seccomp_exec.py" start_wl counter 8
  grep -q '^Seccomp:[[:space:]]*2' /proc/"$WPID"/status
  run ck-dump -t "$WPID" -D "$T/img"
  assert_failure
  assert_output --partial "pid $WPID: it runs under seccomp"
  [ ! -e "$T/img" ]
  ! any_stopped "$WPID"
  check_wl counter "$WPID"
}

@test "4 threads with their own TLS and counters" {
  start_wl threads
  dump_kill_restore
  [ "$(ls /proc/"$WPID"/task | wc -l)" -eq 5 ]
  check_wl threads "$WPID"
}

@test "a 3-process tree with a pipe in flight and a shared anonymous region" {
  start_wl shmtree
  local kids
  kids=$(cat /proc/"$WPID"/task/*/children)
  kids=$(echo $kids); PIDS+=($kids $(cat /proc/$kids/task/*/children))
  dump_kill_restore
  # the same children, with the same parent links
  [ "$(echo $(cat /proc/"$WPID"/task/*/children))" = "$kids" ]
  check_wl shmtree "$WPID"
}

@test "every kind of fd: pipe data, eventfd, epoll, timerfd, signalfd, inotify, memfd, deleted and O_APPEND files" {
  mkdir "$T/scratch"
  start_wl files "$T/scratch"
  dump_kill_restore
  check_wl files "$WPID"
}

@test "tasks asleep in nanosleep, read, epoll_wait and futex keep sleeping" {
  local m
  for m in nanosleep read epoll futex; do
    start_wl sleeper "$m"
    dump_kill_restore
    sleep 0.3
    # still asleep, not failed
    [ "$(awk '{print $3}' /proc/"$WPID"/stat)" = S ]
    run grep -c FAIL "$T/sleeper.out"
    assert_output 0
    check_wl sleeper "$WPID"
    rm -rf "$T/img" "$T/sleeper.out"
  done
}

@test "a short nanosleep ends on time after a restore" {
  start_wl sleeper nanosleep 3
  dump_kill_restore
  wait_line "$T/sleeper.out" '^INFO slept=' 10
  check_wl sleeper "$WPID"
}

@test "signal handlers, pending signals, sigaltstack, itimer, POSIX timer and the vDSO clock" {
  start_wl signals
  dump_kill_restore
  check_wl signals "$WPID"
}

@test "a task in a nested cgroup comes back in it, its cgroups recreated" {
  local cg=/sys/fs/cgroup/unified/ck-test-restore-$$
  mkdir -p "$cg/inner"
  echo 3 > "$cg/cgroup.max.depth"
  start_wl counter 8
  echo "$WPID" > "$cg/inner/cgroup.procs"
  run ck-dump -t "$WPID" -D "$T/img"
  assert_success
  sleep 0.3
  rmdir "$cg/inner" "$cg"
  run ck-restore -D "$T/img" -d
  assert_success
  run grep '^0::' /proc/"$WPID"/cgroup
  assert_output "0::/ck-test-restore-$$/inner"
  [ "$(cat "$cg/cgroup.max.depth")" = 3 ]
  check_wl counter "$WPID"
  sleep 0.3
  rmdir "$cg/inner" "$cg"
}

@test "a mapped file that changed since the dump is refused by name, nothing left behind" {
  dump_counter_copy
  echo extra >> "$T/counter-copy"
  run ck-restore -D "$T/img" -d
  assert_failure 1
  assert_output --partial "counter-copy"
  assert_output --partial "changed since the dump"
  sleep 0.2
  [ ! -d /proc/"$WPID" ] || [ "$(awk '{print $3}' /proc/"$WPID"/stat)" = Z ]
}

@test "a file that is gone at restore time is named, nothing left behind" {
  only_std setsid sh -c 'exec 7<"$0"; sleep 1000' "$T/victim" < /dev/null > /dev/null 2>&1 &
  WPID=$!; PIDS+=("$WPID")
  echo hello > "$T/victim"
  sleep 0.3
  # sh opened it before it existed? then retry with the file in place
  [ -e /proc/"$WPID"/fd/7 ] || skip "shell did not open the file"
  run ck-dump -t "$WPID" -D "$T/img"
  assert_success
  rm "$T/victim"
  run ck-restore -D "$T/img" -d
  assert_failure 1
  assert_output --partial "$T/victim"
  sleep 0.2
  [ ! -d /proc/"$WPID" ] || [ "$(awk '{print $3}' /proc/"$WPID"/stat)" = Z ]
}

@test "killing ck-restore midway leaves nothing restored behind" {
  start_wl counter 512
  run ck-dump -t "$WPID" -D "$T/img"
  assert_success
  ck-restore -D "$T/img" -d &
  local r=$!
  sleep 0.15
  kill -9 "$r"
  wait "$r" || true
  local i
  for ((i = 0; i < 100; i++)); do
    [ -d /proc/"$WPID" ] && [ "$(awk '{print $3}' /proc/"$WPID"/stat 2>/dev/null)" != Z ] || break
    sleep 0.05
  done
  [ ! -d /proc/"$WPID" ] || [ "$(awk '{print $3}' /proc/"$WPID"/stat)" = Z ]
}

@test "children of a restored tree still die with their parent (PR_SET_PDEATHSIG)" {
  start_wl shmtree
  local kid grandkid
  kid=$(echo $(cat /proc/"$WPID"/task/*/children))
  grandkid=$(echo $(cat /proc/"$kid"/task/*/children))
  PIDS+=("$kid" "$grandkid")
  dump_kill_restore
  kill -9 "$WPID"
  local i
  for ((i = 0; i < 100; i++)); do
    [ "$(task_alive "$kid")$(task_alive "$grandkid")" = "00" ] && break
    sleep 0.05
  done
  [ "$(task_alive "$kid")$(task_alive "$grandkid")" = "00" ]
}

# zstate PID: state, ppid, process group and exit code (wait status) from /proc/PID/stat.
zstate() { awk '{print $3, $4, $5, $52}' /proc/"$1"/stat; }

@test "zombies: children not waited for yet come back as zombies with their exit statuses" {
  start_wl zombies
  local z a b c
  z=$(sed -n 's/^INFO zombies=\([0-9]*,[0-9]*\) .*/\1/p' "$T/zombies.out")
  a=${z%,*}; b=${z#*,}
  c=$(sed -n 's/^INFO .* alive=\([0-9]*\)$/\1/p' "$T/zombies.out")
  PIDS+=("$c")
  [ "$(zstate "$a")" = "Z $WPID $WPID $((42 << 8))" ]
  [ "$(zstate "$b")" = "Z $WPID $WPID 15" ]
  dump_kill_restore
  [ "$(zstate "$a")" = "Z $WPID $WPID $((42 << 8))" ]
  [ "$(zstate "$b")" = "Z $WPID $WPID 15" ]
  [ "$(task_alive "$c")" = 1 ]
  run ck-crit show -D "$T/img"
  assert_output --partial "process $a (zombies) ppid $WPID pgid $WPID sid $WPID, zombie, exit status 0x2a00"
  assert_output --partial "process $b (zombies) ppid $WPID pgid $WPID sid $WPID, zombie, exit status 0xf"
  # dumped again with its zombies, the image is the same; that one restored
  # passes the workload's own check (statuses, no extra SIGCHLD, C alive)
  redump_and_compare
  [ "$(zstate "$a")" = "Z $WPID $WPID $((42 << 8))" ]
  check_wl zombies "$WPID"
}

@test "ck-restore run by another user on root's tasks is refused by name before anything is created" {
  start_wl counter 16
  run ck-dump -t "$WPID" -D "$T/img"
  assert_success
  gone "$WPID"
  # uid 65534 without capabilities, then with CAP_CHECKPOINT_RESTORE alone:
  # both refused by the credentials or the pid they cannot give
  run sh -c 'ck-store get -D "$0" | setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all ck-restore' "$T/img"
  assert_failure 1
  assert_output --partial "unable to restore pid $WPID: ck-restore lacks CAP_CHECKPOINT_RESTORE and CAP_SYS_ADMIN"
  [ ! -d /proc/"$WPID" ]
  run sh -c 'ck-store get -D "$0" | setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=+checkpoint_restore --ambient-caps=+checkpoint_restore ck-restore' "$T/img"
  assert_failure 1
  assert_output --partial "unable to restore pid $WPID: it ran as uid 0 and ck-restore, without CAP_SETUID, cannot take it (run ck-restore as root)"
  [ ! -d /proc/"$WPID" ]
  # root restores the same image, and the task checks itself
  run ck-restore -D "$T/img" -d --pidfile "$T/pid"
  assert_success
  check_wl counter "$WPID"
}
