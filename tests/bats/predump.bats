#!/usr/bin/env bats
# Pre-dump rounds: ck-memread --track/--dirty (PAGEMAP_SCAN + uffd WP_ASYNC),
# incremental image sets (ck-store put --parent), ck-predump, and restore
# through the chain verified page by page by the writer workload.
load helpers

setup() {
  T=$(mktemp -d /tmp/ck-test.XXXXXX)
  PIDS=()
  export CK_TRACK_DIR="$T/state"
}

teardown() {
  local p h
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  if [ -n "${CGDIR:-}" ] && [ -d "$CGDIR" ]; then
    for ((p = 0; p < 100; p++)); do rmdir "$CGDIR" 2>/dev/null && break; sleep 0.02; done
  fi
  # holders of this test's targets (they also exit with their target)
  for h in $(cat "$T"/state/*/[0-9]* 2>/dev/null | sed -n 's/^pid .* holder \([0-9]*\)$/\1/p'); do
    [ "$(cat /proc/"$h"/comm 2>/dev/null)" = ck-track-hold ] && kill "$h" 2>/dev/null
  done
  rm -rf "$T"
}

stat_of() { tail -n 1 "$T/stats" | grep -Eo "(^| )$1=[^ ]+" | cut -d= -f2; }

# round N [ARGS]: round N of $WPID into $T/N (1: --track, else --dirty on
# N-1, which it names with --since: the id ck-store put printed, in $T/id.N)
round() {
  local n=$1; shift
  if [ "$n" = 1 ]; then
    ck-memread --track -t "$WPID" --stats "$T/stats" "$@" | ck-store put -D "$T/1" > "$T/id.1"
  else
    ck-memread --dirty --since "$(cat "$T/id.$((n - 1))")" -t "$WPID" --stats "$T/stats" "$@" |
      ck-store put -D "$T/$n" --parent "$T/$((n - 1))" > "$T/id.$n"
  fi
}

# final N: the frozen last round into $T/N (the tree is killed)
final() {
  local p
  case $1 in n*) p=n$((${1#n} - 1)) ;; *) p=$(($1 - 1)) ;; esac
  CK_P="$T/$p" CK_D="$T/$1" CK_S="$T/stats" CK_ID="$(cat "$T/id.$p")" \
    ck-freeze -t "$WPID" -- sh -c \
    'ck-memread --dirty --since "$CK_ID" --stats "$CK_S" | ck-store put -D "$CK_D" --parent "$CK_P" > /dev/null'
}

restore_check() {  # restore_check DIR [PID...]: restore, check every pid given (default $WPID)
  local d=$1 p i; shift
  for ((i = 0; i < 100; i++)); do [ -d /proc/"$WPID" ] || break; sleep 0.02; done
  run ck-restore -D "$d" -d --pidfile "$T/pid"
  assert_success
  [ "$(cat "$T/pid")" = "$WPID" ]
  for p in "${@:-$WPID}"; do
    n=$(grep -c '^INFO checked' "$T/writer.out" || true)
    kill -USR2 "$p"
    for ((i = 0; i < 1500; i++)); do
      [ "$(grep -c '^INFO checked' "$T/writer.out")" -gt "$n" ] && break
      sleep 0.02
    done
    run grep "^INFO checked pid=$p " "$T/writer.out"
    assert_output --partial "bad=0"
  done
}

@test "predump: --track arms tracking invisibly, --dirty copies only written pages" {
  start_wl writer -m 64 -r 0
  round 1
  [ "$(stat_of round)" = 1 ]
  [ "$(stat_of pages)" -ge 16384 ]
  # the target's own fd table does not show the userfaultfd
  run sh -c "ls -l /proc/$WPID/fd | grep -c userfaultfd"
  [ "$output" = 0 ]
  h=$(sed -n 's/^pid .* holder \([0-9]*\)$/\1/p' "$T/state/$WPID/$WPID")
  [ "$(cat /proc/"$h"/comm)" = ck-track-hold ]
  ls -l /proc/"$h"/fd | grep -q userfaultfd
  round 2
  [ "$(stat_of round)" = 2 ]
  [ "$(stat_of pages)" -lt 64 ]       # nothing written: next to nothing copied
  [ "$(stat_of dirty_vmas)" -gt 0 ]
  run ck-crit info -D "$T/2"
  assert_success
  # --untrack stops the holder
  ck-memread --untrack -t "$WPID"
  for ((i = 0; i < 100; i++)); do [ "$(cat /proc/"$h"/comm 2>/dev/null)" = ck-track-hold ] || break; sleep 0.02; done
  [ "$(cat /proc/"$h"/comm 2>/dev/null)" != ck-track-hold ]
  run ck-memread --dirty -t "$WPID"
  assert_failure 1
  assert_output --partial "is not tracked"
}

@test "predump: writes at a known rate are all in the chain; restore verifies every page" {
  start_wl writer -m 256 -r 5000
  local t0 t1
  t0=$(date +%s%N)
  round 1
  sleep 0.5
  round 2
  t1=$(date +%s%N)
  # round 2 holds what was written since round 1 began, at most 5000
  # pages/s over the time both rounds took (measured, so a loaded machine
  # moves the bound with it), and never the whole 65536 pages
  local most=$(( (t1 - t0) / 1000000 * 5 + 1000 ))
  [ "$most" -lt 65536 ] || most=65536
  [ "$(stat_of pages)" -gt 100 ]
  [ "$(stat_of pages)" -lt "$most" ]
  sleep 0.2
  round 3
  final 4
  # ck-crit and ck-store agree: the chain reads as one whole image, round 4
  run ck-crit info -D "$T/4"
  assert_line "incremental:   no"
  assert_line --regexp "^round: +4 of dump [0-9a-f]{16}$"
  run ck-store ls -D "$T/4"
  assert_line --index 0 --regexp "format 1.3, root pid $WPID, round 4 of dump [0-9a-f]{16}, read through a chain of 4 images, [0-9]+ frames, [0-9]+ page bytes$"
  assert_line --index 3 --regexp "^parent 3: $T/1 \(round 1 of dump [0-9a-f]{16}\)$"
  run ck-crit show -D "$T/4"
  assert_success
  # pages of every round come through the chain, each naming its round
  for r in 1 2 3 4; do echo "$output" | grep -Eq "pages by round:.* $r: [1-9]"; done
  # the chain as one stream: runs of older rounds cut by newer ones carry
  # the digest of their part, and a reader checks every one
  ck-store get -D "$T/4" > "$T/flat.ck"
  run ck-crit info < "$T/flat.ck"
  assert_success
  assert_line "format:        1.3"
  restore_check "$T/4"
}

@test "predump: a round on a parent it was not computed against is refused at put and at restore, naming both" {
  start_wl writer -m 32 -r 5000
  round 1
  sleep 0.3
  round 2
  sleep 0.3
  # round 3, computed against round 2, stored on round 1: round 2's writes would be lost
  run sh -c "ck-memread --dirty --since $(cat "$T/id.2") -t $WPID | ck-store put -D $T/3 --parent $T/1"
  assert_failure 3
  assert_output --partial "ck-store: the stream is round 3 of dump"
  assert_output --partial "computed against round 2; parent '$T/1' is round 1 of dump"
  [ ! -e "$T/3" ]
  # tracking armed again is another dump: none of its rounds fits the old chain
  ck-memread --track -t "$WPID" | ck-store put -D "$T/n1" > "$T/id.n1"
  run sh -c "ck-memread --dirty -t $WPID | ck-store put -D $T/n2 --parent $T/2"
  assert_failure 3
  assert_output --partial "of another tracking"
  ck-memread --dirty --since "$(cat "$T/id.n1")" -t "$WPID" | ck-store put -D "$T/n2" --parent "$T/n1" > "$T/id.n2"
  final n3
  # a chain mislinked by hand is refused at restore, naming both rounds; nothing runs
  for ((i = 0; i < 100; i++)); do [ -d /proc/"$WPID" ] || break; sleep 0.02; done
  echo "$T/n1" > "$T/n3/parent"
  run ck-restore -D "$T/n3" -d --pidfile "$T/pid"
  assert_failure 3
  assert_output --regexp "ck-restore: image '$T/n3' is round [0-9]+ of dump [0-9a-f]{16}, computed against round [0-9]+; parent '$T/n1' is round 1 of dump [0-9a-f]{16}, and round [0-9]+ is not in its chain"
  [ ! -e /proc/"$WPID" ]
  [ ! -s "$T/pid" ]
  echo "$T/n2" > "$T/n3/parent"
  restore_check "$T/n3"
}

@test "predump: pipelines/ck-predump rounds, then the frozen round; restore from DIR/last" {
  start_wl writer -m 128 -r 3000
  run ck-predump -t "$WPID" -D "$T/img" --max-rounds 4
  assert_success
  echo "$output"
  [ "$(echo "$output" | grep -c '^round [0-9]*: pages [0-9]*, bytes [0-9]*, seconds [0-9.]*, freeze [0-9.]* ms$')" -ge 2 ]
  [ -e "$T/img/last/parent" ]
  restore_check "$T/img/last"
}

@test "predump: a task in a v2 cgroup comes back in it (the final round has every stage of ck-dump)" {
  local cgfs=${CK_CGROUP_ROOT:-/sys/fs/cgroup/unified}
  [ "$(stat -f -c %T "$cgfs" 2>/dev/null)" = cgroup2fs ] || skip "no cgroup2 at $cgfs"
  CGDIR=$cgfs/ck-restorable-predump-$$-$RANDOM
  mkdir "$CGDIR"
  start_wl writer -m 16 -r 1000
  echo "$WPID" > "$CGDIR/cgroup.procs"
  run ck-predump -v -t "$WPID" -D "$T/img" --max-rounds 2
  assert_success
  run ck-crit show -D "$T/img/last"
  assert_output --partial "${CGDIR#"$cgfs"}"
  restore_check "$T/img/last"
  run cat "/proc/$WPID/cgroup"
  assert_line "0::${CGDIR#"$cgfs"}"
  kill -9 "$WPID"
  for ((i = 0; i < 100; i++)); do rmdir "$CGDIR" 2>/dev/null && break; sleep 0.02; done
}

@test "predump: a target that exits between rounds is reported gone, tracking ends" {
  start_wl writer -m 16 -r 100
  round 1
  h=$(sed -n 's/^pid .* holder \([0-9]*\)$/\1/p' "$T/state/$WPID/$WPID")
  kill -9 "$WPID"
  for ((i = 0; i < 100; i++)); do [ -d /proc/"$WPID" ] || break; sleep 0.02; done
  run ck-memread --dirty -t "$WPID"
  assert_failure 1
  assert_output --partial "pid $WPID has exited: tracking ended"
  [ ! -e "$T/state/$WPID" ]
  for ((i = 0; i < 100; i++)); do [ "$(cat /proc/"$h"/comm 2>/dev/null)" = ck-track-hold ] || break; sleep 0.02; done
  [ "$(cat /proc/"$h"/comm 2>/dev/null)" != ck-track-hold ]
}

@test "predump: a fork between rounds gets a full copy and is tracked from then on" {
  start_wl writer -m 16 -r 500 -a fork
  round 1 --tree
  kill -USR1 "$WPID"
  wait_line "$T/writer.out" '^CHILD' 10
  child=$(sed -n 's/^CHILD //p' "$T/writer.out")
  PIDS+=("$child")
  round 2 --tree
  [ "$(stat_of processes)" = 2 ]
  [ "$(stat_of armed)" = 1 ]
  [ "$(stat_of pages)" -ge 4096 ]     # the child's 16 MiB, whole
  sleep 0.2
  round 3 --tree
  [ "$(stat_of armed)" = 0 ]
  [ "$(stat_of pages)" -lt 4096 ]     # both tracked now
  final 4
  restore_check "$T/4" "$child" "$WPID"
}

@test "predump: an exec between rounds gets a full copy (new mm)" {
  start_wl writer -m 16 -r 2000 -a exec
  round 1
  kill -USR1 "$WPID"
  for ((i = 0; i < 500; i++)); do [ "$(grep -c ^READY "$T/writer.out")" = 2 ] && break; sleep 0.02; done
  [ "$(grep -c ^READY "$T/writer.out")" = 2 ]
  round 2
  [ "$(stat_of dirty_vmas)" = 0 ]
  [ "$(stat_of armed)" = 1 ]
  [ "$(stat_of pages)" -ge 4096 ]
  sleep 0.2
  round 3
  [ "$(stat_of dirty_vmas)" -gt 0 ]
  final 4
  restore_check "$T/4"
}

@test "predump: a mapping moved and a new one made between rounds are copied whole" {
  start_wl writer -m 16 -r 500 -a remap
  round 1
  kill -USR1 "$WPID"
  wait_line "$T/writer.out" '^REMAPPED' 10
  round 2
  [ "$(stat_of pages)" -ge 4096 ]     # the moved buffer, whole
  grep -q 'fresh' <(ck-crit show -D "$T/2" 2>/dev/null || true) || ck-crit decode -D "$T/2" | grep -q '"text":"fresh '
  sleep 0.2
  round 3
  [ "$(stat_of pages)" -lt 4096 ]
  final 4
  restore_check "$T/4"
}

@test "predump: pages given back with MADV_DONTNEED between rounds restore as zero (anon) or the file (private)" {
  start_wl writer -m 16 -r 500 -a drop -f "$T/private.dat"
  round 1
  sleep 0.2
  round 2
  kill -USR1 "$WPID"
  wait_line "$T/writer.out" '^DROPPED' 10
  round 3
  # the dropped ranges are said to be gone, not copied: 512 + 16 anon pages, 16 file pages
  [ "$(stat_of gone_pages)" -ge 544 ]
  [ "$(stat_of pages)" -lt 2048 ]
  sleep 0.2
  final 4
  restore_check "$T/4"
}
