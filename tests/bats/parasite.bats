#!/usr/bin/env bats
# ck-memread under ck-freeze: page data goes out through the page parasite
# (vmsplice from inside the frozen target, no copy) and is the same as what
# process_vm_readv reads; the target is left exactly as it was, also when
# the stage dies with the parasite in it.
load helpers

MC() { "$CK_TOP/build/unit/memread_check" "$@"; }

# parasite_batches LOG: the "N batches through the page parasite" figure.
parasite_batches() { grep -Eo '[0-9]+ batches through the page parasite' "$1" | cut -d' ' -f1; }

@test "parasite: the pages it splices equal the workload's and a process_vm_readv dump's; the target is as before" {
  start_wl counter 64
  proc_state "$WPID" > "$T/before"
  ck-freeze -t "$WPID" --leave-running -- sh -c "ck-memread -v 2> '$T/p.log' > '$T/p.ck'"
  ck-freeze -t "$WPID" --leave-running -- sh -c "ck-memread -v --no-parasite 2> '$T/r.log' > '$T/r.ck'"
  # Through the parasite (batches of up to 64 MiB), and not at all with
  # --no-parasite.
  [ "$(parasite_batches "$T/p.log")" -ge 1 ]
  [ "$(parasite_batches "$T/r.log")" -eq 0 ]
  addr=$(info data "$T/counter.out"); len=$(info len "$T/counter.out"); fnv=$(info fnv "$T/counter.out")
  run MC sum "$T/p.ck" "$WPID" "$addr" "$len"
  assert_output "$fnv"
  run MC sum "$T/r.ck" "$WPID" "$addr" "$len"
  assert_output "$fnv"
  # Every stage downstream accepts it (each run's digest was computed in the target).
  ck-store put -D "$T/img" < "$T/p.ck"
  ck-store get -D "$T/img" | ck-crit info > "$T/info"
  # Nothing of the parasite stays: maps, fds, signal masks as before.
  proc_state "$WPID" > "$T/after"
  run diff -u "$T/before" "$T/after"
  assert_success
  ! any_stopped "$WPID"
  check_wl counter "$WPID"
}

@test "parasite: zero pages become zero runs; a four-thread process has its TLS read through it" {
  start_wl zeros 16
  ck-freeze -t "$WPID" --leave-running -- sh -c "ck-memread -v 2> '$T/p.log' > '$T/p.ck'"
  [ "$(parasite_batches "$T/p.log")" -ge 1 ]
  addr=$(info data "$T/zeros.out"); len=$(info len "$T/zeros.out"); fnv=$(info fnv "$T/zeros.out")
  run MC sum "$T/p.ck" "$WPID" "$addr" "$len"
  assert_output "$fnv"
  # 64 non-zero pages of 4096: well under 1 MiB of payload, not 16.
  [ "$(stat -c %s "$T/p.ck")" -lt $((2 << 20)) ]
  check_wl zeros "$WPID"

  start_wl threads
  ck-freeze -t "$WPID" --leave-running -- sh -c "ck-memread -v 2> '$T/t.log' > '$T/t.ck'"
  [ "$(parasite_batches "$T/t.log")" -ge 1 ]
  tls_dumped "$T/t.ck"
  check_wl threads "$WPID"
}

@test "parasite: a stage that fails with the parasite in the target leaves the target as it was" {
  start_wl counter 64
  proc_state "$WPID" > "$T/before"
  # head takes 20 MB and goes: ck-memread fails on the broken pipe in the
  # middle of the memory, with the parasite in; ck-freeze takes it out when
  # the stage's connection goes, and rolls back.
  CK_LOG=tracer:debug run ck-freeze -t "$WPID" --leave-running -- \
    bash -c "set -o pipefail; ck-memread -v 2> '$T/p.log' | head -c 20000000 > /dev/null"
  assert_failure 1
  # Gone in the middle of a parasite run (stopped) or between two (taken out).
  assert_output --regexp "the stage that ran the parasite in pid $WPID went away|a stage hung up: taking out its 1 parasites"
  assert_output --partial "exited with status 1: the tree resumes as it was"
  grep -q "Broken pipe" "$T/p.log"
  proc_state "$WPID" > "$T/after"
  run diff -u "$T/before" "$T/after"
  assert_success
  ! any_stopped "$WPID"
  check_wl counter "$WPID"
}

@test "parasite: a task moved between CPUs during the dump still dumps whole (its rseq page is copied)" {
  [ "$(nproc)" -ge 2 ] || skip "needs two CPUs"
  start_wl counter 8
  # The kernel rewrites a thread's rseq area (CPU and concurrency ids) when
  # the thread goes back to user space on another CPU.  The parasite's
  # thread does, between its chunks; a page sent by reference would change
  # after its digest was taken, and the reader would refuse the stream.
  python3 -c '
import os, sys
pid = int(sys.argv[1])
while True:
    for cpu in (0, 1):
        os.sched_setaffinity(pid, {cpu})' "$WPID" &
  hop=$!
  PIDS+=("$hop")
  for i in $(seq 12); do
    CK_LOG=memread:debug ck-freeze -t "$WPID" --leave-running -- sh -c "ck-memread 2> '$T/m.log' | ck-crit info > /dev/null"
  done
  kill "$hop"
  grep -q "rseq area" "$T/m.log"
  check_wl counter "$WPID"
}
