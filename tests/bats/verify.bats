#!/usr/bin/env bats
# Every page a restore places is checked against its run's digest as it is
# placed: one flipped byte in pages.img, in a parent round's pages.img (also
# inside a run that a later round covers only in part) or in a stream fails
# the restore with status 3, naming the run, and leaves nothing running.
load helpers

setup() {
  T=$(mktemp -d /tmp/ck-test.XXXXXX)
  PIDS=()
  export CK_TRACK_DIR="$T/state"
}

teardown() {
  local p h
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for h in $(cat "$T"/state/*/[0-9]* 2>/dev/null | sed -n 's/^pid .* holder \([0-9]*\)$/\1/p'); do
    [ "$(cat /proc/"$h"/comm 2>/dev/null)" = ck-track-hold ] && kill "$h" 2>/dev/null
  done
  rm -rf "$T"
}

# flip FILE OFFSET: inverts one bit of the byte at OFFSET (twice: back again).
flip() {
  python3 -c 'import sys
f = open(sys.argv[1], "r+b"); f.seek(int(sys.argv[2])); b = f.read(1)
f.seek(int(sys.argv[2])); f.write(bytes([b[0] ^ 0x10])); f.close()' "$1" "$2"
}

# runs STREAM: "PID ADDR NPAGES STREAM_OFFSET PAGES_OFFSET ROUND" per payload run
runs() { "$CK_TOP/build/unit/memread_check" runs "$1"; }

# refused WHAT ARGS...: ck-restore ARGS fails with status 3, naming the run
# WHAT ("pid P at 0x... (N pages)"), and the dumped pid is not alive.
refused() {
  local what=$1; shift
  for ((i = 0; i < 100; i++)); do [ -d /proc/"$WPID" ] || break; sleep 0.02; done
  rm -f "$T/pid"
  run ck-restore -d --pidfile "$T/pid" "$@"
  assert_failure 3
  assert_output --partial "page data of $what does not match its digest"
  [ ! -s "$T/pid" ]
  for ((i = 0; i < 100; i++)); do [ -e /proc/"$WPID" ] || break; sleep 0.02; done
  [ ! -e /proc/"$WPID" ]
}

@test "verify: one flipped byte in pages.img or in a stream fails the restore (status 3, the run named, nothing left)" {
  start_wl counter 16
  ck-dump -t "$WPID" -D "$T/img"
  ck-store get -D "$T/img" > "$T/s.ck"
  # the largest run, a byte in its middle
  read -r pid addr np soff poff round < <(runs "$T/s.ck" | sort -k3,3n | tail -n 1)
  [ "$np" -gt 16 ]
  at=$((np * 4096 / 2 + 123))
  flip "$T/img/pages.img" $((poff + at))
  refused "pid $pid at $addr ($np pages)" -D "$T/img"
  assert_output --partial "ck-restore: image '$T/img' is corrupt: page data of pid $pid at $addr ($np pages)"
  flip "$T/img/pages.img" $((poff + at))
  cp "$T/s.ck" "$T/bad.ck"
  flip "$T/bad.ck" $((soff + at))
  refused "pid $pid at $addr ($np pages)" < "$T/bad.ck"
  # the same image, unchanged, restores and checks itself
  run ck-restore -D "$T/img" -d --pidfile "$T/pid"
  assert_success
  check_wl counter "$WPID"
}

@test "verify: a flipped byte in a parent round's pages.img, also inside a run a later round covers in part" {
  start_wl writer -m 32 -r 3000
  ck-memread --track -t "$WPID" | tee "$T/r1.ck" | ck-store put -D "$T/1" > /dev/null
  sleep 0.5
  ck-memread --dirty -t "$WPID" | tee "$T/r2.ck" | ck-store put -D "$T/2" --parent "$T/1" > /dev/null
  ck-freeze -t "$WPID" -- sh -c 'ck-memread --dirty | tee "$0/r3.ck" | ck-store put -D "$0/3" --parent "$0/2" > /dev/null' "$T"
  runs "$T/r1.ck" > "$T/runs1"
  { runs "$T/r2.ck"; runs "$T/r3.ck"; } > "$T/later"
  # A run of round 1 that no later round touches (presented whole), and one
  # that later rounds cover in part, with a page of it they do not cover:
  # its part goes out with a digest computed from pages.img, which must not
  # pass a flipped byte.
  python3 - "$T/runs1" "$T/later" > "$T/pick" <<'EOF'
import sys
runs = [l.split() for l in open(sys.argv[1])]
later = [(int(l.split()[1], 16), int(l.split()[2])) for l in open(sys.argv[2])]
def covered(a):
    return any(b <= a < b + n * 4096 for b, n in later)
whole = part = None
for pid, addr, np, soff, poff, rnd in runs:
    a, n = int(addr, 16), int(np)
    hits = [covered(a + i * 4096) for i in range(n)]
    if not any(hits) and n > 4 and whole is None:
        whole = (pid, addr, n, int(poff) + 4096 + 77)
    if any(hits) and not all(hits) and part is None:
        i = hits.index(False)
        part = (pid, addr, n, int(poff) + i * 4096 + 99)
for w in (whole, part):
    print(*w)
EOF
  [ "$(wc -l < "$T/pick")" = 2 ]
  while read -r pid addr np off; do
    flip "$T/1/pages.img" "$off"
    refused "pid $pid at $addr ($np pages)" -D "$T/3"
    assert_output --partial "ck-restore: image '$T/1' is corrupt: page data of pid $pid at $addr ($np pages)"
    flip "$T/1/pages.img" "$off"
  done < "$T/pick"
  # and the chain as it was stored restores, every page checked by the writer
  run ck-restore -D "$T/3" -d --pidfile "$T/pid"
  assert_success
  kill -USR2 "$WPID"
  wait_line "$T/writer.out" '^INFO checked' 30
  run grep '^INFO checked' "$T/writer.out"
  assert_output --partial "bad=0"
}
