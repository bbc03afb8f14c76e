#!/usr/bin/env bats
# File locks and leases: flock, POSIX (per process), OFD and leases come
# back with their range, type and owner; what cannot is refused by name.
load helpers

# locks_of PID...: the lines of /proc/locks these pids hold (and every OFD
# lock, whose pid is -1), without the lock number, sorted.
locks_of() {
  local re
  re=$(printf '%s|' "$@" -1)
  grep -E " (${re%|}) " /proc/locks | grep -v -- '->' | sed 's/^[0-9]*: //' | sort
}

@test "flock, POSIX, OFD locks and a lease keep range, type and owner; nobody else gets them" {
  mkdir "$T/files"
  start_wl locks "$T/files"
  local child
  child=$(info child "$T/locks.out")
  locks_of "$WPID" "$child" > "$T/locks-before"
  [ "$(wc -l < "$T/locks-before")" -eq 6 ]
  dump_kill_restore
  locks_of "$WPID" "$child" > "$T/locks-after"
  diff -u "$T/locks-before" "$T/locks-after"
  run flock -n "$T/files/a" true
  assert_failure 1
  check_wl locks "$WPID"
}

@test "flock(1): the lock is held while dumped and after the restore, and free once the tree ends" {
  touch "$T/lockfile"
  only_std setsid flock "$T/lockfile" sleep 1000 < /dev/null > /dev/null 2>&1 &
  WPID=$!; PIDS+=("$WPID")
  local i
  for ((i = 0; i < 100; i++)); do [ -n "$(cat /proc/"$WPID"/task/*/children 2>/dev/null)" ] && break; sleep 0.02; done
  local sleeper
  sleeper=$(awk '{print $1}' /proc/"$WPID"/task/*/children)
  PIDS+=("$sleeper")
  # the sleep alone shares the locked description with flock(1), which
  # keeps it: refused by name, both run on
  run ck-dump -t "$sleeper" -D "$T/img0"
  assert_failure 1
  assert_output --partial "its description is shared with pid $WPID outside the tree, which holds the lock too: not supported"
  ! any_stopped "$sleeper"
  # the whole tree: held while it is frozen, and after the restore
  run ck-freeze -t "$WPID" -- sh -c "flock -n '$T/lockfile' true && echo got-it; ck-memread | ck-store put -D '$T/img'"
  assert_success
  refute_output --partial got-it
  run flock -n "$T/lockfile" true
  assert_success  # between kill and restore nobody holds it
  run ck-restore -D "$T/img" -d
  assert_success
  run flock -n "$T/lockfile" true
  assert_failure 1
  kill "$sleeper"
  for ((i = 0; i < 100; i++)); do [ "$(task_alive "$WPID")" = 0 ] && break; sleep 0.05; done
  run flock -n "$T/lockfile" true
  assert_success
}

@test "sqlite3: a writer dumped inside BEGIN IMMEDIATE keeps its lock; its COMMIT succeeds, a second writer's rows follow" {
  python3 -c "import sqlite3; sqlite3.connect('$T/db').execute('CREATE TABLE t (n INTEGER, who TEXT)')"
  start_prog sqlwriter.py "$T/db"
  run python3 "$CK_TOP/tests/programs/sqlwriter.py" --second "$T/db"
  assert_output "second: database is locked"
  # while it is dumped, the second writer cannot have the lock either
  run ck-freeze -t "$WPID" -- sh -c "python3 '$CK_TOP/tests/programs/sqlwriter.py' --second '$T/db'; ck-memread | ck-store put -D '$T/img'"
  assert_success
  assert_output "second: database is locked"
  run ck-restore -D "$T/img" -d
  assert_success
  run python3 "$CK_TOP/tests/programs/sqlwriter.py" --second "$T/db"
  assert_output "second: database is locked"
  check_wl sqlwriter.py "$WPID"
  run python3 "$CK_TOP/tests/programs/sqlwriter.py" --second "$T/db"
  assert_output "second: committed"
  run python3 -c "import sqlite3; c = sqlite3.connect('$T/db'); print(c.execute('SELECT who, count(*) FROM t GROUP BY who ORDER BY who').fetchall(), c.execute('PRAGMA integrity_check').fetchone()[0])"
  assert_output "[('first', 100), ('second', 1)] ok"
}
