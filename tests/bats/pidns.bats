#!/usr/bin/env bats
# ck-restore --pidns: the tree comes back in a new pid namespace, under an
# init of ck's (pid 1 there), with its dumped pids inside the namespace.
load helpers

# inner_pid PID: the pid of PID inside its innermost namespace.
inner_pid() { awk '/^NSpid:/ {print $NF}' /proc/"$1"/status; }
# tree_of PID: PID and its descendants, one per line.
tree_of() {
  local c
  echo "$1"
  for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do tree_of "$c"; done
}
# ck_inits: how many live ck-init processes exist (ours are the only ones;
# a dead one may stay a zombie until pid 1 reaps it).
ck_inits() {
  local f n=0
  for f in $(grep -lx 'ck-init' /proc/[0-9]*/comm 2>/dev/null); do
    [ "$(task_alive "$(basename "$(dirname "$f")")")" = 1 ] && n=$((n + 1))
  done
  echo $n
}
# state_of PID: proc_state without what a namespace changes (thread ids
# are the outer ones).
state_of() { proc_state "$1" | sed -E '/^# threads/,/^# cwd/ s/^[0-9]+ //'; }

@test "--pidns: two copies of one tree run at once, each in a namespace of its own with the dumped pids" {
  start_wl shmtree
  local before want
  want=$(tree_of "$WPID" | tr '\n' ' ')
  state_of "$WPID" > "$T/before"
  run ck-dump -t "$WPID" -D "$T/img"
  assert_success
  # the dumped pids are still taken (by zombies or not) or free: it does not matter
  local n o init got
  for n in 1 2; do
    run ck-restore --pidns -D "$T/img" -d --pidfile "$T/pid$n"
    assert_success
    o=$(cat "$T/pid$n")
    init=$(awk '{print $4}' /proc/"$o"/stat)
    PIDS+=("$init" "$o")
    [ "$o" != "$WPID" ]
    [ "$(cat /proc/"$init"/comm)" = ck-init ]
    [ "$(inner_pid "$init")" = 1 ]
    [ "$(ls /proc/"$init"/fd | wc -l)" = 0 ]  # init holds none of the tree's files
    got=$(for p in $(tree_of "$o"); do inner_pid "$p"; done | tr '\n' ' ')
    [ "$got" = "$want" ]
    state_of "$o" > "$T/after$n"
    diff -u "$T/before" "$T/after$n"
  done
  # both copies check their memory, pipe and shared region, one after the
  # other: they write their output at the same offset of the same file
  local i
  for n in 1 2; do
    : > "$T/shmtree.out"
    kill -USR2 "$(cat "$T/pid$n")"
    for ((i = 0; i < 300; i++)); do
      grep -aEq '^(PASS|FAIL)' "$T/shmtree.out" && break
      sleep 0.05
    done
    run grep -aE '^(PASS|FAIL)' "$T/shmtree.out"
    assert_output PASS
  done
}

@test "--pidns: ck-restore waits for the root and passes its status on; the namespace ends with it" {
  start_wl shmtree
  run ck-dump -t "$WPID" -D "$T/img"
  assert_success
  ck-restore --pidns -D "$T/img" --pidfile "$T/pid" &
  local r=$! i
  PIDS+=("$r")
  for ((i = 0; i < 200; i++)); do [ -s "$T/pid" ] && break; sleep 0.05; done
  local o kids
  o=$(cat "$T/pid")
  kids=$(tree_of "$o" | tail -n +2)
  [ -n "$kids" ]
  kill -TERM "$o"
  local st=0
  wait "$r" || st=$?
  [ "$st" = 143 ]
  # the children went with the namespace
  sleep 0.2
  for p in $kids; do [ "$(task_alive "$p")" = 0 ]; done
}

@test "--pidns: a failed restore leaves no namespace and no task behind" {
  dump_counter_copy
  local inits
  inits=$(ck_inits)
  echo extra >> "$T/counter-copy"
  run ck-restore --pidns -D "$T/img" -d
  assert_failure 1
  assert_output --partial "changed since the dump"
  sleep 0.3
  [ "$(ck_inits)" = "$inits" ]
  # killed midway: the same
  cp "$WL/counter" "$T/counter-copy2"
  ck-restore --pidns -D "$T/img" -d > /dev/null 2>&1 &
  sleep 0.02
  kill -9 $! 2>/dev/null || true
  wait $! || true
  sleep 0.3
  [ "$(ck_inits)" = "$inits" ]
}
