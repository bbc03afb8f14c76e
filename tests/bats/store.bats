#!/usr/bin/env bats
# ck-store: put/get round trip, the image layout, listing, and refusal of
# bad streams and corrupt images (status 3, nothing half-written left).
load helpers

MK="$CK_TOP/build/unit/mkstream"

# flip FILE OFFSET: FILE with the byte at OFFSET changed, on stdout.
flip() {
  python3 -c 'import sys; d = bytearray(open(sys.argv[1], "rb").read()); d[int(sys.argv[2])] ^= 0x40; sys.stdout.buffer.write(d)' "$1" "$2"
}

# bad_streams: writes $T/bad/*.ck, each a way a stream can be wrong, from $T/s.ck.
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

# no_image DIR: DIR holds no image and no leftover file.
no_image() {
  if [ -d "$1" ]; then
    run ls -A "$1"
    assert_output ""
  fi
}

@test "put then get gives the same bytes; payloads page-aligned in pages.img" {
  "$MK" "$T/s.ck" 2>/dev/null
  ck-store put -D "$T/img" < "$T/s.ck"
  [ -f "$T/img/frames.img" ] && [ -f "$T/img/pages.img" ] && [ -f "$T/img/manifest" ]
  run ck-crit info < "$T/s.ck"
  payload=$(echo "$output" | awk '/^payload bytes:/ {print $3}')
  [ "$(stat -c %s "$T/img/pages.img")" -eq "$payload" ]
  [ $((payload % 4096)) -eq 0 ]
  # frames.img is the stream minus its payloads
  [ $(( $(stat -c %s "$T/img/frames.img") + payload )) -eq "$(stat -c %s "$T/s.ck")" ]
  ck-store get -D "$T/img" > "$T/back.ck"
  cmp "$T/s.ck" "$T/back.ck"
  # the image holds no world-readable file
  run stat -c %a "$T/img" "$T/img/pages.img"
  assert_output $'700\n600'
}

@test "a page run can be read at its place in pages.img" {
  "$MK" "$T/s.ck" 2>/dev/null
  ck-store put -D "$T/img" < "$T/s.ck"
  # pid 100's first run (0x400000, 2 pages) is the first payload: offset 0;
  # its bytes in the image must sum as the process memory would.
  want=$(ck-crit sum --pid 100 --addr 0x400000 --len 8192 < "$T/s.ck")
  got=$(head -c 8192 "$T/img/pages.img" | python3 -c '
import sys
h = 0xcbf29ce484222325
for b in sys.stdin.buffer.read():
    h = ((h ^ b) * 0x100000001b3) & 0xffffffffffffffff
print(hex(h))')
  [ "$want" = "$got" ]
}

@test "ls shows one line per task" {
  "$MK" "$T/s.ck" 2>/dev/null
  ck-store put -D "$T/img" < "$T/s.ck"
  run ck-store ls -D "$T/img"
  assert_success
  assert_line --index 0 --partial "22 frames, 1253376 page bytes"
  assert_line --regexp '^ +100 sample +14 +4 +6 +1 +24576$'
  assert_line --regexp '^ +102 child +5 +2 +300 +4 +1228800$'
}

@test "put refuses to overwrite an image unless --force" {
  "$MK" "$T/s.ck" 2>/dev/null
  ck-store put -D "$T/img" < "$T/s.ck"
  run ck-store put -D "$T/img" < "$T/s.ck"
  assert_failure 1
  assert_output --partial "already holds an image"
  ck-store put --force -D "$T/img" < "$T/s.ck"
  ck-store get -D "$T/img" | cmp - "$T/s.ck"
}

@test "--name or no -D: the store service (started for put when none runs); --parent that is no image" {
  "$MK" "$T/s.ck" 2>/dev/null
  run ck-store put --parent "$T/prev" -D "$T/img" < "$T/s.ck"
  assert_failure 3
  assert_output --partial "parent image '$T/prev'"
  [ ! -e "$T/img" ]
  export CK_STORE_SOCKET=$T/store.sock
  # get, ls, rm never start a service
  run ck-store get --name web1
  assert_failure 1
  assert_output "ck-store: no store service at '$T/store.sock' (ck-store serve starts one)"
  [ ! -e "$T/store.sock" ]
  ck-store put --name web1 < "$T/s.ck" 2> "$T/err"
  spid=$(sed -n 's/^ck-store: started the store service at .* (pid \([0-9]*\))$/\1/p' "$T/err")
  [ -n "$spid" ]
  PIDS+=("$spid")
  ck-store get --name web1 | cmp - "$T/s.ck"
  run ck-store put < "$T/s.ck"
  assert_success
  assert_output "img-100"
  run ck-store put --name web2 -D "$T/img" < "$T/s.ck"
  assert_failure 2
  run ck-store put --parent "$T/img" < "$T/s.ck"
  assert_failure 2
  [ ! -e "$T/img" ]
}

@test "put of a bad stream: status 3, a message, no image left" {
  "$MK" "$T/s.ck" 2>/dev/null
  bad_streams
  for f in "$T"/bad/*.ck; do
    run ck-store put -D "$T/img" < "$f"
    echo "# $f: $status $output"
    [ "$status" -eq 3 ]
    [[ "$output" == "ck-store: stdin: "* ]]
    no_image "$T/img"
    # into an existing empty directory as well
    mkdir -p "$T/dir"
    run ck-store put -D "$T/dir" < "$f"
    [ "$status" -eq 3 ]
    no_image "$T/dir"
  done
  run ck-store put -D "$T/img" < "$T/bad/cut-600.ck"
  assert_output --partial "truncated"
  run ck-store put -D "$T/img" < "$T/bad/flip-payload.ck"
  assert_output --partial "page data of pid 102 at 0x504000 (300 pages) does not match its digest (stream corrupted)"
  run ck-store put -D "$T/img" < "$T/bad/flip-frame.ck"
  assert_output --partial "checksum mismatch (stream corrupted)"
  run ck-store put -D "$T/img" < "$T/bad/newer.ck"
  assert_output --partial "version 2.0 is newer than this ck reads (1.4)"
  run ck-store put -D "$T/img" < "$T/bad/huge-frame.ck"
  assert_output --partial "over the 16777216 limit"
  run ck-store put -D "$T/img" < "$T/bad/empty.ck"
  assert_output --partial "empty input"
  run ck-store put -D "$T/img" < "$T/bad/garbage.ck"
  assert_output --partial "not a ck stream"
}

@test "a failed put --force keeps the old image intact" {
  "$MK" "$T/s.ck" 2>/dev/null
  ck-store put -D "$T/img" < "$T/s.ck"
  head -c 100000 "$T/s.ck" > "$T/cut.ck"
  run ck-store put --force -D "$T/img" < "$T/cut.ck"
  assert_failure 3
  ck-store get -D "$T/img" | cmp - "$T/s.ck"
  run ls -A "$T/img"
  assert_output $'frames.img\nmanifest\npages.img'
}

@test "get of a corrupt image: status 3" {
  "$MK" "$T/s.ck" 2>/dev/null
  ck-store put -D "$T/img" < "$T/s.ck"
  cp -a "$T/img" "$T/good"

  truncate -s -4096 "$T/img/pages.img"
  run ck-store get -D "$T/img"
  assert_failure 3
  assert_output --partial "pages.img is 1249280 bytes, manifest says 1253376"

  rm -rf "$T/img"; cp -a "$T/good" "$T/img"
  flip "$T/good/frames.img" 40 > "$T/img/frames.img"
  run ck-store get -D "$T/img"
  assert_failure 3
  assert_output --partial "frames.img does not match its checksum"

  # a changed page: noticed at the end of its run, and the trailer is then withheld
  rm -rf "$T/img"; cp -a "$T/good" "$T/img"
  flip "$T/good/pages.img" 5000 > "$T/img/pages.img"
  run sh -c 'ck-store get -D "$1" > "$2"' _ "$T/img" "$T/out.ck"
  assert_failure 3
  assert_output --partial "image '$T/img' is corrupt: page data of pid 100 at 0x400000 (2 pages) does not match its digest"
  run ck-crit info < "$T/out.ck"
  assert_failure 3

  rm -rf "$T/img"; cp -a "$T/good" "$T/img"
  echo "ck-image 9" > "$T/img/manifest"
  run ck-store get -D "$T/img"
  assert_failure 3
  assert_output --partial "newer than this ck reads"

  rm -rf "$T/img"; cp -a "$T/good" "$T/img"
  rm "$T/img/manifest"
  run ck-store get -D "$T/img"
  assert_failure 3
  assert_output --partial "is not an image"

  run ck-store get -D "$T/nothing-here"
  assert_failure 3
}

@test "image files that are symlinks are refused and never written through" {
  "$MK" "$T/s.ck" 2>/dev/null
  ck-store put -D "$T/img" < "$T/s.ck"
  mv "$T/img/pages.img" "$T/elsewhere"
  ln -s "$T/elsewhere" "$T/img/pages.img"
  run ck-store get -D "$T/img"
  assert_failure 3
  assert_output --partial "symbolic link"
  # a put replaces the link itself, the file it pointed to stays as it was
  echo precious > "$T/precious"
  ln -sf "$T/precious" "$T/img/pages.img"
  ln -sf "$T/precious" "$T/img/frames.img"
  ck-store put --force -D "$T/img" < "$T/s.ck"
  [ "$(cat "$T/precious")" = precious ]
  [ ! -L "$T/img/pages.img" ]
  ck-store get -D "$T/img" | cmp - "$T/s.ck"
}

@test "a 1.0 stream is stored as 1.0 and comes back byte for byte" {
  "$MK" --minor 0 "$T/s.ck" 2>/dev/null
  ck-store put -D "$T/img" < "$T/s.ck"
  run ck-store ls -D "$T/img"
  assert_success
  assert_line --partial "format 1.0, root pid 100"
  ck-store get -D "$T/img" | cmp - "$T/s.ck"
  # a changed page of a 1.0 image: the trailer checksum finds it
  cp -a "$T/img" "$T/good"
  flip "$T/good/pages.img" 5000 > "$T/img/pages.img"
  run sh -c 'ck-store get -D "$1" > /dev/null' _ "$T/img"
  assert_failure 3
  assert_output --partial "checksum mismatch (page or frame data changed)"
  run ck-crit info -D "$T/img"
  assert_failure 3
  assert_output --partial "checksum mismatch (page or frame data changed)"
}

@test "a put killed by SIGKILL leaves its temporaries; the next put into the directory removes them, another put's are left" {
  "$MK" "$T/s.ck" 2>/dev/null
  mkfifo "$T/fifo"
  # A put reading a stream that stops halfway, killed there.
  ck-store put -D "$T/img" < "$T/fifo" &
  local put=$!
  exec 7> "$T/fifo"
  head -c 600 "$T/s.ck" >&7
  for ((i = 0; i < 100; i++)); do ls -A "$T/img" 2>/dev/null | grep -q "^\.frames\.img\.$put\.tmp$" && break; sleep 0.05; done
  kill -9 "$put"
  wait "$put" 2>/dev/null || true
  exec 7>&-
  run ls -A "$T/img"
  assert_output --partial ".frames.img.$put.tmp"
  # The temporaries of a put that still runs (this shell's pid) stay.
  : > "$T/img/.pages.img.$$.tmp"
  ck-store put -D "$T/img" < "$T/s.ck"
  run ls -A "$T/img"
  refute_output --partial ".$put.tmp"
  assert_output --partial ".pages.img.$$.tmp"
  rm "$T/img/.pages.img.$$.tmp"
  ck-store get -D "$T/img" | cmp - "$T/s.ck"
}
