#!/usr/bin/env bats
# Issue 12: ck-sockdump and the socket restore.
load helpers

# sock_opts PID: SO_PEEK_OFF and SO_PASSCRED of every socket of PID, read
# from outside (a python that takes each fd with pidfd_getfd).
sock_opts() {
  python3 - "$1" <<'EOF'
import ctypes, os, socket, sys
pid = int(sys.argv[1])
pfd = os.pidfd_open(pid)
libc = ctypes.CDLL(None, use_errno=True)
os.pidfd_getfd = lambda p, fd: libc.syscall(438, p, fd, 0)
for fd in sorted(int(n) for n in os.listdir(f"/proc/{pid}/fd")):
    if not os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
        continue
    s = socket.socket(fileno=os.pidfd_getfd(pfd, fd))
    print(fd, s.getsockopt(socket.SOL_SOCKET, 42), s.getsockopt(socket.SOL_SOCKET, 16))  # SO_PEEK_OFF, SO_PASSCRED
    s.detach()
EOF
}

@test "unix sockets of every kind survive dump, kill and restore, queues and fds in flight included" {
  start_wl unixsocks "$T"
  dump_kill_restore
  check_wl unixsocks "$WPID"
}

@test "a restored tree dumped again gives the same socket state, field by field" {
  start_wl unixsocks "$T"
  run ck-dump -t "$WPID" -D "$T/img"
  assert_success
  run ck-restore -D "$T/img" -d --pidfile "$T/pid"
  assert_success
  redump_and_compare
  check_wl unixsocks "$WPID"
}

@test "ck-crit shows the socket state" {
  start_wl unixsocks "$T"
  run ck-dump -t "$WPID" -D "$T/img" --leave-running
  assert_success
  run ck-crit show -D "$T/img"
  assert_success
  assert_output --partial "unix listening '$T/l.sock' backlog 7, 1 waiting"
  assert_output --partial "3 messages queued"
  run ck-crit decode -D "$T/img"
  assert_output --partial '"unix_sk"'
  check_wl unixsocks "$WPID"
}

@test "a failing stage after ck-sockdump leaves every socket as it was" {
  start_wl unixsocks "$T"
  sock_opts "$WPID" > "$T/opts.before"
  run ck-freeze -t "$WPID" -- sh -c 'ck-memread | ck-sockdump | false'
  assert_failure 1
  sock_opts "$WPID" > "$T/opts.after"
  diff -u "$T/opts.before" "$T/opts.after"
  ! any_stopped "$WPID"
  check_wl unixsocks "$WPID"
}

@test "ck-sockdump killed in the middle of its side effects: ck-freeze undoes them" {
  start_wl unixsocks "$T"
  sock_opts "$WPID" > "$T/opts.before"
  CK_FAULT=sockdump-peeking run ck-freeze -t "$WPID" -- sh -c 'ck-memread | ck-sockdump | ck-store put -D "$0"' "$T/img"
  assert_failure
  [ ! -e "$T/img/manifest" ]
  sock_opts "$WPID" > "$T/opts.after"
  diff -u "$T/opts.before" "$T/opts.after"
  check_wl unixsocks "$WPID"
}

@test "--leave-running: the dump's side effects are undone and the workload goes on" {
  start_wl unixsocks "$T"
  sock_opts "$WPID" > "$T/opts.before"
  run ck-dump -t "$WPID" -D "$T/img" --leave-running
  assert_success
  sock_opts "$WPID" > "$T/opts.after"
  diff -u "$T/opts.before" "$T/opts.after"
  check_wl unixsocks "$WPID"
}

@test "a unix peer outside the tree is refused by name, or kept with --external" {
  python3 -c '
import socket, os, sys, time
l = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); l.bind(sys.argv[1]); l.listen(1)
print("READY", flush=True)
c, _ = l.accept(); time.sleep(60)' "$T/srv.sock" > "$T/srv.out" &
  PIDS+=($!)
  wait_line "$T/srv.out" READY
  start_py_counter "import socket
c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); c.connect('$T/srv.sock')"
  run ck-dump -t "$WPID" -D "$T/img"
  assert_failure
  assert_output --regexp "ck-sockdump: unable to dump socket fd [0-9]+ of pid $WPID \(unix stream\): its peer socket:\[[0-9]+\] \('$T/srv.sock'\) is outside the tree"
  counter_advances
  [ ! -e "$T/img/manifest" ]
  run ck-freeze -t "$WPID" -- sh -c 'ck-memread | ck-sockdump --external unix | ck-store put -D "$0"' "$T/img"
  assert_success
  run ck-restore -D "$T/img" -d
  assert_success
  counter_advances
  # the restored socket is connected to the server again
  run python3 -c '
import ctypes, os, sys, socket
libc = ctypes.CDLL(None, use_errno=True)
pid = int(sys.argv[1])
for n in os.listdir(f"/proc/{pid}/fd"):
    if os.readlink(f"/proc/{pid}/fd/{n}").startswith("socket:"):
        s = socket.socket(fileno=libc.syscall(438, os.pidfd_open(pid), int(n), 0))
        print(s.getpeername())' "$WPID"
  assert_output "$T/srv.sock"
}

@test "ck-restore without socket state refuses the socket by name" {
  start_wl unixsocks "$T"
  run ck-freeze -t "$WPID" --leave-running -- sh -c 'ck-memread | ck-store put -D "$0"' "$T/img"
  assert_success
  kill -9 "$WPID"
  while [ -d /proc/"$WPID" ]; do sleep 0.05; done
  run ck-restore -D "$T/img" -d
  assert_failure 3
  assert_output --partial "is a socket and the image has no socket state (run ck-sockdump)"
  [ ! -d /proc/"$WPID" ]
}
