#!/usr/bin/env bats
# ck-crit: decode/encode round trip, show, info, sum, and bad input.
load helpers

MK="$CK_TOP/build/unit/mkstream"

flip() {
  python3 -c 'import sys; d = bytearray(open(sys.argv[1], "rb").read()); d[int(sys.argv[2])] ^= 0x40; sys.stdout.buffer.write(d)' "$1" "$2"
}

bad_streams() {
  mkdir -p "$T/bad"
  local size cut
  size=$(stat -c %s "$T/s.ck")
  for cut in 4 8 13 100 600 $((size / 2)) $((size - 10)) $((size - 1)); do
    head -c "$cut" "$T/s.ck" > "$T/bad/cut-$cut.ck"
  done
  flip "$T/s.ck" 20 > "$T/bad/flip-frame.ck"
  flip "$T/s.ck" $((size / 2)) > "$T/bad/flip-payload.ck"
  head -c 5000 /dev/urandom > "$T/bad/garbage.ck"
  : > "$T/bad/empty.ck"
  "$MK" --major 2 "$T/bad/newer.ck" 2>/dev/null
  printf '\211CKSTRM\n\377\377\377\177' > "$T/bad/huge-frame.ck"
}

@test "decode | encode gives back the same bytes, from a stream and an image" {
  "$MK" "$T/s.ck" 2>/dev/null
  ck-crit decode < "$T/s.ck" > "$T/s.json"
  ck-crit encode < "$T/s.json" > "$T/re.ck"
  cmp "$T/s.ck" "$T/re.ck"
  ck-store put -D "$T/img" < "$T/s.ck"
  ck-crit decode -D "$T/img" > "$T/i.json"
  cmp "$T/s.json" "$T/i.json"
  # and a second time: decode is deterministic
  ck-crit decode < "$T/re.ck" | cmp - "$T/s.json"
  # map entries (the cgroup frame) come in any order from a writer
  for i in 1 2 3 4 5; do
    "$MK" "$T/m.ck" 2>/dev/null
    ck-crit decode < "$T/m.ck" | ck-crit encode | cmp - "$T/m.ck"
  done
}

@test "decode writes one JSON document with every frame and payload" {
  "$MK" "$T/s.ck" 2>/dev/null
  ck-crit decode < "$T/s.ck" > "$T/s.json"
  run python3 - "$T/s.json" <<'PY'
import base64, json, sys
d = json.load(open(sys.argv[1]))
fr = d["frames"]
print(len(fr), d["trailer"]["frames"], d["trailer"]["payload_bytes"])
print(fr[0]["frame"]["header"]["root_pid"], fr[1]["frame"]["process"]["comm"])
pay = sum(len(base64.b64decode(f["payload"])) for f in fr if "payload" in f)
print(pay, "raw" in fr[-1], fr[-1]["frame"])
PY
  assert_success
  # 22 frames; the frame of an unknown kind keeps its raw bytes
  assert_output $'22 22 1253376\n100 sample\n1253376 True {\'pid\': 100}'
}

@test "encode builds a stream from hand-written JSON" {
  page=$(head -c 4096 /dev/zero | tr '\0' 'A' | base64 -w0)
  cat > "$T/h.json" <<EOF2
{"frames": [
 {"frame": {"header": {"major": 1, "page_size": 4096, "root_pid": 7, "writers": ["by hand"]}}},
 {"frame": {"pid": 7, "process": {"pid": 7, "comm": "hand"}}},
 {"frame": {"pid": 7, "pages": {"pid": 7, "addr": "0x1000", "npages": 1, "has_payload": true}},
  "payload": "$page"},
 {"frame": {"pid": 7, "pages": {"pid": 7, "addr": 8192, "npages": 2}}}
]}
EOF2
  # protobuf JSON wants decimal for uint64 strings
  sed -i 's/"0x1000"/"4096"/' "$T/h.json"
  ck-crit encode < "$T/h.json" > "$T/h.ck"
  run ck-crit info < "$T/h.ck"
  assert_success
  assert_line "writers:       by hand"
  assert_line "frames:        4"
  assert_line "payload bytes: 4096"
  # 'A' * 4096 then 8192 zero bytes
  want=$(python3 -c '
h = 0xcbf29ce484222325
for b in b"A" * 4096 + bytes(8192):
    h = ((h ^ b) * 0x100000001b3) & 0xffffffffffffffff
print(hex(h))')
  run ck-crit sum --pid 7 --addr 0x1000 --len 12288 < "$T/h.ck"
  assert_output "$want"
}

@test "encode refuses bad JSON with status 3" {
  h='{"frame": {"header": {"major": 1, "page_size": 4096}}}'
  for doc in \
      '' \
      '{"frames": []}' \
      '{"frames": [{"frame": {"pid": 1}}]}' \
      "{\"frames\": [$h, {\"frame\": {\"pages\": {\"addr\": \"4096\", \"npages\": 1, \"has_payload\": true}}}]}" \
      "{\"frames\": [$h, {\"frame\": {\"pages\": {\"addr\": \"4096\", \"npages\": 1, \"has_payload\": true}}, \"payload\": \"QUFB\"}]}" \
      "{\"frames\": [$h, {\"frame\": {\"note\": {}}, \"payload\": \"QUFB\"}]}" \
      "{\"frames\": [$h, {\"frame\": {\"note\": {}}, \"raw\": \"not base64!\"}]}" \
      "{\"frames\": [$h, {\"frame\": {\"no_such_field\": 1}}]}" \
      "{\"frames\": [$h, {\"frame\": {\"trailer\": {}}}]}" \
      "{\"frames\": [$h]} trailing" \
      "{\"frames\": [$h" ; do
    run sh -c 'printf %s "$1" | ck-crit encode > /dev/null' _ "$doc"
    echo "# $doc: $status $output"
    [ "$status" -eq 3 ]
    [[ "$output" == "ck-crit: "* ]]
  done
}

@test "show lists processes, threads, fds, VMAs and page counts" {
  "$MK" "$T/s.ck" 2>/dev/null
  run ck-crit show < "$T/s.ck"
  assert_success
  assert_line --partial "stream 1.4 by mkstream 0.1"
  assert_line "process 100 (sample) ppid 1 pgid 0 sid 0, 2 threads"
  assert_line "  thread 101 worker"
  assert_line "  fd 2 -> PIPE pipe:[4242] flags 0 cloexec"
  assert_line --regexp '^  vma 000000400000-000000410000 r-xp FILE_PRIVATE +/usr/bin/sample$'
  assert_line "  pages: 4 runs, 6 with data (24576 bytes), 1 zero"
  assert_line "process 102 (child) ppid 100 pgid 0 sid 0, 1 threads"
  assert_line "  pages: 2 runs, 300 with data (1228800 bytes), 4 zero"
  assert_line "1 frames of kinds this ck does not know (kept as they are)"
  assert_line --partial "trailer: 22 frames, 1253376 payload bytes"
}

@test "info shows header and trailer facts, from a stream and an image" {
  "$MK" "$T/s.ck" 2>/dev/null
  run ck-crit info < "$T/s.ck"
  assert_success
  assert_line "format:        1.4"
  assert_line "hostname:      testhost"
  assert_line "root pid:      100"
  assert_line "frames:        22"
  assert_line --regexp '^checksum:      0x[0-9a-f]{16} ok$'
  ck-store put -D "$T/img" < "$T/s.ck"
  run ck-crit info -D "$T/img"
  assert_success
  assert_line "frames:        22"
  # a changed page in the image is found by info -D, in the run it belongs to
  flip "$T/img/pages.img" 100 > "$T/p" && cat "$T/p" > "$T/img/pages.img"
  run ck-crit info -D "$T/img"
  assert_failure 3
  assert_output --partial "page data of pid 100 at 0x400000 (2 pages) does not match its digest"
}

@test "sum matches the memory the stream describes" {
  "$MK" "$T/s.ck" 2> "$T/facts"
  ck-store put -D "$T/img" < "$T/s.ck"
  n=0
  while read -r _ pid addr len want; do
    run ck-crit sum --pid "$pid" --addr "$addr" --len "$len" < "$T/s.ck"
    assert_output "$want"
    run ck-crit sum -D "$T/img" --pid "$pid" --addr "$addr" --len "$len"
    assert_output "$want"
    n=$((n + 1))
  done < "$T/facts"
  [ "$n" -eq 6 ]
  run ck-crit sum --pid 4242 --addr 0 --len 1 < "$T/s.ck"
  assert_failure 1
  assert_output --partial "pid 4242 is not in the image"
  run ck-crit sum --pid 100 --addr zz --len 1 < "$T/s.ck"
  assert_failure 2
}

@test "decode and info on bad streams: status 3 and a message" {
  "$MK" "$T/s.ck" 2>/dev/null
  bad_streams
  for f in "$T"/bad/*.ck; do
    for cmd in decode info show; do
      run sh -c 'ck-crit "$1" < "$2" > /dev/null' _ "$cmd" "$f"
      echo "# $cmd $f: $status $output"
      [ "$status" -eq 3 ]
      [[ "$output" == "ck-crit: stdin: "* ]]
    done
  done
  run ck-crit info < "$T/bad/flip-payload.ck"
  assert_output --partial "page data of pid 102 at 0x504000 (300 pages) does not match its digest (stream corrupted)"
  run ck-crit info < "$T/bad/flip-frame.ck"
  assert_output --partial "checksum mismatch (stream corrupted)"
  run ck-crit info < "$T/bad/newer.ck"
  assert_output --partial "version 2.0 is newer than this ck reads (1.4)"
  run ck-crit decode < "$T/bad/huge-frame.ck"
  assert_output --partial "over the 16777216 limit"
}

@test "a 1.0 stream (payloads in the checksum, no digests) is still read, decoded and encoded" {
  "$MK" --minor 0 "$T/s.ck" 2>/dev/null
  run ck-crit info < "$T/s.ck"
  assert_success
  assert_line "format:        1.0"
  ck-crit decode < "$T/s.ck" > "$T/s.json"
  ! grep -q '"digest"' "$T/s.json"
  ck-crit encode < "$T/s.json" | cmp - "$T/s.ck"
  ck-store put -D "$T/img" < "$T/s.ck"
  ck-crit decode -D "$T/img" | cmp - "$T/s.json"
  size=$(stat -c %s "$T/s.ck")
  flip "$T/s.ck" $((size / 2)) > "$T/bad.ck"
  run ck-crit info < "$T/bad.ck"
  assert_failure 3
  assert_output --partial "checksum mismatch (stream corrupted)"
}

@test "encode fills in the digest a 1.1 page run lacks, and keeps a wrong one" {
  "$MK" "$T/s.ck" 2>/dev/null
  ck-crit decode < "$T/s.ck" > "$T/s.json"
  grep -q '"digest"' "$T/s.json"
  # an edited document without digests gets them back, the same bytes
  sed 's/,"digest":"[0-9]*"//' "$T/s.json" > "$T/nod.json"
  ! grep -q '"digest"' "$T/nod.json"
  ck-crit encode < "$T/nod.json" | cmp - "$T/s.ck"
  # a payload changed under its digest: encode keeps the digest, readers refuse
  python3 - "$T/s.json" <<'PY'
import base64, json, sys
d = json.load(open(sys.argv[1]))
for fr in d["frames"]:
    if "payload" in fr:
        p = bytearray(base64.b64decode(fr["payload"])); p[7] ^= 1
        fr["payload"] = base64.b64encode(bytes(p)).decode()
        break
json.dump(d, open(sys.argv[1], "w"))
PY
  ck-crit encode < "$T/s.json" > "$T/bad.ck"
  run ck-crit info < "$T/bad.ck"
  assert_failure 3
  assert_output --partial "page data of pid 100 at 0x400000 (2 pages) does not match its digest"
}

# ---- x, mem, args, env on real dumps ------------------------------------------

# xorshift64* as tests/workloads/wl.h: the first N words of counter's data.
counter_words() {
  python3 - "$1" "$2" <<'PY'
import sys
s = 0x1234567 ^ int(sys.argv[1]); m = (1 << 64) - 1
out = b""
for _ in range(int(sys.argv[2])):
    s ^= s >> 12; s = (s ^ (s << 25)) & m; s ^= s >> 27
    out += ((s * 0x2545F4914F6CDD1D) & m).to_bytes(8, "little")
sys.stdout.buffer.write(out)
PY
}

@test "x ps against the live tree, x mems against /proc/PID/maps, from an image and a stream" {
  start_wl shmtree
  local p
  for p in $(tree_pids "$WPID"); do
    echo "$p $(awk '{print $4, $5, $6}' /proc/"$p"/stat) $(cat /proc/"$p"/comm)"
  done | sort > "$T/ps.live"
  for p in $(tree_pids "$WPID"); do awk -v p="$p" '{print p, $1, $2}' /proc/"$p"/maps; done | sort > "$T/maps.live"
  run ck-dump -t "$WPID" -D "$T/img" --leave-running
  assert_success
  ck-crit x "$T/img" ps --json | python3 -c '
import json, sys
for p in json.load(sys.stdin): print(p["pid"], p["ppid"], p["pgid"], p["sid"], p["comm"])' | sort > "$T/ps.img"
  diff -u "$T/ps.live" "$T/ps.img"
  ck-crit x "$T/img" mems --json | python3 -c '
import json, sys
for p in json.load(sys.stdin):
    for v in p["vmas"]:
        print(p["pid"], "%x-%x" % (int(v["start"], 16), int(v["end"], 16)), v["prot"])' | sort > "$T/maps.img"
  diff -u "$T/maps.live" "$T/maps.img"
  # text: a tree, children indented under their parent
  run ck-crit x -D "$T/img" ps
  assert_success
  assert_line --index 0 --regexp '^PID +PPID +PGID +SID +THR +STATE +COMM$'
  [ "${#lines[@]}" -eq 4 ]
  assert_line --index 3 --regexp "^[0-9]+ .* running      shmtree$"
  # the same from a stream on stdin
  ck-store get -D "$T/img" | ck-crit x ps --json | python3 -c '
import json, sys
for p in json.load(sys.stdin): print(p["pid"], p["ppid"], p["pgid"], p["sid"], p["comm"])' | sort | diff -u "$T/ps.live" -
  # each process's private region is held whole; the shared one once, seen from all three
  while read -r _ role pid shared shared_len _ priv priv_len _; do
    pid=${pid#pid=} shared=${shared#shared=} priv=${priv#priv=} priv_len=${priv_len#priv_len=}
    ck-crit x "$T/img" mems --json -p "$pid" > "$T/m.json"
    run python3 - "$T/m.json" "$priv" "$priv_len" "$shared" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert len(d) == 1
v = {int(x["start"], 16): x for x in d[0]["vmas"]}
priv = v[int(sys.argv[2], 16)]
sh = v[int(sys.argv[4], 16)]
print(priv["kind"], priv["data_pages"] == int(sys.argv[3]) // 4096, sh["kind"], sh["data_pages"] > 0)
PY
    assert_output "ANON True SHARED_ANON True"
  done < <(grep '^INFO role=' "$T/shmtree.out")
}

@test "x fds against /proc/PID/fd and fdinfo: targets, offsets, pipe peers" {
  mkdir "$T/scratch"  # its files there, not in a /tmp directory left behind
  start_wl files "$T/scratch"
  local fd
  for fd in /proc/"$WPID"/fd/*; do
    echo "${fd##*/} $(awk '/^pos:/ {print $2}' /proc/"$WPID"/fdinfo/"${fd##*/}") $(readlink "$fd")"
  done | sort -n > "$T/fds.live"
  run ck-dump -t "$WPID" -D "$T/img" --leave-running
  assert_success
  ck-crit x "$T/img" fds --json > "$T/fds.json"
  python3 - "$T/fds.json" > "$T/fds.img" <<'PY'
import json, sys
for fd in json.load(open(sys.argv[1]))[0]["fds"]:
    path = fd["path"]
    if fd["kind"] == "MEMFD": path = "/memfd:" + path
    if fd.get("deleted") and fd["kind"] != "DIR": path += " (deleted)"
    print(fd["fd"], fd["pos"], path)
PY
  sort -n "$T/fds.img" | diff -u "$T/fds.live" -
  # a pipe names its other end; epoll its targets; eventfd its count
  run ck-crit x "$T/img" fds
  assert_success
  assert_line --regexp '^  21: PIPE pipe:\[[0-9]+\], read end, 3000 bytes queued, other end: pid [0-9]+ fd 22$'
  assert_line --regexp '^  24: EPOLL anon_inode:\[eventpoll\], .*fd 21 events 0x19 data 0x1111'
  assert_line --regexp '^  24: EPOLL anon_inode:\[eventpoll\], .*fd 23 events 0x19 data 0x2222'
  assert_line --partial "23: EVENTFD anon_inode:[eventfd], count 42"
  assert_line --regexp '^  33: FIFO .*/fifo, read end, 100 bytes queued, other end: pid [0-9]+ fd 34$'
}

@test "args and env are read from the dumped memory and equal /proc/PID/cmdline and environ" {
  only_std setsid env -i CK_A=one "CK_B=two words" PATH=/usr/bin "$WL/counter" 8 > "$T/counter.out" 2>&1 < /dev/null &
  WPID=$!; PIDS+=("$WPID")
  wait_line "$T/counter.out" '^READY' 20
  cat /proc/"$WPID"/cmdline > "$T/cmdline"
  cat /proc/"$WPID"/environ > "$T/environ"
  run ck-dump -t "$WPID" -D "$T/img"
  assert_success
  ck-crit args -0 "$T/img" | cmp - "$T/cmdline"
  ck-crit env --null -D "$T/img" -p "$WPID" | cmp - "$T/environ"
  run ck-crit args "$T/img"
  assert_output "$WL/counter"$'\n'8
  run ck-crit env "$T/img"
  assert_output $'CK_A=one\nCK_B=two words\nPATH=/usr/bin'
  # the same from a stream
  ck-store get -D "$T/img" | ck-crit args -0 | cmp - "$T/cmdline"
}

@test "mem shows the pattern the workload wrote at the address it reported; --raw gives its bytes" {
  start_wl counter 8
  local addr len fnv
  addr=$(info data "$T/counter.out"); len=$(info len "$T/counter.out"); fnv=$(info fnv "$T/counter.out")
  run ck-dump -t "$WPID" -D "$T/img"
  assert_success
  counter_words "$WPID" 4 > "$T/want"
  ck-crit mem "$T/img" -p "$WPID" "$addr" 32 --raw | cmp - "$T/want"
  run ck-crit mem -D "$T/img" -p "$WPID" "$addr" 32
  assert_success
  [ "${#lines[@]}" -eq 2 ]
  want=$(od -An -tx1 -v "$T/want" | tr -s ' \n' ' ' | sed 's/^ //; s/ $//')
  got=$(printf '%s\n' "${lines[@]}" | cut -c15-63 | tr -s ' \n' ' ' | sed 's/^ //; s/ $//')
  [ "$got" = "$want" ]
  [[ "${lines[0]}" == "$(printf '%012x' "$addr")  "* ]]
  # the whole region, raw, hashes to what the workload computed
  ck-crit mem "$T/img" -p "$WPID" "$addr" "$len" --raw > "$T/raw"
  [ "$(stat -c %s "$T/raw")" -eq "$len" ]
  run ck-crit sum -D "$T/img" --pid "$WPID" --addr "$addr" --len "$len"
  assert_output "$fnv"
  # from a stream, pid defaults to the root
  ck-store get -D "$T/img" | ck-crit mem "$addr" 32 --raw | cmp - "$T/want"
  # a range no run covers says so
  run ck-crit mem "$T/img" 0x1000 16
  assert_success
  assert_output --partial "16 bytes not in the image"
}

@test "x mems names the round of a pre-dump chain each page comes from" {
  export CK_TRACK_DIR="$T/state"
  start_wl writer -m 4 -r 200
  local addr pages
  addr=$(info addr "$T/writer.out"); pages=$(info pages "$T/writer.out")
  ck-memread --track -t "$WPID" | ck-store put -D "$T/1" > "$T/id.1"
  sleep 0.3
  ck-memread --dirty --since "$(cat "$T/id.1")" -t "$WPID" | ck-store put -D "$T/2" --parent "$T/1" > /dev/null
  ck-crit x "$T/2" mems --json -p "$WPID" > "$T/m.json"
  run python3 - "$T/m.json" "$addr" "$pages" <<'PY'
import json, sys
a = int(sys.argv[2], 16)
v = [x for x in json.load(open(sys.argv[1]))[0]["vmas"] if int(x["start"], 16) <= a < int(x["end"], 16)][0]
r = v["rounds"]
print(sorted(r), sum(r.values()) == v["data_pages"] + v["zero_pages"] >= int(sys.argv[3]), 0 < r["2"] < int(sys.argv[3]))
PY
  assert_output "['1', '2'] True True"
  run ck-crit x "$T/2" mems -p "$WPID"
  assert_line --regexp "^  [0-9a-f]+-[0-9a-f]+ rw-p ANON .*held: [0-9]+ data, [0-9]+ zero \(round 1 [0-9]+, round 2 [0-9]+\) *$"
}

@test "x, mem, args, env: bad input exits 3, unknown views and bad numbers 2, missing pids 1" {
  "$MK" "$T/s.ck" 2>/dev/null
  head -c 5000 /dev/urandom > "$T/garbage.ck"
  head -c 3000 "$T/s.ck" > "$T/cut.ck"
  for f in "$T/garbage.ck" "$T/cut.ck"; do
    for cmd in "x ps" "x fds" "x mems" "x rss" "x sk" "x cg" "mem 0x400000 16" "args" "env"; do
      run sh -c 'ck-crit $1 < "$2" > /dev/null' _ "$cmd" "$f"
      echo "# $cmd $f: $status $output"
      [ "$status" -eq 3 ]
      [[ "$output" == "ck-crit: stdin: "* ]]
    done
  done
  mkdir "$T/notimg"
  run ck-crit x "$T/notimg" ps
  assert_failure 3
  run ck-crit x "$T/notimg" ps fds
  assert_failure 2
  run ck-crit x nosuch < "$T/s.ck"
  assert_failure 2
  assert_output --partial "unknown view 'nosuch'"
  run ck-crit mem 0xzz < "$T/s.ck"
  assert_failure 2
  run ck-crit x ps -p 4242 < "$T/s.ck"
  assert_failure 1
  assert_output --partial "pid 4242 is not in the image"
  run ck-crit args -p 4242 < "$T/s.ck"
  assert_failure 1
  run ck-crit mem -p 100 0x400000 $((1 << 30)) < "$T/s.ck"
  assert_failure 1
  assert_output --partial "more than ck-crit reads at once"
}

# ---- diff ---------------------------------------------------------------------

@test "diff: two dumps of an idle process are equal (default ignores); a changed page is named by its range" {
  start_wl sleeper read
  run ck-dump -t "$WPID" -D "$T/a" --leave-running
  assert_success
  sleep 0.2
  run ck-dump -t "$WPID" -D "$T/b" --leave-running
  assert_success
  run ck-crit diff "$T/a" "$T/b"
  echo "$output"
  assert_success
  assert_output ""
  # a stream against an image
  ck-store get -D "$T/a" | ck-crit diff - "$T/b"
  # without the default ignores, what they leave out shows (the time of the dump)
  run ck-crit diff --no-default-ignores "$T/a" "$T/b"
  assert_failure 1
  assert_line --regexp '^header: created_ns: '
  run ck-crit diff --list-ignores
  assert_success
  assert_line --regexp '^rseq +'
  assert_line --regexp '^PosixTimer.value_ns +'
  kill -9 "$WPID"
  # a workload that writes pages: the ranges are in its buffer
  start_wl writer -m 4 -r 100
  local addr pages
  addr=$(info addr "$T/writer.out"); pages=$(info pages "$T/writer.out")
  run ck-dump -t "$WPID" -D "$T/c" --leave-running
  assert_success
  sleep 0.3
  run ck-dump -t "$WPID" -D "$T/d" --leave-running
  assert_success
  run ck-crit diff "$T/c" "$T/d"
  echo "$output"
  assert_failure 1
  run python3 - "$output" "$addr" "$pages" <<'PY'
import re, sys
lo = int(sys.argv[2], 16); hi = lo + int(sys.argv[3]) * 4096
n = 0
for l in sys.argv[1].splitlines():
    m = re.match(r"process \d+ memory (0x[0-9a-f]+)-(0x[0-9a-f]+) \((\d+) pages\): contents differ$", l)
    if m and lo <= int(m.group(1), 16) < int(m.group(2), 16) <= hi:
        n += int(m.group(3))
print(n > 0)
PY
  assert_output True
}

@test "diff finds a single changed byte in 1 GiB of pages" {
  # 1 GiB, every page populated, one in 64 holding data (the rest zero runs)
  start_wl zeros 1024
  local addr at page
  addr=$(info data "$T/zeros.out")
  run ck-dump -t "$WPID" -D "$T/a" --leave-running
  assert_success
  # one byte of data page 64000 (256 MiB in), changed behind the workload's back
  at=$((addr + 64000 * 4096 + 1234))
  python3 - "$WPID" "$at" <<'PY'
import sys
with open("/proc/%s/mem" % sys.argv[1], "r+b", buffering=0) as m:
    m.seek(int(sys.argv[2])); b = m.read(1)[0]
    m.seek(int(sys.argv[2])); m.write(bytes([b ^ 0x20]))
PY
  run ck-dump -t "$WPID" -D "$T/b" --leave-running
  assert_success
  run ck-crit diff "$T/a" "$T/b"
  echo "$output"
  assert_failure 1
  page=$((at / 4096 * 4096))
  assert_line "process $WPID memory $(printf '%#x-%#x' "$page" $((page + 4096))) (1 pages): contents differ"
  # and nothing else of the data region (the workload's own stack page moves on)
  run python3 - "$output" "$addr" <<'PY'
import re, sys
lo = int(sys.argv[2], 16); hi = lo + (1 << 30)
print(sum(1 for l in sys.argv[1].splitlines()
          for m in [re.match(r"process \d+ memory (0x[0-9a-f]+)-", l)] if m and lo <= int(m.group(1), 16) < hi))
PY
  assert_output 1
}

@test "diff names a changed signal mask and a moved fd, also with the ignores of a redump" {
  only_std setsid python3 -c '
import os, signal, sys, time
def moved(*a):
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR2])
    os.dup2(5, 9); os.close(5)
    print("MOVED", flush=True)
signal.signal(signal.SIGUSR1, moved)
os.dup2(os.open("/dev/null", os.O_RDONLY), 5)
print("READY", os.getpid(), flush=True)
while True: time.sleep(100)' > "$T/py.out" 2>&1 < /dev/null &
  WPID=$!; PIDS+=("$WPID")
  wait_line "$T/py.out" '^READY'
  run ck-dump -t "$WPID" -D "$T/a" --leave-running
  assert_success
  run ck-dump -t "$WPID" -D "$T/a2" --leave-running
  assert_success
  kill -USR1 "$WPID"
  wait_line "$T/py.out" '^MOVED'
  run ck-dump -t "$WPID" -D "$T/b" --leave-running
  assert_success
  run redump_diff "$T/a" "$T/a2"
  echo "$output"
  assert_success
  run ck-crit diff "$T/a" "$T/b" --ignore pages --ignore registers
  echo "$output"
  assert_failure 1
  assert_line "thread $WPID: blocked: 0 -> 2048 (0x800)"
  assert_line "process $WPID fd 5: only in A"
  assert_line "process $WPID fd 9: only in B"
  run redump_diff "$T/a" "$T/b"
  assert_failure 1
  assert_line "thread $WPID: blocked: 0 -> 2048 (0x800)"
  assert_line "process $WPID fd 9: only in B"
}

@test "diff: exit 3 on bad input, 2 on usage errors and trouble, never 1" {
  "$MK" "$T/s.ck" 2>/dev/null
  ck-store put -D "$T/img" < "$T/s.ck"
  head -c 3000 "$T/s.ck" > "$T/cut.ck"
  run ck-crit diff "$T/img" - < "$T/cut.ck"
  assert_failure 3
  assert_output --partial "ck-crit: stdin: bad stream"
  mkdir "$T/empty"
  run ck-crit diff "$T/img" "$T/empty"
  assert_failure 3
  run ck-crit diff "$T/img" "$T/nosuch"
  [ "$status" -eq 3 ] || [ "$status" -eq 2 ]
  run ck-crit diff "$T/img"
  assert_failure 2
  run ck-crit diff - -
  assert_failure 2
  run ck-crit diff "$T/img" "$T/img" --ignore nosuchfield
  assert_failure 2
  run ck-crit diff "$T/img" "$T/img" --ignore Thread.nosuch
  assert_failure 2
  run ck-crit diff "$T/img" - < "$T/s.ck"
  assert_success
  # a changed page or frame in an image: status 3, not "different"
  cp -r "$T/img" "$T/img2"
  flip "$T/img/pages.img" 5000 > "$T/img2/pages.img"
  run ck-crit diff "$T/img" "$T/img2"
  assert_failure 3
  assert_output --partial "does not match its digest"
  cp "$T/img/pages.img" "$T/img2/pages.img"
  flip "$T/img/frames.img" 40 > "$T/img2/frames.img"
  run ck-crit diff "$T/img2" "$T/img"
  assert_failure 3
}

@test "show --json: hex addresses and flags, registers by name, argv as strings, no payloads; --pid and --kind filter" {
  "$MK" "$T/s.ck" 2>/dev/null
  run ck-crit show --json --kind thread,process -p 100 < "$T/s.ck"
  assert_success
  run python3 -c '
import json, sys
d = json.loads(sys.argv[1])
print(sorted({(f["kind"], f["pid"]) for f in d["frames"]}))
t = [f["thread"] for f in d["frames"] if f["kind"] == "thread"][0]
p = [f["process"] for f in d["frames"] if f["kind"] == "process"][0]
print(t["gpregs"]["rip"], p["cmdline"], d["trailer"]["frames"])' "$output"
  assert_output $'[(\'process\', 100), (\'thread\', 100)]\n0x1111111111111111 [\'sample\', \'--x\'] 22'
  run ck-crit show --json --kind nosuch < "$T/s.ck"
  assert_failure 2
  run ck-crit show --kind mm < "$T/s.ck"
  assert_failure 2
  # the text form keeps the sections of the pids asked for
  run ck-crit show -p 102 < "$T/s.ck"
  assert_success
  assert_line "process 102 (child) ppid 100 pgid 0 sid 0, 1 threads"
  refute_line --partial "process 100 ("
  # on a real dump: VMAs as x mems has them, page runs without payloads
  start_wl counter 8
  run ck-dump -t "$WPID" -D "$T/img"
  assert_success
  ck-crit show --json "$T/img" --kind mm,pages > "$T/j"
  ck-crit x "$T/img" mems --json > "$T/m"
  run python3 - "$T/j" "$T/m" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); m = json.load(open(sys.argv[2]))
mm = [f["mm"] for f in d["frames"] if f["kind"] == "mm"][0]
a = [(v["start"], v["end"], v.get("flags")) for v in mm["vmas"]]
b = [(v["start"], v["end"], v["flags"]) for v in m[0]["vmas"]]
pages = [f["pages"] for f in d["frames"] if f["kind"] == "pages"]
print(a == b, all(p["addr"].startswith("0x") for p in pages), all("payload" not in f for f in d["frames"]))
PY
  assert_output "True True True"
}

@test "x sk names each socket's holder and its peer's fd; x cg the cgroup the task was in" {
  mkdir "$T/u"
  start_wl unixsocks "$T/u"
  local ino3 ino4
  ino3=$(readlink /proc/"$WPID"/fd/3 | tr -dc 0-9); ino4=$(readlink /proc/"$WPID"/fd/4 | tr -dc 0-9)
  run ck-dump -t "$WPID" -D "$T/img" --leave-running
  assert_success
  run ck-crit x "$T/img" sk
  assert_success
  assert_line --regexp "^socket [0-9]+ \(pid $WPID fd 3\): unix stream connected to socket:\[$ino4\].*, peer socket [0-9]+ \(pid $WPID fd 4\)$"
  assert_line --regexp "^socket [0-9]+ \(pid $WPID fd 9\): unix listening '$T/u/l.sock' backlog 7, 1 waiting"
  run ck-crit x "$T/img" fds -p "$WPID"
  assert_line --regexp "^  3: SOCKET socket:\[$ino3\], unix stream .*peer: pid $WPID fd 4$"
  ck-crit x "$T/img" cg --json > "$T/cg.json"
  run python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
print(any(int(sys.argv[2]) in c["procs"] for c in d["cgroups"]))' "$T/cg.json" "$WPID"
  assert_output True
}
