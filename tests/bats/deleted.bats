#!/usr/bin/env bats
# Files that lost their names: deleted files and memfds (open, mapped or
# both, carried as page runs with their holes), a deleted binary, python's
# multiprocessing semaphores, removed directories and a removed cwd.
load helpers

@test "deleted files, memfds, removed directories and a removed cwd come back with contents, holes, owner, mode and sharing" {
  mkdir "$T/scratch"
  start_wl deleted "$T/scratch"
  local child
  child=$(info child "$T/deleted.out")
  proc_state "$child" > "$T/child-before"
  dump_kill_restore
  proc_state "$child" > "$T/child-after"
  diff -u "$T/child-before" "$T/child-after"
  # the names were made for the restore and removed again
  run ls -A "$T/scratch"
  assert_output ""
  # contents travel as page runs (13 pages for 32+ MiB of files), none inline
  run ck-crit show -D "$T/img"
  assert_output --partial "13 pages of deleted files and memfds"
  ck-crit decode -D "$T/img" > "$T/img.json"
  run grep -c '"contents"' "$T/img.json"
  assert_output 0
  check_wl deleted "$WPID"
  # the child's parent-death signal came back too: it ends with its parent
  local i
  for ((i = 0; i < 100; i++)); do [ "$(task_alive "$child")" = 0 ] && break; sleep 0.05; done
  [ "$(task_alive "$child")" = 0 ]
}

@test "a program whose binary and library were deleted (a daemon after an upgrade) comes back with them" {
  cp "$WL/counter" "$T/counter-copy"
  lib=$(ldd "$WL/counter" | awk '/libc.so/ {print $3}')
  cp "$lib" "$T/libc.so.6"
  only_std env LD_LIBRARY_PATH="$T" setsid "$T/counter-copy" 8 > "$T/counter.out" 2>&1 < /dev/null &
  WPID=$!; PIDS+=("$WPID")
  wait_line "$T/counter.out" '^READY' 20
  rm "$T/counter-copy" "$T/libc.so.6"
  grep -q "$T/libc.so.6 (deleted)" /proc/"$WPID"/maps
  [ "$(readlink /proc/"$WPID"/exe)" = "$T/counter-copy (deleted)" ]
  dump_kill_restore
  [ "$(readlink /proc/"$WPID"/exe)" = "$T/counter-copy (deleted)" ]
  grep -q "$T/libc.so.6 (deleted)" /proc/"$WPID"/maps
  [ ! -e "$T/counter-copy" ] && [ ! -e "$T/libc.so.6" ]
  check_wl counter "$WPID"
}

@test "python3 multiprocessing: a Pool and a Semaphore (unlinked /dev/shm files mapped shared) work on after a restore" {
  start_prog mpool.py
  grep -q '/dev/shm/sem\..* (deleted)' /proc/"$WPID"/maps
  [ -n "$(cat /proc/"$WPID"/task/*/children)" ]
  dump_kill_restore
  check_wl mpool.py "$WPID"
}

@test "a deleted file mapped by a stage that was not told about it is refused by name; the task runs on" {
  # ck-memread under ck-freeze links every deleted mapping to the contents
  # ck-freeze records; a stream from elsewhere that names none is refused
  cp "$WL/counter" "$T/counter-copy"
  only_std setsid "$T/counter-copy" 1 > "$T/counter.out" 2>&1 < /dev/null &
  WPID=$!; PIDS+=("$WPID")
  wait_line "$T/counter.out" '^READY' 20
  rm "$T/counter-copy"
  run ck-freeze -t "$WPID" -- sh -c 'ck-crit decode | python3 -c "
import json, sys
d = json.load(sys.stdin)
d[\"frames\"] = [f for f in d[\"frames\"] if \"file\" not in f[\"frame\"] or f[\"frame\"][\"file\"].get(\"owner_fd\", 0) != -1]
json.dump(d, sys.stdout)" | ck-crit encode | ck-memread > /dev/null'
  assert_failure
  assert_output --partial "counter-copy (deleted) of pid $WPID: its file is deleted and the stream carries no contents for it"
  ! any_stopped "$WPID"
  check_wl counter "$WPID"
}
