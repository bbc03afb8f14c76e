#!/usr/bin/env bats
# Issue 11: resources whose other end is outside the dumped tree.  The last
# stage of a real shell pipeline (producer | grep > file) holds a pipe whose
# write end the producer, outside the tree, holds: a dump refuses it by
# name, naming the outside holder, and the pipeline flows on; accepted with
# --external, the dump goes through, and ck-restore --inherit-fd hands the
# restored grep a new pipe from a new producer: it goes on where it was.
load helpers

# pipeline: "counter lines | grep" in the background; sets WPID (grep) and
# PIPE (grep's stdin, "pipe:[INO]").
pipeline() {
  only_std setsid sh -c '
    i=0; while :; do i=$((i + 1)); echo "old $i" || exit 0; sleep 0.01; done |
      sh -c '\''echo $$ > "$0"; exec grep --line-buffered "^[a-z]"'\'' "$1"' sh "$T/grep.pid" > "$T/out" 2>/dev/null < /dev/null &
  PIDS+=("$!")
  wait_line "$T/out" '^old 3$' 20
  WPID=$(cat "$T/grep.pid")
  PIDS+=("$WPID")
  PIPE=$(readlink "/proc/$WPID/fd/0")
  [[ $PIPE == pipe:* ]]
}

grows() {
  local a b
  a=$(wc -l < "$1"); sleep 0.3; b=$(wc -l < "$1")
  [ "$b" -gt "$a" ]
}

@test "a stage of a shell pipeline: its pipe is refused by name with the outside holder; the pipeline flows on" {
  pipeline
  run ck-dump -t "$WPID" -D "$T/img"
  assert_failure 1
  assert_output --regexp "ck-freeze: unable to dump fd 0 of pid $WPID \(pipe:\[[0-9]+\]\): fd 1 of pid [0-9]+ \((sh|dash|bash)\), outside the tree, holds it too: accept it with --external '$(printf '%s' "$PIPE" | sed 's/[][]/\\&/g')' \(fd.pipe.external\)"
  [ ! -e "$T/img/manifest" ]
  ! any_stopped "$WPID"
  grows "$T/out"
}

@test "--external at dump, --inherit-fd at restore: the restored stage reads from a new producer and writes on where it was" {
  pipeline
  run ck-dump -t "$WPID" -D "$T/img" --external "$PIPE"
  assert_success
  for ((i = 0; i < 100; i++)); do [ "$(task_alive "$WPID")" = 0 ] && break; sleep 0.02; done
  [ "$(task_alive "$WPID")" = 0 ]
  local before
  before=$(wc -l < "$T/out")
  # the image names it, and carries none of its queued bytes
  run ck-crit decode -D "$T/img"
  assert_output --partial "\"external\":\"$PIPE\""
  # without a replacement: refused by name, nothing restored
  run ck-restore -D "$T/img" -d
  assert_failure 1
  assert_output --partial "ck-restore: unable to restore fd 0 of pid $WPID ($PIPE): its other end is outside the tree: hand it a replacement with --inherit-fd '$PIPE=FD' (fd.pipe.external)"
  [ "$(task_alive "$WPID")" = 0 ]
  # a bad spec is a usage error
  run ck-restore -D "$T/img" --inherit-fd "$PIPE"
  assert_failure 2
  run ck-restore -D "$T/img" --inherit-fd "$PIPE=77"
  assert_failure 2
  assert_output --partial "fd 77 of ck-restore is not open"
  # a new producer feeds the restored grep through ck-restore's stdin
  only_std setsid sh -c 'i=0; while :; do i=$((i + 1)); echo "new $i" || exit 0; sleep 0.01; done |
    ck-restore -D "$0" --inherit-fd "$1=0" -d --pidfile "$2"' "$T/img" "$PIPE" "$T/pid" > /dev/null 2> "$T/restore.err" < /dev/null &
  PIDS+=("$!")
  wait_line "$T/out" '^new 20$' 20
  [ "$(cat "$T/pid")" = "$WPID" ]
  # the file goes on where grep left it: every old line once and in order
  # (grep may have held a few it had read and not written yet), then every
  # new one in order
  run awk -v before="$before" '
    $1 == "old" { if (seen_new || $2 != old + 1) { print "old line out of place: " NR ": " $0; exit 1 } old = $2; next }
    $1 == "new" { if (!seen_new && NR <= before) { print "new line in the old part: " NR; exit 1 }
                  if ($2 != new + 1) { print "new line out of place: " NR ": " $0; exit 1 } seen_new = 1; new = $2; next }
    { print "stray line " NR ": " $0; exit 1 }
    END { if (new < 20) { print "only " new " new lines"; exit 1 } }' "$T/out"
  assert_success
  [[ $(readlink "/proc/$WPID/fd/0") == pipe:* ]]
  [ "$(readlink "/proc/$WPID/fd/0")" != "$PIPE" ]
}

@test "a FIFO that a process outside the tree holds: refused by name, accepted with --external, replaced with --inherit-fd" {
  mkfifo "$T/f"
  only_std setsid sh -c 'exec 3<>"$0"; while :; do echo x >&3; sleep 0.05; done' "$T/f" < /dev/null > /dev/null 2>&1 &
  PIDS+=("$!")
  only_std setsid sh -c 'exec cat < "$0"' "$T/f" > "$T/cat.out" 2>&1 < /dev/null &
  WPID=$!; PIDS+=("$WPID")
  wait_line "$T/cat.out" '^x$' 20
  run ck-dump -t "$WPID" -D "$T/img"
  assert_failure 1
  assert_output --partial "ck-freeze: unable to dump fd 0 of pid $WPID (fifo:$T/f): fd 3 of pid"
  assert_output --partial "accept it with --external 'fifo:$T/f' (fd.fifo.external)"
  ! any_stopped "$WPID"
  run ck-dump -t "$WPID" -D "$T/img" --external "fifo:$T/f"
  assert_success
  local n
  n=$(wc -l < "$T/cat.out")
  run ck-restore -D "$T/img" -d --inherit-fd "fifo:$T/f=3" 3<> "$T/f"
  assert_success
  for ((i = 0; i < 200; i++)); do [ "$(wc -l < "$T/cat.out")" -gt $((n + 3)) ] && break; sleep 0.02; done
  [ "$(wc -l < "$T/cat.out")" -gt $((n + 3)) ]
}
