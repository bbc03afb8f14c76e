#!/usr/bin/env bats
# State that used to come back wrong while ck reported success (issue 18):
# memory layouts, scheduling state.  Every workload checks itself.
load helpers

@test "private COW pages over a memfd, anonymous holes and split/merged VMAs come back byte for byte" {
  start_wl memlayout
  dump_kill_restore
  check_wl memlayout "$WPID"
}
