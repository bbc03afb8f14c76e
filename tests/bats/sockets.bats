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

# Real programs whose sockets ck-sockdump dumps: TCP (python3 -m
# http.server, nc -l, redis-server with a connected client), UDP (socat),
# and unix ones (an asyncio program, node with a child).

# TCP and UDP run in a network namespace of the test's own (the network lock
# is nftables in the sockets' namespace): NS, made by netns_up, removed in
# teardown with everything in it.
netns_up() {
  NS="ckSOCK$$_${BATS_TEST_NUMBER}"
  ip netns add "$NS"
  ip -n "$NS" link set lo up
  WRAP="nsenter --net=/run/netns/$NS"
}
teardown() {
  local p
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  if [ -n "${NS:-}" ]; then ip netns del "$NS" 2>/dev/null || true; fi
  rm -rf "$T"
}
in_ns() { nsenter --net=/run/netns/"$NS" "$@"; }

# dump_kill_restore_ns: dump_kill_restore, the tree restored into $NS.
dump_kill_restore_ns() {
  proc_state "$WPID" > "$T/before"
  run ck-dump -t "$WPID" -D "$T/img"
  assert_success
  gone "$WPID"
  run ck-restore -D "$T/img" -d --pidfile "$T/pid" --netns /run/netns/"$NS"
  assert_success
  [ "$(cat "$T/pid")" = "$WPID" ]
  proc_state "$WPID" > "$T/after"
  diff -u "$T/before" "$T/after"
  # The dump's lock and ck-restore's own are gone.
  run in_ns nft list tables
  refute_output --partial ck_lock_
}

# wait_listen PROTO PORT: something in $NS listens on PORT (ss -t or -u).
wait_listen() {
  local i
  for ((i = 0; i < 200; i++)); do in_ns ss -Hln"$1" 2>/dev/null | grep -q ":$2 " && return 0; sleep 0.05; done
  return 1
}

@test "TCP sockets in every state survive dump, kill and restore: queues, sequence numbers, options, closing states" {
  netns_up
  start_wl tcpsocks
  dump_kill_restore_ns
  check_wl tcpsocks "$WPID"
}

@test "python3 -m http.server: dumped, killed and restored, it serves again" {
  netns_up
  echo hello > "$T/hello.txt"
  only_std setsid $WRAP python3 -m http.server --bind 127.0.0.1 8000 --directory "$T" < /dev/null > "$T/http.out" 2>&1 &
  WPID=$!; PIDS+=("$WPID")
  wait_listen t 8000
  dump_kill_restore_ns
  run in_ns python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8000/hello.txt', timeout=10).read().decode())"
  assert_success
  assert_output hello
}

@test "redis-server with a client connected over TCP: restored, the client's pipelined requests all get their replies on the same connection" {
  command -v redis-server > /dev/null || skip "no redis-server"
  netns_up
  only_std setsid $WRAP redis-server --port 6379 --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
    < /dev/null > "$T/redis.out" 2>&1 &
  WPID=$!; PIDS+=("$WPID")
  wait_listen t 6379
  only_std $WRAP python3 "$CK_TOP/tests/programs/redis_client.py" 6379 "$T/client" "$T/go" < /dev/null > /dev/null 2>&1 &
  PIDS+=("$!")
  wait_line "$T/client" '^ready' 20
  dump_kill_restore_ns
  touch "$T/go"
  wait_line "$T/client" '^(PASS|FAIL)' 30
  run grep -E '^(PASS|FAIL)' "$T/client"
  assert_output PASS
}

@test "an asyncio program: its self-pipe socketpair is dumped by ck-sockdump; restored, it counts on" {
  only_std setsid python3 "$CK_TOP/tests/programs/asyncio_counter.py" "$T/n" < /dev/null > /dev/null 2>&1 &
  WPID=$!; PIDS+=("$WPID")
  wait_line "$T/n" '^[0-9]+' 20
  run ck-dump -t "$WPID" -D "$T/img"
  assert_success
  gone "$WPID"
  run ck-restore -D "$T/img" -d
  assert_success
  counter_advances
}

@test "node with a child from child_process.spawn: its stdio socketpairs are dumped; restored, parent and child run on" {
  command -v node > /dev/null || skip "no node"
  only_std setsid node "$CK_TOP/tests/programs/spawn.js" "$T/n" < /dev/null > "$T/node.out" 2>&1 &
  WPID=$!; PIDS+=("$WPID")
  wait_line "$T/node.out" '^child [0-9]+' 20
  local child
  child=$(awk '/^child/ {print $2}' "$T/node.out")
  PIDS+=("$child")
  wait_line "$T/n" '^[0-9]+' 20
  run ck-dump -t "$WPID" -D "$T/img"
  assert_success
  gone "$WPID"
  run ck-restore -D "$T/img" -d
  assert_success
  counter_advances
  [ "$(task_alive "$child")" = 1 ]
  [ "$(awk '{print $4}' /proc/"$child"/stat)" = "$WPID" ]
}

@test "nc -l: dumped, killed and restored, it takes a connection and prints what comes" {
  netns_up
  only_std setsid $WRAP nc -l 127.0.0.1 7000 < /dev/null > "$T/nc.out" 2>&1 &
  WPID=$!; PIDS+=("$WPID")
  wait_listen t 7000
  dump_kill_restore_ns
  in_ns python3 -c "import socket; s = socket.create_connection(('127.0.0.1', 7000), 5); s.sendall(b'after the restore\n'); s.close()"
  wait_line "$T/nc.out" '^after the restore$' 10
}

@test "UDP: queued datagrams with their sources and corked data (UDP_CORK, MSG_MORE) survive dump, kill and restore" {
  netns_up
  only_std setsid $WRAP python3 "$CK_TOP/tests/programs/udp_cork.py" < /dev/null > "$T/udp.out" 2>&1 &
  WPID=$!; PIDS+=("$WPID")
  wait_line "$T/udp.out" '^READY' 20
  dump_kill_restore_ns
  check_wl udp "$WPID"
}

@test "ck-sockdump that reaches ck-freeze only once ck-memread's parasite sends pages is served: the dump ends and restores" {
  netns_up
  only_std setsid $WRAP python3 "$CK_TOP/tests/programs/udp_cork.py" < /dev/null > "$T/udp.out" 2>&1 &
  WPID=$!; PIDS+=("$WPID")
  wait_line "$T/udp.out" '^READY' 20
  # ck-sockdump reads nothing before it has connected: ck-memread's pipe
  # fills, the parasite waits, and ck-freeze, inside the parasite's run,
  # must still take the new connection (a deadlock before).
  CK_SOCKDUMP_CONNECT_DELAY_MS=1500 run timeout 60 ck-dump -t "$WPID" -D "$T/img"
  assert_success
  gone "$WPID"
  run ck-restore -D "$T/img" -d --pidfile "$T/pid" --netns /run/netns/"$NS"
  assert_success
  check_wl udp "$WPID"
}

@test "socat receiving UDP into a file: dumped, killed and restored, it receives again" {
  netns_up
  only_std setsid $WRAP socat -u "UDP-RECV:7001,bind=127.0.0.1" "OPEN:$T/got,creat,append" < /dev/null > /dev/null 2>&1 &
  WPID=$!; PIDS+=("$WPID")
  wait_listen u 7001
  dump_kill_restore_ns
  in_ns python3 -c "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'after the restore\n', ('127.0.0.1', 7001))"
  wait_line "$T/got" '^after the restore$' 10
}

@test "ck-restore as the sink refuses a socket before it creates anything; the tree runs on" {
  start_py_counter 'import socket
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)'
  run ck-freeze -t "$WPID" -- sh -c 'ck-memread | ck-cgdump | ck-restore --pidns -d'
  assert_failure 1
  assert_output --regexp "ck-restore: unable to restore fd [0-9]+ of pid $WPID \(socket AF_UNIX SOCK_DGRAM\), fd [0-9]+ of pid $WPID \(socket AF_UNIX SOCK_DGRAM\): their state comes from ck-sockdump, which is not in the pipeline \(fd.socket.unix\)"
  ! any_stopped "$WPID"
  counter_advances
}

@test "with ck-sockdump's state in the stream the socket is not what refuses the dump" {
  # The kinds list makes the refusal depend on the stream: the same dump
  # with ck-sockdump's Socket frames is stored, without them it is refused.
  start_py_counter 'import socket
a, b = socket.socketpair()'
  ck-freeze -t "$WPID" --leave-running -- sh -c 'ck-memread | ck-sockdump > "$0"' "$T/with.ck"
  run ck-store put -D "$T/img" < "$T/with.ck"
  assert_success
  ck-crit decode < "$T/with.ck" > "$T/with.json"
  grep -q '"socket"' "$T/with.json"
  python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); d["frames"] = [f for f in d["frames"] if "socket" not in f["frame"]]; json.dump(d, sys.stdout)' "$T/with.json" |
    ck-crit encode > "$T/without.ck"
  run ck-store put -D "$T/img2" < "$T/without.ck"
  assert_failure 1
  assert_output --partial "ck-sockdump did not dump its state (fd.socket.unix)"
  [ ! -e "$T/img2/manifest" ]
  counter_advances
}

@test "TCP: a failing stage after ck-sockdump, or ck-sockdump killed, leaves every connection as it was and no lock in the namespace" {
  netns_up
  start_wl tcpsocks
  run ck-freeze -t "$WPID" -- sh -c 'ck-memread | ck-sockdump | false'
  assert_failure 1
  run in_ns nft list tables
  refute_output --partial ck_lock_
  ! any_stopped "$WPID"
  CK_FAULT=sockdump-repair run ck-freeze -t "$WPID" -- sh -c 'ck-memread | ck-sockdump | ck-store put -D "$0"' "$T/img"
  assert_failure
  [ ! -e "$T/img/manifest" ]
  run in_ns nft list tables
  refute_output --partial ck_lock_
  ! any_stopped "$WPID"
  check_wl tcpsocks "$WPID"
}

@test "a TCP restore that cannot bind (port taken, address missing) fails by name, leaves no task and only the dump's lock; the image restores later" {
  netns_up
  ip -n "$NS" addr add 10.77.0.1/32 dev lo
  only_std setsid $WRAP nc -l 10.77.0.1 7000 < /dev/null > "$T/nc.out" 2>&1 &
  WPID=$!; PIDS+=("$WPID")
  wait_listen t 7000
  run ck-dump -t "$WPID" -D "$T/img"
  assert_success
  gone "$WPID"
  # The dump's lock stays until a restore takes the sockets over.
  in_ns nft list tables > "$T/locks"
  grep -q ck_lock_ "$T/locks"
  # The port is taken in the namespace by a process of the test's own.
  only_std $WRAP python3 -c "import socket, time; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('10.77.0.1', 7000)); s.listen(); print('READY', flush=True); time.sleep(300)" > "$T/taker.out" 2>&1 &
  local taker=$!; PIDS+=("$taker")
  wait_line "$T/taker.out" '^READY' 20
  run ck-restore -D "$T/img" -d --netns /run/netns/"$NS"
  assert_failure
  assert_output --partial "10.77.0.1:7000"
  assert_output --partial "Address already in use"
  [ "$(task_alive "$WPID")" = 0 ]
  # ck-restore's own lock is gone, the dump's is still there.
  in_ns nft list tables | diff -u "$T/locks" -
  kill -9 "$taker"
  wait "$taker" 2>/dev/null || true
  # The address is missing: ck-restore names it, and nothing is left.
  ip -n "$NS" addr del 10.77.0.1/32 dev lo
  run ck-restore -D "$T/img" -d --netns /run/netns/"$NS"
  assert_failure
  assert_output --partial "10.77.0.1:7000"
  [ "$(task_alive "$WPID")" = 0 ]
  in_ns nft list tables | diff -u "$T/locks" -
  # Put back, the image restores, and nc takes a connection.
  ip -n "$NS" addr add 10.77.0.1/32 dev lo
  run ck-restore -D "$T/img" -d --netns /run/netns/"$NS"
  assert_success
  in_ns python3 -c "import socket; s = socket.create_connection(('10.77.0.1', 7000), 5); s.sendall(b'after the restore\n'); s.close()"
  wait_line "$T/nc.out" '^after the restore$' 10
  run in_ns nft list tables
  refute_output --partial ck_lock_
}
