#!/usr/bin/env bats
# Issue 16: ck-anon (an anonymized stream) and ck-report.
load helpers

# canaries: starts tests/programs/anon_canaries.py (a canary string in every
# place ck-anon must clean), dumps it --leave-running into $T/s.ck.
canaries() {
  mkdir -p "$T/w"
  only_std setsid env envnameCANARY=envvalCANARY python3 "$CK_TOP/tests/programs/anon_canaries.py" "$T/w" \
    argvCANARYarg < /dev/null > "$T/c.out" 2>&1 &
  WPID=$!
  PIDS+=("$WPID")
  wait_line "$T/c.out" '^READY' 20
  ck-freeze -t "$WPID" --leave-running --timeout 90 -- sh -c "ck-memread | ck-sockdump | ck-cgdump > '$T/s.ck'"
}

# leaks FILE...: every canary (and any 16-byte run of the random region)
# found in FILE, plain, hex, base64 (each alignment) or UTF-16; nothing
# printed when there is none.
leaks() {
  python3 - "$T/w/cwdCANARYdir/rnd.bin" "$@" <<'PY'
import base64, binascii, sys
words = [b"memCANARYheap", b"argvCANARYarg", b"envnameCANARY", b"envvalCANARY", b"cwdCANARYdir",
         b"fileCANARYname", b"delCANARYdata", b"memfdCANARYname", b"memfdCANARYdata", b"pipeCANARYdata",
         b"unixCANARYsock", b"unixqCANARYdata", b"tcpqCANARYdata", b"tcpbackCANARYdata", b"corkCANARYdata",
         b"thrCANARY", b"127.83.91.17", b"127.83.91.18", bytes([127, 83, 91, 17]), bytes([127, 83, 91, 18])]
def forms(w):
    yield w
    yield binascii.hexlify(w)
    yield w.decode("latin1").encode("utf-16-le")
    for k in range(3):  # base64 of w at each offset in a longer string, without its edge characters
        b = base64.b64encode(b"\0" * k + w)[4:-4]
        if len(b) >= 8:
            yield b
rnd = open(sys.argv[1], "rb").read()
for f in sys.argv[2:]:
    data = open(f, "rb").read()
    for w in words:
        for x in forms(w):
            if x in data:
                print(f, "holds", w, "as", x[:40])
    for i in range(0, len(rnd) - 16, 512):
        if rnd[i:i + 16] in data:
            print(f, "holds random memory at", i)
            break
PY
}

# shape FILE: what ck-crit show says of the tree's shape, without names.
shape() {
  ck-crit show < "$1" | awk '
    /^process / { p++ } /^  thread / { t++ } /^  fd / { f++ } /^  vma / { v++ }
    /^  pages: / { r += $2 }
    END { printf "%d processes, %d threads, %d fds, %d vmas, %d page runs\n", p, t, f, v, r }'
}

@test "ck-anon: no canary leaks (raw, JSON, hex, base64, UTF-16), and the input held every one" {
  canaries
  # the test can fail: every canary is in the input
  run leaks "$T/s.ck"
  for w in memCANARYheap argvCANARYarg envnameCANARY envvalCANARY cwdCANARYdir fileCANARYname delCANARYdata \
           memfdCANARYname memfdCANARYdata pipeCANARYdata unixCANARYsock unixqCANARYdata tcpqCANARYdata \
           tcpbackCANARYdata corkCANARYdata thrCANARY 127.83.91.17 "random memory"; do
    assert_output --partial "$w"
  done
  ck-anon < "$T/s.ck" > "$T/a.ck"
  [ "$(grep -a -c CANARY "$T/a.ck")" = 0 ]
  ck-crit decode < "$T/a.ck" > "$T/a.json"
  ck-crit show < "$T/a.ck" > "$T/a.txt"
  zstd -q -c "$T/a.ck" > "$T/a.ck.zst"
  zstd -q -d -c "$T/a.ck.zst" > "$T/a.unz"
  run leaks "$T/a.ck" "$T/a.json" "$T/a.txt" "$T/a.unz"
  assert_success
  assert_output ""
  # the process runs on, untouched
  kill -0 "$WPID"
}

@test "ck-anon keeps the shape: tasks, threads, fds, VMAs, page runs; addresses keep their prefixes" {
  canaries
  ck-anon < "$T/s.ck" > "$T/a.ck"
  [ "$(shape "$T/s.ck")" = "$(shape "$T/a.ck")" ]
  shape "$T/a.ck" | grep -Eq '^1 processes, 2 threads, [0-9]+ fds, [1-9][0-9]* vmas, [1-9][0-9]* page runs$'
  run ck-crit show < "$T/a.ck"
  assert_output --partial "anonymized by ck-anon"
  assert_output --partial "dropped by ck-anon"
  refute_output --partial " with data (4096"
  # two paths in one directory still share it; a socket name maps as the same path
  dir=$(ck-crit show < "$T/a.ck" | awk '/unix listening/ { print $3 }' | tr -d "'")
  [ -n "$dir" ]
  ck-crit show < "$T/a.ck" | grep -q "unix stream '$dir' (deleted)"
  # 127.83.91.17 and .18 share 30 bits, their images too, and no more
  python3 - "$T/a.ck" <<'PY'
import ipaddress, re, subprocess, sys
out = subprocess.run(["ck-crit", "show"], stdin=open(sys.argv[1], "rb"), capture_output=True, text=True).stdout
ends = re.findall(r"TCP/IPv4 ([0-9.]+):\d+ -> ([0-9.]+):\d+ ESTABLISHED", out)
assert ends, out
a, b = (int(ipaddress.IPv4Address(x)) for x in ends[0])
assert a != b and (a ^ b) >> 2 == 0 and (a ^ b) >> 1 != 0, ends
PY
}

@test "ck-anon: the same --key gives the same bytes, another key or none another output; --map-out reads it back" {
  canaries
  head -c 32 /dev/urandom > "$T/k1"
  head -c 32 /dev/urandom > "$T/k2"
  ck-anon --key "$T/k1" < "$T/s.ck" > "$T/a1.ck"
  ck-anon --key "$T/k1" --map-out "$T/map" < "$T/s.ck" > "$T/a1b.ck"
  cmp "$T/a1.ck" "$T/a1b.ck"
  # an image set read in place gives the same bytes
  ck-store put -D "$T/img" < "$T/s.ck"
  ck-anon --key "$T/k1" -D "$T/img" > "$T/a1d.ck"
  cmp "$T/a1.ck" "$T/a1d.ck"
  ck-anon --key "$T/k2" < "$T/s.ck" > "$T/a2.ck"
  ! cmp -s "$T/a1.ck" "$T/a2.ck"
  ck-anon < "$T/s.ck" > "$T/r1.ck"
  ck-anon < "$T/s.ck" > "$T/r2.ck"
  ! cmp -s "$T/r1.ck" "$T/r2.ck"
  # the key is in no output
  ! grep -q -F -f <(xxd -p -c 8 "$T/k1") <(xxd -p -c 1000000 "$T/a1.ck" | tr -d '\n')
  # the map names the original of the replaced cwd component
  repl=$(awk -F '\t' '$1 == "word" && $3 == "cwdCANARYdir" { print $2 }' "$T/map")
  [ -n "$repl" ]
  grep -a -q "$repl" "$T/a1.ck"
  [ "$(stat -c %a "$T/map")" = 600 ]
  # with --ports the ports change, without they stay
  ck-anon --key "$T/k1" --ports < "$T/s.ck" | ck-crit show > "$T/p.txt"
  port=$(ck-crit show < "$T/s.ck" | awk '/TCP.* LISTEN/ { sub(/.*:/, "", $2); print $2 }')
  ck-crit show < "$T/a1.ck" | grep -q ":$port LISTEN"
  ! grep -q ":$port LISTEN" "$T/p.txt"
}

@test "ck-anon --env values keeps environment names, the default replaces them" {
  canaries
  ck-anon --env values < "$T/s.ck" > "$T/v.ck"
  [ "$(grep -a -c envnameCANARY "$T/v.ck")" -ge 1 ]
  [ "$(grep -a -c envvalCANARY "$T/v.ck")" = 0 ]
  ck-anon < "$T/s.ck" > "$T/a.ck"
  [ "$(grep -a -c envnameCANARY "$T/a.ck")" = 0 ]
  grep -a -q 'PATH=' "$T/a.ck"
}

@test "ck-restore refuses an anonymized stream and image by name (status 3); ck-store keeps it" {
  canaries
  ck-anon < "$T/s.ck" > "$T/a.ck"
  run ck-restore < "$T/a.ck"
  assert_failure 3
  assert_output --partial "anonymized"
  # ck-crit decodes the dropped runs and encodes them back byte for byte
  [ "$(ck-crit decode < "$T/a.ck" | grep -o '"dropped":true' | wc -l)" -gt 0 ]
  ck-crit decode < "$T/a.ck" | ck-crit encode | cmp - "$T/a.ck"
  ck-store put -D "$T/img" < "$T/a.ck"
  ck-store get -D "$T/img" | cmp - "$T/a.ck"
  run ck-restore -D "$T/img"
  assert_failure 3
  assert_output --partial "unable to restore an anonymized stream"
  run ck-crit info -D "$T/img"
  assert_success
  assert_output --partial "anonymized:    by ck-anon"
  kill -0 "$WPID"
}

@test "ck-anon: bad input exits 3 and -o leaves no file; a usage error exits 2" {
  canaries
  size=$(stat -c %s "$T/s.ck")
  for cut in 5 100 $((size / 2)) $((size - 3)); do
    run sh -c "head -c $cut '$T/s.ck' | ck-anon -o '$T/out.ck'"
    assert_failure 3
    [ ! -e "$T/out.ck" ] && [ ! -e "$T/out.ck.ck-anon-tmp" ]
  done
  python3 -c 'import sys; d = bytearray(open(sys.argv[1], "rb").read()); d[len(d) // 2] ^= 0x40; open(sys.argv[2], "wb").write(d)' \
    "$T/s.ck" "$T/flip.ck"
  run ck-anon -o "$T/out.ck" < "$T/flip.ck"
  assert_failure 3
  [ ! -e "$T/out.ck" ]
  # a changed byte of an image's page data, read in place
  ck-store put -D "$T/img" < "$T/s.ck"
  python3 -c 'import sys; f = open(sys.argv[1], "r+b"); f.seek(100); b = f.read(1); f.seek(100); f.write(bytes([b[0] ^ 1]))' \
    "$T/img/pages.img"
  run ck-anon -D "$T/img" -o "$T/out.ck"
  assert_failure 3
  assert_output --partial "does not match its digest"
  [ ! -e "$T/out.ck" ]
  head -c 3000 /dev/urandom > "$T/junk"
  run ck-anon < "$T/junk"
  assert_failure 3
  head -c 8 /dev/urandom > "$T/short-key"
  run ck-anon --key "$T/short-key" < "$T/s.ck"
  assert_failure 2
  run ck-anon --env nope < "$T/s.ck"
  assert_failure 2
  ck-anon -o "$T/out.ck" < "$T/s.ck"
  ck-crit info < "$T/out.ck" > /dev/null
}

@test "ck-report: a live process through ck-anon into one zstd file with the host facts; it runs on" {
  canaries
  run ck-report -t "$WPID" -o "$T/rep.zst"
  assert_success
  assert_output --partial "ck-anon: dropped"
  kill -0 "$WPID"
  ! any_stopped "$WPID"
  zstd -q -d -c "$T/rep.zst" > "$T/rep.ck"
  run ck-crit show < "$T/rep.ck"
  assert_success
  assert_output --partial "anonymized by ck-anon"
  assert_output --partial "note from ck-report: ck: ck-freeze"
  assert_output --partial "kernel: $(uname -s) $(uname -r)"
  run leaks "$T/rep.zst" "$T/rep.ck"
  assert_output ""
  [ "$(grep -a -c CANARY "$T/rep.ck")" = 0 ]
  [ "$(shape "$T/rep.ck" | cut -d, -f1-4)" = "$(shape "$T/s.ck" | cut -d, -f1-4)" ]
  run ck-restore < "$T/rep.ck"
  assert_failure 3
  # an existing file is refused before anything is frozen
  run ck-report -t "$WPID" -o "$T/rep.zst"
  assert_failure 2
  # a pid that is not there: no report left behind
  run ck-report -t 999999 -o "$T/rep2.zst"
  assert_failure
  [ ! -e "$T/rep2.zst" ]
  ! ls "$T"/rep2.zst.* 2>/dev/null
}

@test "ck-anon --zstd: one zstd frame of the same stream; a cut input leaves no file" {
  canaries
  head -c 32 /dev/urandom > "$T/k"
  ck-anon --key "$T/k" < "$T/s.ck" > "$T/a.ck"
  ck-anon --key "$T/k" --zstd -o "$T/a.zst" < "$T/s.ck"
  zstd -q -d -c "$T/a.zst" | cmp - "$T/a.ck"
  run sh -c "head -c 5000 '$T/s.ck' | ck-anon --zstd -o '$T/b.zst'"
  assert_failure 3
  [ ! -e "$T/b.zst" ]
}
