#!/usr/bin/env bats
# ck-memread alone (-t PID) and in a pipeline: the layout equals
# /proc/PID/maps, page contents checksum to what the workload computed,
# shared memory of a tree is dumped once, bad pids fail cleanly.
load helpers

MC() { "$CK_TOP/build/unit/memread_check" "$@"; }

# maps of PID as memread_check prints them: single spaces, no padding.
norm_maps() { sed -e 's/  */ /g' -e 's/ $//' "/proc/$1/maps"; }

@test "memread: counter 64 MiB: layout equals maps, data checksum equals the workload's" {
  start_wl counter 64
  ck-memread -t "$WPID" > "$T/s.ck"
  norm_maps "$WPID" > "$T/maps.want"
  MC maps "$T/s.ck" "$WPID" > "$T/maps.got"
  run diff -u "$T/maps.want" "$T/maps.got"
  assert_success
  [ "$(wc -l < "$T/maps.got")" -gt 10 ]
  addr=$(info data "$T/counter.out"); len=$(info len "$T/counter.out"); fnv=$(info fnv "$T/counter.out")
  run MC sum "$T/s.ck" "$WPID" "$addr" "$len"
  assert_success
  assert_output "$fnv"
  # The stream carries the region once, not much more.
  size=$(stat -c %s "$T/s.ck")
  [ "$size" -ge $((64 << 20)) ] && [ "$size" -lt $((70 << 20)) ]
  # The workload ran on undisturbed.
  check_wl counter "$WPID"
}

@test "memread: a checksum from the image catches a wrong range" {
  start_wl counter 16
  ck-memread -t "$WPID" > "$T/s.ck"
  addr=$(info data "$T/counter.out"); len=$(info len "$T/counter.out"); fnv=$(info fnv "$T/counter.out")
  run MC sum "$T/s.ck" "$WPID" $((addr + 4096)) "$len"
  refute_output "$fnv"
}

@test "memread: mostly-zero memory becomes zero runs without payload" {
  start_wl zeros 64
  ck-memread -t "$WPID" > "$T/s.ck"
  addr=$(info data "$T/zeros.out"); len=$(info len "$T/zeros.out"); fnv=$(info fnv "$T/zeros.out")
  run MC sum "$T/s.ck" "$WPID" "$addr" "$len"
  assert_output "$fnv"
  # 256 non-zero pages of 16384: about 1 MiB of payload, not 64.
  [ "$(stat -c %s "$T/s.ck")" -lt $((4 << 20)) ]
  check_wl zeros "$WPID"
}

@test "memread: four threads, their TLS and guard pages (PROT_NONE) dumped" {
  start_wl threads
  ck-memread -t "$WPID" > "$T/s.ck"
  norm_maps "$WPID" > "$T/maps.want"
  MC maps "$T/s.ck" "$WPID" > "$T/maps.got"
  run diff -u "$T/maps.want" "$T/maps.got"
  assert_success
  grep -q -- ' ---p ' "$T/maps.got"   # thread stack guards
  tls_dumped "$T/s.ck"
  check_wl threads "$WPID"
}

@test "memread: --tree dumps the three processes of shmtree, the shared region once" {
  start_wl shmtree
  ck-memread -t "$WPID" --tree > "$T/s.ck"
  run MC procs "$T/s.ck"
  assert_success
  [ "${#lines[@]}" -eq 3 ]
  [ "${lines[0]}" = "$WPID" ]
  procs="${lines[*]}"
  for role in 0 1 2; do
    line=$(grep "^INFO role=$role " "$T/shmtree.out")
    pid=$(echo "$line" | grep -Eo ' pid=[0-9]+' | cut -d= -f2)
    echo "$procs" | grep -qw "$pid"
    for what in shared priv; do
      a=$(echo "$line" | grep -Eo " $what=[^ ]+" | cut -d= -f2)
      l=$(echo "$line" | grep -Eo " ${what}_len=[^ ]+" | cut -d= -f2)
      f=$(echo "$line" | grep -Eo " ${what}_fnv=[^ ]+" | cut -d= -f2)
      run MC sum "$T/s.ck" "$pid" "$a" "$l"
      assert_output "$f"
    done
  done
  # The 3 x 256 KiB region: 3 VMAs, 2 of them marked contents_elsewhere,
  # 192 pages sent once, by the parent.
  run MC shm "$T/s.ck"
  assert_success
  echo "$output"
  echo "$output" | grep -E "vmas=3 elsewhere=2 pages=192 senders=$WPID\$"
  # Every shared object of the tree is sent by exactly one process.
  shm=$output
  run grep -E 'senders=[0-9]+,' <<< "$shm"
  assert_failure
  check_wl shmtree "$WPID"
}

@test "memread: in a pipeline, forwards the stream and appends memory" {
  start_wl counter 8
  ck-memread -t "$WPID" | ck-memread > "$T/s.ck"
  run MC procs "$T/s.ck"
  assert_output "$WPID"
  addr=$(info data "$T/counter.out"); len=$(info len "$T/counter.out"); fnv=$(info fnv "$T/counter.out")
  run MC sum "$T/s.ck" "$WPID" "$addr" "$len"
  assert_output "$fnv"
}

@test "memread: a pid that does not exist fails naming it, and writes no trailer" {
  run ck-memread -t 999999
  assert_failure 1
  assert_output --partial "pid 999999"
  run bash -c "ck-memread -t 999999 > '$T/s.ck'"
  assert_failure 1
  run MC procs "$T/s.ck"
  assert_failure 3
}

@test "memread: usage errors" {
  run ck-memread --tree
  assert_failure 2
  run ck-memread -t 0
  assert_failure 2
}
