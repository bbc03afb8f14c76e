#!/usr/bin/env bats
# ck-migrate between two test hosts (network namespaces with their own
# sshd, /run and, at the destination, pid namespace): see migrate_helpers.bash.
load helpers
load migrate_helpers

setup() {
  T=$(mktemp -d /tmp/ck-test.XXXXXX)
  PIDS=()
  mk_hosts || { rm_hosts; false; }
}

teardown() {
  local p
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm_hosts
  rm -rf "$T"
}

# start_src_writer MIB: the writer workload on the source host; WPID.
start_src_writer() {
  only_std setsid nsenter -t "$(src_sshd)" -n -m -- "$WL/writer" -m "$1" -r 2000 > "$T/writer.out" 2>&1 < /dev/null &
  PIDS+=($!)
  WPID=$!
  wait_line "$T/writer.out" READY
}

# dst_pid_of PID: PID's process as seen from here, when it runs at the
# destination (its pid there is PID).
dst_root() {
  local p
  for p in $(ip netns pids "$DST_NS"); do
    grep -q "^NSpid:.*[[:space:]]$1\$" /proc/$p/status 2>/dev/null &&
      [ "$(cat /proc/$p/comm)" = writer ] && { echo "$p"; return; }
  done
}

@test "migrate: the test hosts are separate: netns, /run, pid namespace" {
  [ "$(on_src ip -o addr show | grep -c "$SRC_IP")" = 1 ]
  [ "$(on_dst ip -o addr show | grep -c "$DST_IP")" = 1 ]
  on_src touch /run/ck-mig-mark
  [ ! -e /run/ck-mig-mark ]
  on_dst test ! -e /run/ck-mig-mark
  d=$(dst_sshd)
  [ -n "$d" ]
  [ "$(readlink /proc/$d/ns/pid)" != "$(readlink /proc/self/ns/pid)" ]
  on_src ssh -F "$SSH_CFG" "root@$DST_IP" 'echo $CK_MIGRATE_HOST' | grep -qx dst
  on_src ssh -F "$SSH_CFG" "root@$DST_IP" true
}

@test "migrate: a writing workload moves, every page checked at the destination" {
  start_src_writer 128
  run on_src ck-migrate -t "$WPID" "root@$DST_IP" --downtime 200
  echo "$output"
  [ "$status" = 0 ]
  [[ "$output" == *"round 1: pages"* ]]
  [[ "$output" == *"migrated: downtime"* ]]
  # The source is gone; the destination runs it.
  for ((i = 0; i < 50; i++)); do kill -0 "$WPID" 2>/dev/null || break; sleep 0.1; done
  ! kill -0 "$WPID" 2>/dev/null || [ "$(proc_state "$WPID")" = Z ]
  d=$(dst_root "$WPID")
  [ -n "$d" ]
  PIDS+=("$d")
  : > "$T/writer.out.check"
  kill -USR2 "$d"
  for ((i = 0; i < 100; i++)); do grep -q "PASS\|FAIL" "$T/writer.out" && break; sleep 0.1; done
  grep -q PASS "$T/writer.out"
}
