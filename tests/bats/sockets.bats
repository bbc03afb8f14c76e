#!/usr/bin/env bats
# Issue 11: until ck-sockdump carries socket state, a dump of a tree that
# holds a socket is refused by name (family, type, address, kind) at the
# sink, before the tree is killed, and the program runs on unchanged:
# python3 -m http.server, an asyncio program, node with a spawned child,
# nc -l, socat.  The refusal is the list's (fd.socket.* needs its state):
# it goes away for a stream that carries it.
load helpers

# free_port: a TCP/UDP port of 127.0.0.1 that nothing uses now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# refused_by_name PID WHAT KIND: a default dump of PID fails naming WHAT
# and KIND; nothing is stored and PID is neither killed nor left stopped.
refused_by_name() {
  run ck-dump -t "$1" -D "$T/img"
  assert_failure 1
  assert_output --partial "unable to dump fd "
  assert_output --partial "$2"
  assert_output --regexp "\(([a-z._-]+, )*$3(, [a-z._-]+)*\)"
  assert_output --partial "the tree resumes as it was"
  [ ! -e "$T/img/manifest" ]
  [ "$(task_alive "$1")" = 1 ]
  ! any_stopped "$1"
}

@test "python3 -m http.server: refused by name with its address; it serves on" {
  local port
  port=$(free_port)
  only_std setsid python3 -m http.server --bind 127.0.0.1 "$port" --directory "$T" < /dev/null > "$T/http.out" 2>&1 &
  WPID=$!; PIDS+=("$WPID")
  echo hello > "$T/hello.txt"
  local i
  for ((i = 0; i < 100; i++)); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break
    sleep 0.05
  done
  refused_by_name "$WPID" "socket AF_INET SOCK_STREAM 127.0.0.1:$port listening" fd.socket.tcp
  run python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$port/hello.txt', timeout=5).read().decode())"
  assert_success
  assert_output hello
}

@test "an asyncio program: its self-pipe socketpair is refused by name; it counts on" {
  only_std setsid python3 "$CK_TOP/tests/programs/asyncio_counter.py" "$T/n" < /dev/null > /dev/null 2>&1 &
  WPID=$!; PIDS+=("$WPID")
  wait_line "$T/n" '^[0-9]+' 20
  refused_by_name "$WPID" "socket AF_UNIX SOCK_STREAM" fd.socket.unix
  counter_advances
}

@test "node with a child from child_process.spawn: its stdio socketpairs are refused by name; parent and child run on" {
  command -v node > /dev/null || skip "no node"
  only_std setsid node "$CK_TOP/tests/programs/spawn.js" "$T/n" < /dev/null > "$T/node.out" 2>&1 &
  WPID=$!; PIDS+=("$WPID")
  wait_line "$T/node.out" '^child [0-9]+' 20
  local child
  child=$(awk '/^child/ {print $2}' "$T/node.out")
  PIDS+=("$child")
  wait_line "$T/n" '^[0-9]+' 20
  refused_by_name "$WPID" "socket AF_UNIX SOCK_STREAM" fd.socket.unix
  counter_advances
  [ "$(task_alive "$child")" = 1 ]
  ! any_stopped "$child"
}

@test "nc -l: refused by name with its port; it still takes a connection" {
  local port
  port=$(free_port)
  only_std setsid nc -l 127.0.0.1 "$port" < /dev/null > "$T/nc.out" 2>&1 &
  WPID=$!; PIDS+=("$WPID")
  local i
  for ((i = 0; i < 100; i++)); do grep -q ":$port " <(ss -Hltn 2>/dev/null) && break; sleep 0.05; done
  refused_by_name "$WPID" "socket AF_INET SOCK_STREAM 127.0.0.1:$port listening" fd.socket.tcp
  python3 -c "import socket; s = socket.create_connection(('127.0.0.1', $port), 5); s.sendall(b'after the dump\n'); s.close()"
  wait_line "$T/nc.out" '^after the dump$' 10
}

@test "socat receiving UDP into a file: refused by name with its port; it still receives" {
  local port
  port=$(free_port)
  only_std setsid socat -u "UDP-RECV:$port,bind=127.0.0.1" "OPEN:$T/got,creat,append" < /dev/null > /dev/null 2>&1 &
  WPID=$!; PIDS+=("$WPID")
  local i
  for ((i = 0; i < 100; i++)); do grep -q ":$port " <(ss -Hlun 2>/dev/null) && break; sleep 0.05; done
  refused_by_name "$WPID" "socket AF_INET SOCK_DGRAM 127.0.0.1:$port" fd.socket.udp
  python3 -c "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'after the dump\n', ('127.0.0.1', $port))"
  wait_line "$T/got" '^after the dump$' 10
}

@test "ck-restore as the sink refuses a socket before it creates anything; the tree runs on" {
  start_py_counter 'import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("::1", 0))'
  run ck-freeze -t "$WPID" -- sh -c 'ck-memread | ck-cgdump | ck-restore --pidns -d'
  assert_failure 1
  assert_output --regexp "ck-restore: unable to restore fd [0-9]+ of pid $WPID \(socket AF_INET6 SOCK_DGRAM \[::1\]:[0-9]+\): its state comes from ck-sockdump, which is not in the pipeline \(fd.socket.udp\)"
  ! any_stopped "$WPID"
  counter_advances
}

@test "with ck-sockdump's state in the stream the socket is not what refuses the dump" {
  # The kinds list makes the refusal depend on the stream: a stage named
  # ck-sockdump that writes a Socket frame for the description satisfies
  # the check (here a stand-in: ck-crit edits the stream), and what is left
  # is ck-restore's own business.
  start_py_counter 'import socket
a, b = socket.socketpair()'
  ck-freeze -t "$WPID" --leave-running -- sh -c 'ck-memread > "$0"' "$T/s.ck" 2> "$T/err" || true
  ck-crit decode < "$T/s.ck" > "$T/s.json"
  python3 - "$T/s.json" > "$T/with.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
d["frames"][0]["frame"]["header"]["writers"].append("ck-sockdump 0.1")
socks = [f["frame"]["file"]["id"] for f in d["frames"] if f["frame"].get("file", {}).get("kind") == "FILE_SOCKET"]
assert socks, "no socket in the stream"
for i in socks:
    d["frames"].append({"frame": {"socket": {"desc": i, "state": ""}}})
json.dump(d, sys.stdout)
PY
  ck-crit encode < "$T/with.json" | { ck-store put -D "$T/img"; echo "rc=$?"; } > "$T/put" 2>&1
  run cat "$T/put"
  assert_output "rc=0"
  # without the Socket frames, the same stream is refused at the end
  python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); d["frames"] = [f for f in d["frames"] if "socket" not in f["frame"]]; json.dump(d, sys.stdout)' "$T/with.json" |
    ck-crit encode > "$T/without.ck"
  run ck-store put -D "$T/img2" < "$T/without.ck"
  assert_failure 1
  assert_output --partial "ck-sockdump did not dump its state (fd.socket.unix)"
  counter_advances
}
