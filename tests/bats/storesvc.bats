#!/usr/bin/env bats
# ck-store serve, the in-memory store service: readiness, socket activation,
# put/get/ls/rm through it, refusal of bad streams (nothing kept),
# deduplication with exact frees, the memory cap, uids kept apart, a service
# started for the caller, and trees dumped into it and restored from it.
# Every test runs its own service on a socket in its scratch directory; the
# service's pid is in PIDS, killed by teardown, and the socket goes with $T.
load helpers

MK="$CK_TOP/build/unit/mkstream"

# start_store [ARGS...]: ck-store serve on $SOCK ($T/store.sock), waits for
# its ready line; sets SPID and exports CK_STORE_SOCKET.
start_store() {
  SOCK=$T/store.sock
  export CK_STORE_SOCKET=$SOCK
  only_std ck-store serve --socket "$SOCK" --ready-fd 1 "$@" > "$T/ready" 2> "$T/serve.log" &
  SPID=$!
  PIDS+=("$SPID")
  wait_line "$T/ready" '^[0-9]+$' 20
  [ "$(cat "$T/ready")" = "$SPID" ]
}

# field NAME COLUMN: a column of image NAME's line in ck-store ls
# (3 FRAMES, 4 PAGE_BYTES, 5 ZERO_BYTES, 6 HELD_BYTES, 7 OWN_BYTES).
field() {
  ck-store ls | awk -v n="$1" -v c="$2" '$1 == n {print $c}'
}
# held: the page bytes the service holds for the caller (ls's first line).
held() {
  ck-store ls | sed -n '1s/.* logical page bytes, \([0-9]*\) held.*/\1/p'
}
nimages() {
  ck-store ls | sed -n '1s/.*): \([0-9]*\) image.*/\1/p'
}

# dump_to NAME [ck-freeze options]: dumps $WPID into the service as NAME
# through every stage, as DESIGN's example does.
dump_to() {
  local name=$1; shift
  run ck-freeze -t "$WPID" "$@" -- sh -c 'ck-memread | ck-sockdump | ck-cgdump | ck-store put --name "$0"' "$name"
  assert_success
}

@test "serve: ready on --ready-fd with its pid, a socket for its owner only, one service per socket" {
  start_store
  [ -S "$SOCK" ]
  run stat -c %a "$SOCK"
  assert_output 600
  run ck-store ls
  assert_success
  assert_line --index 0 "store service '$SOCK' (pid $SPID): 0 images, 0 logical page bytes, 0 held"
  run ck-store serve --socket "$SOCK"
  assert_failure 1
  assert_output "ck-store: a store service already listens on '$SOCK'"
  # SIGTERM: it ends and takes its socket away
  kill -TERM "$SPID"
  wait "$SPID" || true
  [ ! -e "$SOCK" ]
  run ck-store ls
  assert_failure 1
  assert_output "ck-store: no store service at '$SOCK' (ck-store serve starts one)"
}

@test "serve: sd_notify READY=1 on NOTIFY_SOCKET, and a socket passed by systemd (LISTEN_FDS)" {
  python3 - "$T" <<'EOF' &
import os, socket, sys
t = sys.argv[1]
n = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
n.bind(t + "/notify")
open(t + "/notify.bound", "w").close()
n.settimeout(20)
open(t + "/notify.got", "w").write(n.recv(4096).decode())
EOF
  py=$!
  PIDS+=("$py")
  for ((i = 0; i < 250; i++)); do [ -e "$T/notify.bound" ] && break; sleep 0.02; done
  NOTIFY_SOCKET=$T/notify only_std ck-store serve --socket "$T/n.sock" > /dev/null 2>&1 &
  npid=$!
  PIDS+=("$npid")
  wait "$py"
  run cat "$T/notify.got"
  assert_output --partial "READY=1"
  assert_output --partial "MAINPID=$npid"
  # socket activation: the service takes fd 3 and binds nothing itself
  only_std python3 -c '
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1]); s.listen(8)
os.dup2(s.fileno(), 3); os.set_inheritable(3, True)
os.environ["LISTEN_PID"] = str(os.getpid()); os.environ["LISTEN_FDS"] = "1"
os.execvp("ck-store", ["ck-store", "serve", "--socket", sys.argv[1] + ".unused", "--ready-fd", "1"])
' "$T/act.sock" > "$T/ready" 2> "$T/act.log" &
  PIDS+=($!)
  wait_line "$T/ready" '^[0-9]+$' 20
  [ ! -e "$T/act.sock.unused" ]
  run ck-store ls --socket "$T/act.sock"
  assert_success
  assert_line --index 0 --partial "0 images"
}

@test "put --name, get, ls, rm: the same bytes back; a name is not taken twice unless --force" {
  start_store
  "$MK" "$T/s.ck" 2>/dev/null
  run ck-store put --name a < "$T/s.ck"
  assert_success
  assert_output ""
  ck-store get --name a > "$T/back.ck"
  cmp "$T/s.ck" "$T/back.ck"
  run ck-store put --name a < "$T/s.ck"
  assert_failure 1
  assert_output "ck-store: image 'a' is already in the store (--force replaces it)"
  ck-store put --force --name a < "$T/s.ck"
  ck-store get --name a | cmp - "$T/s.ck"
  [ "$(nimages)" = 1 ]
  [ "$(field a 4)" = 1253376 ]
  [ "$(field a 3)" = 22 ]
  run ck-store rm a
  assert_success
  [ "$(nimages)" = 0 ]
  [ "$(held)" = 0 ]
  run ck-store get --name a
  assert_failure 1
  assert_output "ck-store: no image 'a' in the store"
  run ck-store put --name .bad < "$T/s.ck"
  assert_failure 2
  run ck-store put --name b -D "$T/img" < "$T/s.ck"
  assert_failure 2
  [ ! -e "$T/img" ]
}

@test "a corrupt or cut stream: status 3, and the service keeps nothing of it" {
  start_store
  "$MK" "$T/s.ck" 2>/dev/null
  ck-store put --name good < "$T/s.ck"
  h0=$(held)
  size=$(stat -c %s "$T/s.ck")
  mkdir "$T/bad"
  for cut in 8 100 600 $((size / 2)) $((size - 1)); do head -c "$cut" "$T/s.ck" > "$T/bad/cut-$cut.ck"; done
  python3 -c 'import sys; d = bytearray(open(sys.argv[1], "rb").read()); d[len(d) // 2] ^= 0x40; sys.stdout.buffer.write(d)' \
    "$T/s.ck" > "$T/bad/flip-payload.ck"
  head -c 5000 /dev/urandom > "$T/bad/garbage.ck"
  for f in "$T"/bad/*.ck; do
    run ck-store put --name x < "$f"
    echo "# $f: $status $output"
    [ "$status" -eq 3 ]
    [[ "$output" == "ck-store: stdin: "* ]]
    [ "$(nimages)" = 1 ]
    [ "$(held)" = "$h0" ]
  done
  run ck-store put --name x < "$T/bad/flip-payload.ck"
  assert_output --partial "does not match its digest"
  ck-store get --name good | cmp - "$T/s.ck"
}

@test "a put cut off midway (its client killed) is dropped whole" {
  start_store -v
  "$MK" "$T/s.ck" 2>/dev/null
  mkfifo "$T/f"
  ck-store put --name half < "$T/f" &
  put=$!
  PIDS+=("$put")
  exec 7> "$T/f"
  head -c 700000 "$T/s.ck" >&7
  kill -9 "$put"
  exec 7>&-
  wait_line "$T/serve.log" 'truncated' 20
  [ "$(nimages)" = 0 ]
  [ "$(held)" = 0 ]
}

@test "--max-memory: a put that would pass it is refused whole, what is stored stays" {
  "$MK" "$T/s.ck" 2>/dev/null
  start_store --max-memory 2M
  ck-store put --name small < "$T/s.ck"
  h0=$(held)
  start_wl counter 4
  ck-memread -t "$WPID" > "$T/big.ck"
  run ck-store put --name big < "$T/big.ck"
  assert_failure 1
  assert_output --partial "the store is full"
  [ "$(nimages)" = 1 ]
  [ "$(held)" = "$h0" ]
  ck-store get --name small | cmp - "$T/s.ck"
  run ck-store serve --max-memory lots --socket "$T/x.sock"
  assert_failure 2
}

@test "dedup: two dumps of one workload hold its pages once; zero pages are never held; rm frees exactly" {
  start_store
  start_wl counter 32
  dump_to d1 --leave-running
  dump_to d2 --leave-running
  l1=$(field d1 4) l2=$(field d2 4)
  h=$(held)
  echo "# logical $l1 + $l2, held $h"
  [ "$l1" -gt $((32 << 20)) ]
  # the second dump added almost nothing: far less than 2x one image
  [ "$h" -lt $((l1 + l1 / 10)) ]
  [ "$h" -lt $(((l1 + l2) / 2 + (l1 + l2) / 20)) ]
  # rm frees what only it held, and nothing else
  own1=$(field d1 7)
  held2=$(field d2 6)
  run ck-store rm d1
  assert_success
  [ "$(held)" = $((h - own1)) ]
  [ "$(held)" = "$held2" ]
  [ "$(field d2 7)" = "$held2" ]
  check_wl counter "$WPID"
}

@test "dedup: a region of zeros is held as nothing, its other pages once" {
  start_store
  start_wl zeros 16
  dump_to z --leave-running
  nonzero=$(info nonzero "$T/zeros.out")
  logical=$(field z 4) zero=$(field z 5) held=$(field z 6)
  echo "# logical $logical zero $zero held $held nonzero $nonzero"
  # memread sends the region's zero pages as zero runs or as payload; either
  # way the service holds only the non-zero pages and the rest of the process
  [ "$held" -le $((logical - zero)) ]
  [ "$held" -lt $(((16 << 20) / 4)) ]
  [ "$held" -ge $((nonzero * 4096)) ]
  check_wl zeros "$WPID"
}

@test "dedup compares bytes: two different pages with the same ck64 are both held and come back as they were" {
  start_store
  # ck64 adds lane words with weights 3^k: +3<<32 in word 16 (block 1) and
  # +1<<32 in word 0 (block 0) give the same sums, so these pages collide.
  only_std setsid python3 -c '
import mmap, os, struct, sys, time
m = mmap.mmap(-1, 8192)
m[128:136] = struct.pack("<Q", 3 << 32)
m[4096:4104] = struct.pack("<Q", 1 << 32)
sys.stdout.write("READY %d\n" % os.getpid()); sys.stdout.flush()
time.sleep(600)
' > "$T/py.out" 2>&1 &
  PIDS+=($!)
  wait_line "$T/py.out" '^READY' 20
  pypid=$(awk '/^READY/ {print $2}' "$T/py.out")
  ck-memread -t "$pypid" > "$T/m.ck"
  ck-store put --name c < "$T/m.ck"
  ck-store get --name c | cmp - "$T/m.ck"
}

@test "put --compress: zstd on the wire, the stream back as it was put; bad or cut zstd data is refused whole" {
  start_store
  start_wl zeros 16
  ck-memread -t "$WPID" > "$T/z.ck"
  ck-store put --compress --name z < "$T/z.ck"
  ck-store get --name z | cmp - "$T/z.ck"
  h=$(held)
  # the service tells a zstd frame by its magic, whoever compressed it
  zstd -q -c "$T/z.ck" > "$T/z.zst"
  [ "$(stat -c %s "$T/z.zst")" -lt $(($(stat -c %s "$T/z.ck") / 4)) ]
  ck-store put --name z2 < "$T/z.zst"
  ck-store get --name z2 | cmp - "$T/z.ck"
  [ "$(held)" = "$h" ]
  size=$(stat -c %s "$T/z.zst")
  head -c $((size / 2)) "$T/z.zst" > "$T/cut.zst"
  run ck-store put --name bad < "$T/cut.zst"
  assert_failure 3
  assert_output "ck-store: stdin: the zstd stream is cut short"
  python3 -c 'import sys; d = bytearray(open(sys.argv[1], "rb").read()); d[len(d) // 2] ^= 0x40; sys.stdout.buffer.write(d)' \
    "$T/z.zst" > "$T/flip.zst"
  run ck-store put --name bad < "$T/flip.zst"
  assert_failure 3
  assert_output --partial "ck-store: stdin: "
  [ "$(nimages)" = 2 ]
  [ "$(held)" = "$h" ]
  run ck-store put --compress -D "$T/img" < "$T/z.ck"
  assert_failure 2
  check_wl zeros "$WPID"
}

@test "uids are kept apart: each sees only its own images, no page is shared between them, others are refused" {
  chmod 711 "$T"
  mkdir "$T/nob"
  chown 65534:65534 "$T/nob"
  SOCK=$T/nob/store.sock
  only_std setpriv --reuid 65534 --regid 65534 --clear-groups ck-store serve --socket "$SOCK" --ready-fd 1 \
    > "$T/nob/ready" 2> "$T/serve.log" &
  PIDS+=($!)
  wait_line "$T/nob/ready" '^[0-9]+$' 20
  export CK_STORE_SOCKET=$SOCK
  "$MK" "$T/s.ck" 2>/dev/null
  chmod 644 "$T/s.ck"
  ck-store put --name mine < "$T/s.ck"
  setpriv --reuid 65534 --regid 65534 --clear-groups ck-store put --name theirs < "$T/s.ck"
  run ck-store ls
  assert_line --index 0 --partial "1 image,"
  assert_line --regexp '^mine '
  refute_line --regexp '^theirs '
  h=$(held)
  run setpriv --reuid 65534 --regid 65534 --clear-groups ck-store ls
  assert_line --regexp '^theirs '
  refute_line --regexp '^mine '
  assert_line --index 0 --partial " held"
  [[ "${lines[0]}" == *", $h held"* ]]
  # the same bytes, held twice: once per uid
  [ "$h" -gt 0 ]
  run ck-store get --name theirs
  assert_failure 1
  assert_output "ck-store: no image 'theirs' in the store"
  run ck-store rm theirs
  assert_failure 1
  # a third uid: no way in
  run setpriv --reuid 65533 --regid 65533 --clear-groups ck-store ls
  assert_failure 1
  assert_output --partial "$SOCK"
}

@test "put with no service and no name: starts one for the caller and prints the name it gave" {
  export CK_STORE_SOCKET=$T/auto.sock
  start_wl counter 8
  ck-memread -t "$WPID" | ck-store put > "$T/name" 2> "$T/err"
  cat "$T/err"
  spid=$(sed -n "s/^ck-store: started the store service at '.*' (pid \([0-9]*\))$/\1/p" "$T/err")
  [ -n "$spid" ]
  PIDS+=("$spid")
  [ "$(cat "$T/name")" = "img-$WPID" ]
  run ck-store ls
  assert_success
  assert_line --regexp "^img-$WPID +$WPID "
  # the next one finds it running, and gets a name of its own
  ck-memread -t "$WPID" | ck-store put > "$T/name2" 2> "$T/err2"
  [ "$(cat "$T/name2")" = "img-$WPID-2" ]
  [ ! -s "$T/err2" ]
  check_wl counter "$WPID"
}

@test "a tree dumped into the service (ck-freeze ... | ck-store put --name), killed, restored with --from" {
  start_store
  start_wl counter 16
  proc_state "$WPID" > "$T/before"
  dump_to t1
  gone "$WPID"
  run ck-restore --from t1 -d --pidfile "$T/pid"
  assert_success
  [ "$(cat "$T/pid")" = "$WPID" ]
  proc_state "$WPID" > "$T/after"
  diff -u "$T/before" "$T/after"
  check_wl counter "$WPID"
  gone "$WPID"
  # the image is still there for another restore: into a pid namespace,
  # where the tree has its dumped pid
  [ "$(nimages)" = 1 ]
  : > "$T/counter.out"
  run ck-restore --from t1 --pidns -d --pidfile "$T/pid2"
  assert_success
  o=$(cat "$T/pid2")
  PIDS+=("$(awk '{print $4}' /proc/"$o"/stat)" "$o")
  [ "$(awk '/^NSpid:/ {print $NF}' /proc/"$o"/status)" = "$WPID" ]
  # it writes its verdict at its dumped offset of the emptied file
  kill -USR2 "$o"
  for ((i = 0; i < 300; i++)); do grep -aEq '^(PASS|FAIL)' "$T/counter.out" && break; sleep 0.05; done
  run grep -aoE '(PASS|FAIL.*)$' "$T/counter.out"
  assert_output PASS
}

@test "a 3-process tree with a shared region through the service: get --name piped into ck-restore" {
  start_store
  start_wl shmtree
  tree=$(tree_pids "$WPID")
  dump_to tree
  for p in $tree; do gone "$p"; done
  run sh -c 'ck-store get --name tree | ck-restore -d --pidfile "$0"' "$T/pid"
  assert_success
  [ "$(cat "$T/pid")" = "$WPID" ]
  check_wl shmtree "$WPID"
}

@test "restore --from: no service, no image, wrong options: clear errors, nothing started" {
  export CK_STORE_SOCKET=$T/none.sock
  run ck-restore --from nothing
  assert_failure 1
  assert_output "ck-restore: no store service at '$T/none.sock' (ck-store serve starts one)"
  start_store
  run ck-restore --from nothing
  assert_failure 1
  assert_output "ck-restore: no image 'nothing' in the store"
  run ck-restore --from x -D "$T/img"
  assert_failure 2
  # the service killed: a clear error, no hang, and a new one takes the socket over
  kill -9 "$SPID"
  wait "$SPID" 2>/dev/null || true
  run ck-restore --from nothing
  assert_failure 1
  assert_output --partial "no store service at '$SOCK'"
  start_store
  run ck-store ls
  assert_success
}
