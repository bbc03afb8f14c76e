#!/usr/bin/env bats
# ck-restore --shell-job: a job started from an interactive shell on one
# terminal comes back on the terminal of the shell that runs ck-restore,
# with job control working as for any other job.
load helpers

@test "--shell-job: jobs of bash on one terminal come back in the foreground or background of bash on another" {
  # ptyjob.py drives two real terminals and two interactive bash shells;
  # see its header.  It prints a line per step and PASS or FAIL: why.
  run timeout 120 python3 "$CK_TOP/tests/programs/ptyjob.py" "$WL/ttyjob" "$T/img"
  echo "$output"
  assert_success
  assert_line --partial "refused without --shell-job: ck-restore: unable to restore fd 0 of pid"
  assert_line --regexp '^restored: background job [0-9]+ in the background of /dev/pts/[0-9]+'
  assert_line --regexp '^restored: job [0-9]+ in the foreground of /dev/pts/[0-9]+'
  assert_line --partial "PASS: the job passed its check"
  # the image knows the terminal: settings and size with the fds, the
  # controlling terminal and its foreground group with the process
  run ck-crit show -D "$T/img"
  assert_output --regexp 'fd 0 -> CHR /dev/pts/[0-9]+ flags 02 tty 132x43'
  assert_output --regexp 'controlling terminal 136:[0-9]+, its foreground group [0-9]+'
}

@test "a pseudo-terminal master is refused by name at dump; the task runs on" {
  start_py_counter 'import pty
m, s = pty.openpty()'
  run ck-dump -t "$WPID" -D "$T/img"
  assert_failure 1
  assert_output --partial "pseudo-terminal master"
  assert_output --partial "not supported"
  [ ! -e "$T/img/manifest" ]
  ! any_stopped "$WPID"
  counter_advances
}

@test "--shell-job without a terminal, or with --pidns, is refused, nothing restored" {
  start_wl counter 1
  run ck-dump -t "$WPID" -D "$T/img"
  assert_success
  run setsid -w sh -c "ck-restore --shell-job -D '$T/img' < /dev/null > /dev/null 2>'$T/err'; echo rc=\$?"
  # (setsid: no controlling terminal, so /dev/tty cannot be opened either)
  assert_output "rc=1"
  run cat "$T/err"
  assert_output --partial "--shell-job: ck-restore has no terminal"
  [ "$(task_alive "$WPID")" != 1 ]
  # with --pidns ck-restore could not see the job stop: refused
  run ck-restore --shell-job --pidns -D "$T/img"
  assert_failure 2
  assert_output --partial "--shell-job and --pidns together are not supported"
  [ "$(task_alive "$WPID")" != 1 ]
}
