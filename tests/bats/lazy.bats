#!/usr/bin/env bats
# Issue 13: lazy (post-copy) restore; ck-uffd-serve serves the anonymous
# memory from the image while the restored tree runs.
load helpers

lazy_dump() {
  run ck-dump -t "$WPID" -D "$T/img"
  assert_success
  gone "$WPID"
}

@test "lazy restore: counter with 64 MiB of random data checks every page" {
  start_wl counter 64
  proc_state "$WPID" > "$T/before"
  lazy_dump
  run ck-restore --lazy --progress -D "$T/img" -d --pidfile "$T/pid"
  assert_success
  assert_output --partial "ck-uffd-serve: done"
  [ "$(cat "$T/pid")" = "$WPID" ]
  PIDS+=("$WPID")
  proc_state "$WPID" > "$T/after"
  diff -u "$T/before" "$T/after"
  check_wl counter "$WPID"
}

@test "lazy restore: the tree runs before its pages are in, and is right" {
  start_wl counter 32
  lazy_dump
  # 46 runs, one every 200 ms in image order: 9 s of serving.
  CK_UFFD_SERVE_DELAY_MS=200 ck-restore --lazy --progress -D "$T/img" -d 2> "$T/serve.err" &
  local r=$!
  for ((i = 0; i < 250; i++)); do [ "$(task_alive "$WPID")" = 1 ] && break; sleep 0.02; done
  PIDS+=("$WPID")
  # ck-restore is done with the tree (detached, ended) while pages are
  # still arriving: nothing of it waits for ck-uffd-serve.
  wait "$r"
  grep -q "^TracerPid:[[:space:]]*0$" /proc/"$WPID"/status
  pgrep -f "ck-uffd-serve -D $T/img" > /dev/null
  check_wl counter "$WPID"
  wait_line "$T/serve.err" "ck-uffd-serve: done" 30
}

@test "lazy restore: a fault is served at once, its run first, not in image order" {
  start_wl counter 32
  lazy_dump
  # One run every 2 s in image order: its 46 runs would take 90 s, three
  # times check_wl's wait; served on demand, the check needs seconds.
  CK_UFFD_SERVE_DELAY_MS=2000 ck-restore --lazy -D "$T/img" -d 2> "$T/serve.err" &
  local srv=""
  for ((i = 0; i < 250; i++)); do srv=$(pgrep -f "ck-uffd-serve -D $T/img" || true); [ -n "$srv" ] && break; sleep 0.02; done
  [ -n "$srv" ]
  PIDS+=("$WPID" "$srv")
  check_wl counter "$WPID"
  # The check is done and most runs are still to come in order.
  kill -0 "$srv"
}

@test "lazy restore: kill -9 of ck-uffd-serve midway kills the tree" {
  start_wl counter 32
  lazy_dump
  # Under a subreaper: how the restored tree ended (SIGKILL from the
  # guard, not SIGSEGV on a zero page handed out once the uffds closed).
  # One run every 200 ms in order (9 s for 46 runs): the server is killed
  # with most of them still to come (a fault would place its run at once,
  # so the workload is not asked to check itself).
  CK_UFFD_SERVE_DELAY_MS=200 python3 "$CK_TOP/tests/programs/subreaper.py" "$T/reaped" ck-restore --lazy -D "$T/img" -d 2> "$T/serve.err" &
  local srv=""
  for ((i = 0; i < 250; i++)); do srv=$(pgrep -f "ck-uffd-serve -D $T/img" || true); [ -n "$srv" ] && break; sleep 0.02; done
  [ -n "$srv" ]
  PIDS+=("$WPID")
  sleep 0.5
  kill -9 "$srv"
  gone "$WPID"
  run grep -E '^(PASS|FAIL)' "$T/counter.out"
  refute_output PASS
  for ((i = 0; i < 250; i++)); do grep -q "restored tree was killed" "$T/serve.err" && break; sleep 0.02; done
  grep -q "restored tree was killed" "$T/serve.err"
  wait_line "$T/reaped" "^$WPID " 10
  run grep "^$WPID " "$T/reaped"
  assert_output "$WPID signal SIGKILL"
}

@test "lazy restore needs an image directory" {
  run ck-restore --lazy < /dev/null
  assert_failure 2
  assert_output --partial "--lazy needs -D DIR"
}
