#!/usr/bin/env bats
# Issue 11: cgroup v1 memberships (hybrid hosts).  ck never touches a v1
# hierarchy (on this machine they hold everything, CI included); it records
# each process's v1 lines, and ck-restore compares them with its own: every
# difference is named in a warning, and refused with --cgroup-v1 refuse.
# The differences are made by editing the image (ck-crit decode | encode),
# never by creating v1 cgroups.
load helpers

# v1 PID: the v1 lines of /proc/PID/cgroup (with controllers), sorted.
v1() { grep -v '^0::' "/proc/$1/cgroup" | sort; }

@test "v1 memberships are recorded; a restore beside the same ones says nothing" {
  [ -n "$(v1 self)" ] || skip "no cgroup v1 hierarchy on this host"
  start_wl counter 1
  v1 "$WPID" > "$T/want"
  run ck-dump -t "$WPID" -D "$T/img"
  assert_success
  ck-crit decode -D "$T/img" | python3 -c '
import json, sys
for f in json.load(sys.stdin)["frames"]:
    for l in f["frame"].get("process", {}).get("cgroup_v1", []):
        print(l)' | sort > "$T/got"
  diff -u "$T/want" "$T/got"
  run ck-restore -D "$T/img" -d
  assert_success
  refute_output --partial "cgroup v1"
  check_wl counter "$WPID"
}

# edited IMG OUT: the image with its v1 memory line moved to /ck-elsewhere
# and a hierarchy this host lacks, as a stream.
edited() {
  ck-crit decode -D "$1" | python3 -c '
import json, sys
d = json.load(sys.stdin)
for f in d["frames"]:
    p = f["frame"].get("process")
    if p:
        lines = [l for l in p.get("cgroup_v1", []) if ":memory:" not in l]
        p["cgroup_v1"] = lines + ["4:memory:/ck-elsewhere", "99:nosuch:/a/b"]
json.dump(d, sys.stdout)' | ck-crit encode > "$2"
}

@test "a v1 membership that differs is named in a warning, each one; the task runs" {
  grep -q ':memory:' /proc/self/cgroup || skip "no v1 memory hierarchy on this host"
  start_wl counter 1
  run ck-dump -t "$WPID" -D "$T/img"
  assert_success
  edited "$T/img" "$T/s.ck"
  local here
  here=$(sed -n 's/^[0-9]*:memory://p' /proc/self/cgroup)
  run ck-restore -d < "$T/s.ck"
  assert_success
  assert_output --partial "ck-restore: warning: pid $WPID: cgroup v1 'memory' was /ck-elsewhere, is $here here (ck does not restore v1 cgroups)"
  assert_output --partial "ck-restore: warning: pid $WPID: cgroup v1 'nosuch' was /a/b, and this host has no such v1 hierarchy"
  [ "$(sed -n 's/^[0-9]*:memory://p' /proc/$WPID/cgroup)" = "$here" ]  # nothing moved
  check_wl counter "$WPID"
}

@test "--cgroup-v1 refuse: a differing v1 membership is refused by name before anything is created" {
  grep -q ':memory:' /proc/self/cgroup || skip "no v1 memory hierarchy on this host"
  start_wl counter 1
  run ck-dump -t "$WPID" -D "$T/img"
  assert_success
  edited "$T/img" "$T/s.ck"
  run ck-restore -d --cgroup-v1 refuse < "$T/s.ck"
  assert_failure 1
  assert_output --partial "ck-restore: unable to restore pid $WPID: cgroup v1 'memory' was /ck-elsewhere"
  assert_output --partial "(--cgroup-v1 refuse)"
  [ "$(task_alive "$WPID")" = 0 ]
  # the unedited image restores with it
  run ck-restore -D "$T/img" -d --cgroup-v1 refuse
  assert_success
  check_wl counter "$WPID"
}
