#!/usr/bin/env bats
# Pre-dump rounds that never lose a write: a round's dirty set is released
# only once the round is known to be stored.  Every failure path of a round
# (a stage after ck-memread that fails, ck-memread killed midway, a store
# that fills up, a round retried), then a final round and a restore that the
# writer workload checks page by page; round ids and --since; ck-predump
# going on after a failed round.
load helpers

setup() {
  T=$(mktemp -d /tmp/ck-test.XXXXXX)
  PIDS=()
  export CK_TRACK_DIR="$T/state"
}

teardown() {
  local p h
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for h in $(cat "$T"/state/*/[0-9]* "$T"/img/track/*/[0-9]* 2>/dev/null | sed -n 's/^pid .* holder \([0-9]*\)$/\1/p'); do
    [ "$(cat /proc/"$h"/comm 2>/dev/null)" = ck-track-hold ] && kill "$h" 2>/dev/null
  done
  mountpoint -q "$T/small" 2>/dev/null && umount "$T/small"
  rm -rf "$T"
}

stat_of() { tail -n 1 "$T/stats" | grep -Eo "(^| )$1=[^ ]+" | cut -d= -f2; }

first_round() {
  ck-memread --track -t "$WPID" --stats "$T/stats" | ck-store put -D "$T/r1" > "$T/id.r1"
}

# final DIR PARENT [SINCE]: the frozen last round (the tree is killed)
final() {
  CK_D=$1 CK_P=$2 CK_SINCE=${3:+--since $3} ck-freeze -t "$WPID" -- sh -c \
    'ck-memread --dirty $CK_SINCE --stats "$0" | ck-store put -D "$CK_D" --parent "$CK_P" > /dev/null' "$T/stats"
}

# check_restored DIR: restores DIR; the writer checks every page of its buffer
check_restored() {
  local i n
  for ((i = 0; i < 100; i++)); do [ -d /proc/"$WPID" ] || break; sleep 0.02; done
  run ck-restore -D "$1" -d --pidfile "$T/pid"
  assert_success
  [ "$(cat "$T/pid")" = "$WPID" ]
  n=$(grep -c '^INFO checked' "$T/writer.out" || true)
  kill -USR2 "$WPID"
  for ((i = 0; i < 1500; i++)); do
    [ "$(grep -c '^INFO checked' "$T/writer.out")" -gt "$n" ] && break
    sleep 0.02
  done
  run grep "^INFO checked pid=$WPID " "$T/writer.out"
  assert_output --partial "bad=0"
}

@test "rounds: a stage after ck-memread --dirty that fails loses no write (under ck-freeze and alone)" {
  start_wl writer -m 64 -r 5000
  first_round
  sleep 0.4
  # the issue's case: the round is taken, nothing stores it, the tree resumes
  run ck-freeze -t "$WPID" -- sh -c 'ck-memread --dirty | false'
  assert_failure
  sleep 0.3
  run ck-freeze -t "$WPID" -- sh -c 'ck-memread --dirty | { head -c 2000000 > /dev/null; exit 7; }'
  assert_failure 7
  sleep 0.3
  run sh -c "ck-memread --dirty -t $WPID | { head -c 1000000 > /dev/null; exit 1; }"
  assert_failure
  sleep 0.3
  final "$T/r2" "$T/r1"
  check_restored "$T/r2"
}

@test "rounds: ck-memread killed with SIGKILL midway (at several instants) loses no write" {
  start_wl writer -m 64 -r 5000
  first_round
  mkfifo "$T/fifo"
  for take in 0 1 300000 4000000; do
    sleep 0.3
    exec 8<>"$T/fifo"
    ck-memread --dirty -t "$WPID" > "$T/fifo" &
    m=$!
    if [ "$take" = 0 ]; then sleep 0.01; elif [ "$take" = 1 ]; then sleep 0.15; else head -c "$take" <&8 > /dev/null; fi
    kill -9 "$m"
    wait "$m" || true
    exec 8<&-
  done
  sleep 0.3
  final "$T/r2" "$T/r1"
  check_restored "$T/r2"
}

@test "rounds: a ck-store put that fails on a full file system loses no write, and leaves nothing there" {
  start_wl writer -m 64 -r 5000
  first_round
  sleep 0.5
  mkdir "$T/small"
  mount -t tmpfs -o size=1m "ck-integrity-$$" "$T/small"
  run sh -c "ck-memread --dirty -t $WPID | ck-store put -D $T/small/r2 --parent $T/r1"
  assert_failure 1
  assert_output --partial "No space left on device"
  [ -z "$(ls -A "$T/small")" ]
  sleep 0.3
  final "$T/r2" "$T/r1"
  check_restored "$T/r2"
}

@test "rounds: a standalone round retried loses no write" {
  start_wl writer -m 64 -r 5000
  first_round
  sleep 0.4
  # taken, and its stream lost on the way (a transfer that broke)
  ck-memread --dirty -t "$WPID" > /dev/null
  sleep 0.4
  # taken again, and stored this time: it carries what the first one found
  ck-memread --dirty -t "$WPID" --stats "$T/stats" | ck-store put -D "$T/r2" --parent "$T/r1" > "$T/id.r2"
  base=$(stat_of base)
  sleep 0.3
  final "$T/r3" "$T/r2" "$(cat "$T/id.r2")"
  check_restored "$T/r3"
  [ "$base" = 1 ]   # (the retry was computed against round 1, the one stored)
}

@test "rounds: ids, --since, and ck-freeze's commit and rollback" {
  start_wl writer -m 8 -r 1000
  first_round
  id1=$(cat "$T/id.r1")
  [[ "$id1" =~ ^[0-9a-f]{16}:1$ ]]
  dump=${id1%:*}
  run ck-store ls -D "$T/r1"
  assert_output --partial "round 1 of dump $dump"
  # round 2: rolled back by ck-freeze, so it is no base
  run ck-freeze -t "$WPID" -- sh -c 'ck-memread --dirty > /dev/null; exit 5'
  assert_failure 5
  run ck-memread --dirty --since "$dump:2" -t "$WPID"
  assert_failure 3
  assert_output --partial "round 2 was rolled back by ck-freeze: it is stored nowhere"
  # round 3 (the refused --since took no number): taken whole into a file
  ck-memread --dirty -t "$WPID" > "$T/r3.ck"
  # round 4: ck-memread killed midway, so it is no base either
  mkfifo "$T/fifo"
  exec 8<>"$T/fifo"
  # half a second of writes at 1000 pages/s: a stream far over what the
  # FIFO holds, so ck-memread is still writing when it is killed
  sleep 0.5
  ck-memread --dirty -t "$WPID" > "$T/fifo" &
  m=$!
  head -c 10000 <&8 > /dev/null
  sleep 0.1
  [ "$(task_alive "$m")" = 1 ]
  kill -9 "$m"
  wait "$m" || true
  exec 8<&-
  run ck-memread --dirty --since 4 -t "$WPID"
  assert_failure 3
  assert_output --partial "round 4 did not finish (its stream was cut short): it is stored nowhere"
  run ck-memread --dirty --since 9 -t "$WPID"
  assert_failure 3
  assert_output --partial "has no such round (dump $dump, rounds 1 to 4)"
  run ck-memread --dirty --since "0123456789abcdef:1" -t "$WPID"
  assert_failure 3
  assert_output --partial "is of another tracking"
  # round 3 finished (its stream is whole in r3.ck): naming it confirms it
  ck-store put -D "$T/r3" --parent "$T/r1" < "$T/r3.ck" > "$T/id.r3"
  [ "$(cat "$T/id.r3")" = "$dump:3" ]
  ck-memread --dirty --since "$dump:3" -t "$WPID" --stats "$T/stats" > /dev/null
  [ "$(stat_of base)" = 3 ]
  run ck-memread --dirty --since 1 -t "$WPID"
  assert_failure 3
  assert_output --partial "round 1 is older than round 3, which is known to be stored"
  # without --since: the newest round confirmed
  ck-memread --dirty -t "$WPID" --stats "$T/stats" > /dev/null
  [ "$(stat_of base)" = 3 ]
  # a round under ck-freeze that commits (the tree left running) is confirmed
  CK_P="$T/r3" ck-freeze -t "$WPID" --leave-running -- sh -c \
    'ck-memread --dirty --stats "$0" | ck-store put -D "$0.r8" --parent "$CK_P" > /dev/null' "$T/stats"
  [ "$(stat_of round)" = 7 ]
  ck-memread --dirty -t "$WPID" --stats "$T/stats" > /dev/null
  [ "$(stat_of base)" = 7 ]
  # --untrack ends it all
  ck-memread --untrack -t "$WPID"
  [ ! -e "$T/state/$WPID" ]
}

@test "rounds: ck-predump goes on after a failed round, and what it leaves restores" {
  start_wl writer -m 64 -r 3000
  # a store that fails once for round 2 and once for the frozen round (a
  # transfer that broke): it reads its input, then exits 1
  mkdir "$T/bin"
  cat > "$T/bin/ck-store" <<EOF
#!/bin/sh
case "\$*" in
  *"/img/2 "*|*"/img/2") m=$T/failed.2 ;;
  *) m= ;;
esac
if [ -n "\$m" ] && [ ! -e "\$m" ]; then touch "\$m"; cat > /dev/null; exit 1; fi
case "\$*" in *--parent*) [ ! -e $T/failed.final ] && [ -n "\$CK_TRACER_FD" ] && { touch $T/failed.final; cat > /dev/null; exit 1; } ;; esac
exec "$CK_TOP/build/bin/ck-store" "\$@"
EOF
  chmod +x "$T/bin/ck-store"
  PATH="$T/bin:$PATH" run ck-predump -t "$WPID" -D "$T/img" --max-rounds 3 --min-pages 0
  echo "$output"
  assert_success
  [ -e "$T/failed.2" ]
  [ -e "$T/failed.final" ]
  assert_output --partial "ck-predump: round 2 failed (status 1): taking it again"
  assert_output --partial "ck-predump: the final round failed (status 1): taking it again"
  [ -e "$T/img/last/parent" ]
  check_restored "$T/img/last"
}
