#!/usr/bin/env bats
# Issue 20: the quick slice of the fault matrix (tests/faults/run --quick;
# make faults runs all of it).  One test per stage: each of its cells must
# end with the target running on as before (or a complete image that
# restores), no thread stopped, no image half made, and after a failed
# restore no task left.
load helpers

matrix() {
  run "$CK_TOP/tests/faults/run" --quick "$1"
  echo "$output"
  assert_success
  assert_output --regexp "faults: [1-9][0-9]* survived, 0 lost"
  refute_output --partial "LOST"
}

@test "faults: ck-freeze killed, stopped past --timeout, its output closed, out of fds, out of memory" {
  matrix '^freeze '
}

@test "faults: ck-memread killed, stopped, EPIPE, out of fds, out of memory" {
  matrix '^memread '
}

@test "faults: ck-sockdump (unix sockets with queued bytes) killed, EPIPE, out of fds, out of memory" {
  matrix '^sockdump '
}

@test "faults: ck-cgdump killed, EPIPE, out of fds, out of memory" {
  matrix '^cgdump '
}

@test "faults: ck-store put killed, ENOSPC, out of fds, out of memory" {
  matrix '^put '
}

@test "faults: ck-restore killed midway, out of fds, out of memory: no task left, the image still restores" {
  matrix '^restore '
}

# gone_tracer CMD...: runs CMD with CK_TRACER_FD naming a socket whose
# peer is closed (ck-freeze killed), stdout to /dev/null.
gone_tracer() {
  python3 -c '
import os, socket, sys
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
b.close()
os.set_inheritable(a.fileno(), True)
os.environ["CK_TRACER_FD"] = str(a.fileno())
fd = os.open("/dev/null", os.O_WRONLY)
os.dup2(fd, 1)
os.execvp(sys.argv[1], sys.argv[1:])' "$@"
}

@test "faults: a stage whose tracer (ck-freeze) is gone refuses to go on, since the tree is no longer frozen" {
  start_wl counter 4
  run ck-freeze -t "$WPID" --leave-running -- sh -c 'cat > "$0"' "$T/s.ck"
  assert_success
  run gone_tracer ck-memread < "$T/s.ck"
  assert_failure 1
  assert_output --partial "the tracer (ck-freeze, CK_TRACER_FD="
  assert_output --partial "is gone, so the tree is no longer frozen"
  run gone_tracer ck-sockdump < "$T/s.ck"
  assert_failure 1
  assert_output --partial "is gone, so the tree is no longer frozen"
  check_wl counter "$WPID"
}
