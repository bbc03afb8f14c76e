#!/usr/bin/env bats
# Task state beyond registers and memory: stopped tasks (SIGSTOP, ^Z, with
# running siblings), the parent-death signal, session leaders on a terminal.
load helpers

# states PID...: the state letter of each process.
states() {
  local p
  for p in "$@"; do awk '{print $3}' /proc/"$p"/stat 2>/dev/null || echo gone; done | tr '\n' ' '
}

@test "stopped tasks (SIGSTOP, SIGTSTP, three threads, in read(2), a signal pending) come back stopped beside a running sibling" {
  start_wl stopped
  local a b c d
  a=$(info a "$T/stopped.out") b=$(info b "$T/stopped.out") c=$(info c "$T/stopped.out") d=$(info d "$T/stopped.out")
  run states "$a" "$b" "$c" "$d"
  assert_output --regexp '^T T [RS] T $'
  # a dump that fails leaves them as they were: stopped
  run ck-freeze -t "$WPID" -- false
  assert_failure 1
  run states "$a" "$b" "$c" "$d"
  assert_output --regexp '^T T [RS] T $'
  dump_kill_restore
  run states "$a" "$b" "$c" "$d"
  assert_output --regexp '^T T [RS] T $'
  run ck-crit show -D "$T/img"
  assert_output --partial "stopped by signal 19"
  assert_output --partial "stopped by signal 20"
  check_wl stopped "$WPID"
}

@test "PR_SET_PDEATHSIG: the root (setpriv --pdeathsig) and a child keep theirs, and ck-restore -d exiting does not fire it" {
  WRAP="setpriv --pdeathsig USR1" start_prog pdeath.py
  dump_kill_restore
  sleep 0.2  # (a signal fired by ck-restore's exit would be here by now)
  check_wl pdeath.py "$WPID"
}

@test "PR_SET_PDEATHSIG: setpriv --pdeathsig USR1 sleep keeps sleeping after ck-restore -d" {
  only_std setsid setpriv --pdeathsig USR1 sleep 1000 < /dev/null > /dev/null 2>&1 &
  WPID=$!; PIDS+=("$WPID")
  local i
  for ((i = 0; i < 100; i++)); do [ "$(cat /proc/"$WPID"/comm)" = sleep ] && break; sleep 0.02; done
  dump_kill_restore
  sleep 0.5
  [ "$(task_alive "$WPID")" = 1 ]
}

@test "vim stopped with ^Z comes back as a stopped job of the new shell (bg, kill -CONT, fg); an interactive shell is refused" {
  mkdir "$T/scratch"
  run timeout 120 python3 "$CK_TOP/tests/programs/stopjob.py" "$T/img" "$T/scratch"
  echo "$output"
  assert_success
  assert_line --partial "it is a session leader with the controlling terminal"
  assert_line --partial "restored: vim"
  assert_line --partial "bg: vim ran in the background"
  assert_line --partial "kill -CONT: vim ran"
  assert_line --partial "PASS: fg gave vim the terminal"
}
