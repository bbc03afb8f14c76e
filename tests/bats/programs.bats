#!/usr/bin/env bats
# Issue 3: real programs nobody here wrote go through dump, kill, restore.
load helpers

@test "sleep keeps sleeping after a restore and exits on time" {
  local t0 t1
  t0=$(date +%s.%N)
  only_std setsid sleep 4 < /dev/null > /dev/null 2>&1 &
  WPID=$!; PIDS+=("$WPID")
  sleep 0.5
  run ck-dump -t "$WPID" -D "$T/img"
  assert_success
  run ck-restore -D "$T/img"    # waits for sleep and passes its status on
  assert_success
  t1=$(date +%s.%N)
  # it slept its 4 s in all, not 4 s again after the restore and not less
  run awk -v a="$t0" -v b="$t1" 'BEGIN { d = b - a; print (d >= 3.9 && d < 6.5) ? "ok" : "took " d }'
  assert_output ok
}

@test "a bash loop appending to a file continues without a gap or a repeat" {
  only_std setsid bash "$CK_TOP/tests/programs/append.sh" "$T/lines" < /dev/null > /dev/null 2>&1 &
  WPID=$!; PIDS+=("$WPID")
  sleep 0.5
  run ck-dump -t "$WPID" -D "$T/img"
  assert_success
  local n1; n1=$(wc -l < "$T/lines")
  run ck-restore -D "$T/img" -d
  assert_success
  sleep 0.7
  kill -9 "$WPID"
  local n2; n2=$(wc -l < "$T/lines")
  [ "$n2" -gt "$((n1 + 5))" ]
  run awk 'NR != $1 { print "line " NR " says " $1; exit 1 }' "$T/lines"
  assert_success
}

@test "python3 with a large heap continues with its data intact" {
  only_std setsid python3 "$CK_TOP/tests/programs/heap.py" "$T/py.out" < /dev/null > /dev/null 2>&1 &
  WPID=$!; PIDS+=("$WPID")
  wait_line "$T/py.out" '^READY' 60
  run ck-dump -t "$WPID" -D "$T/img"
  assert_success
  ( sleep 1; kill -USR2 "$WPID" ) &
  run ck-restore -D "$T/img"
  assert_success
  run grep -E '^(PASS|FAIL)' "$T/py.out"
  assert_output --regexp '^PASS n=[0-9]+$'
}
