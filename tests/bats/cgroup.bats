#!/usr/bin/env bats
# ck-cgdump on the machine's real cgroup v2 tree (only hugetlb can be
# enabled there): a tree of nested domain and threaded cgroups with hugetlb
# limits, cgroup.max.*, a frozen subtree and real tasks and threads is
# dumped, destroyed, restored (ck-cgdump --restore-from, the library
# ck-restore uses) and compared file by file; conflicts, rejected and
# unknown settings are refused by name and leave nothing behind.
# The other controllers are tested against a fake tree: tests/unit/cgroup_test.cc.
load helpers

CGFS=${CK_CGROUP_ROOT:-/sys/fs/cgroup/unified}

setup() {
  T=$(mktemp -d /tmp/ck-test.XXXXXX)
  PIDS=()
  [ "$(stat -f -c %T "$CGFS" 2>/dev/null)" = cgroup2fs ] || skip "no cgroup2 at $CGFS"
  grep -qw hugetlb "$CGFS/cgroup.controllers" || skip "no hugetlb controller in $CGFS"
  NAME=ck-test-$$-$RANDOM
  CG=$CGFS/$NAME
  ROOT_HAD_HUGETLB=0
  grep -qw hugetlb "$CGFS/cgroup.subtree_control" && ROOT_HAD_HUGETLB=1
  echo +hugetlb > "$CGFS/cgroup.subtree_control"
}

# Removes every cgroup under $CG (deepest first), after killing what we started.
cg_remove_all() {
  [ -d "$CG" ] || return 0
  local d i
  echo 1 > "$CG/cgroup.kill" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    grep -q 'populated 0' "$CG/cgroup.events" 2>/dev/null && break
    sleep 0.02
  done
  find "$CG" -depth -type d | while read -r d; do rmdir "$d" 2>/dev/null || true; done
}

teardown() {
  local p
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  cg_remove_all
  [ "$ROOT_HAD_HUGETLB" = 1 ] || echo -hugetlb > "$CGFS/cgroup.subtree_control" 2>/dev/null || true
  rm -rf "$T"
}

# build_tree: $CG (domain, hugetlb, max.descendants)
#   dom/     hugetlb limits, max.depth, a sleep process      (domain)
#   thr/     the threads workload                             (domain threaded)
#     t1/ t2/  one worker thread each                         (threaded)
#   frz/     frozen, max.descendants 1, limit                 (domain)
#     inner/ a sleep process                                  (domain)
build_tree() {
  mkdir "$CG" "$CG/dom" "$CG/thr" "$CG/thr/t1" "$CG/thr/t2" "$CG/frz" "$CG/frz/inner"
  echo +hugetlb > "$CG/cgroup.subtree_control"
  echo +hugetlb > "$CG/frz/cgroup.subtree_control"
  echo 4194304 > "$CG/dom/hugetlb.2MB.max"
  echo 2097152 > "$CG/dom/hugetlb.2MB.rsvd.max"
  echo 2 > "$CG/dom/cgroup.max.depth"
  echo 6 > "$CG/cgroup.max.descendants"
  echo 0 > "$CG/frz/hugetlb.2MB.max"
  echo 6291456 > "$CG/frz/inner/hugetlb.2MB.max"
  echo threaded > "$CG/thr/t1/cgroup.type"
  echo threaded > "$CG/thr/t2/cgroup.type"
  echo 1 > "$CG/frz/cgroup.max.descendants"
  sleep 1000 & S1=$!; PIDS+=("$S1")
  sleep 1000 & S2=$!; PIDS+=("$S2")
  start_wl threads
  echo "$S1" > "$CG/dom/cgroup.procs"
  echo "$S2" > "$CG/frz/inner/cgroup.procs"
  echo "$WPID" > "$CG/thr/cgroup.procs"
  echo "$(info tid0 "$T/threads.out")" > "$CG/thr/t1/cgroup.threads"
  echo "$(info tid1 "$T/threads.out")" > "$CG/thr/t2/cgroup.threads"
  echo "$(info tid2 "$T/threads.out")" > "$CG/thr/t2/cgroup.threads"
  echo 1 > "$CG/frz/cgroup.freeze"
  wait_frozen "$CG/frz"
}

wait_frozen() {
  local i
  for ((i = 0; i < 200; i++)); do grep -q 'frozen 1' "$1/cgroup.events" && return 0; sleep 0.01; done
  return 1
}

# cg_state DIR: every readable, writable file (PSI triggers aside) and the
# task lists and events of every cgroup under DIR, paths relative to DIR.
cg_state() {
  local d f rel perms
  find "$1" -type d | sort | while read -r d; do
    rel=${d#"$1"}
    echo "== ${rel:-/}"
    for f in "$d"/*; do
      case "${f##*/}" in cpu.pressure|io.pressure|memory.pressure|irq.pressure|cgroup.kill) continue ;; esac
      perms=$(stat -c %A "$f")
      if [ "${perms:1:2}" = rw ] || [ "${f##*/}" = cgroup.events ]; then
        printf '%s: %s\n' "${f##*/}" "$(sort -n "$f" 2>/dev/null | tr '\n' ' ' || echo '<unreadable>')"
      fi
    done
  done
}

# destroy: tasks back to the root cgroup (thawed), every cgroup of the tree removed.
destroy() {
  local p
  for p in "$S1" "$S2" "$WPID"; do echo "$p" > "$CGFS/cgroup.procs"; done
  find "$CG" -depth -type d -exec rmdir {} \;
  [ ! -d "$CG" ]
}

# edit_image IN OUT PYTHON: OUT is IN with every cgroup frame c (a dict) passed
# through the python statement (the image goes through ck-crit JSON).
edit_image() {
  ck-crit decode < "$1" > "$T/img.json"
  python3 - "$T/img.json" "$3" <<'EOF'
import json, sys
doc = json.load(open(sys.argv[1]))
for fr in doc["frames"]:
    c = fr["frame"].get("cgroup")
    if c is None:
        continue
    c.setdefault("settings", {})
    exec(sys.argv[2])
    fr.pop("raw", None)
json.dump(doc, open(sys.argv[1], "w"))
EOF
  ck-crit encode < "$T/img.json" > "$2"
}

@test "alone: a tree of domain, threaded and frozen cgroups comes back file by file, frozen with its tasks" {
  build_tree
  cg_state "$CG" > "$T/before"
  grep -q 'frozen 1' "$T/before"
  ck-cgdump --cgroup "/$NAME" > "$T/cg.ck"
  ck-crit show < "$T/cg.ck" | grep -q "cgroup /$NAME/thr/t1"
  destroy
  ck-cgdump --restore-from "$T/cg.ck" --place
  cg_state "$CG" > "$T/after"
  diff -u "$T/before" "$T/after"
  grep -q 'frozen 1' "$CG/frz/cgroup.events"
  grep -q 'frozen 1' "$CG/frz/inner/cgroup.events"
  [ "$(cat "$CG/frz/inner/cgroup.procs")" = "$S2" ]
  grep -qx "0::/$NAME/thr/t1" "/proc/$WPID/task/$(info tid0 "$T/threads.out")/cgroup"
  check_wl threads "$WPID"
}

@test "pipeline: ck-freeze | ck-cgdump | ck-store, the tree's cgroups restored from the image" {
  build_tree
  cg_state "$CG/thr" > "$T/before"
  ck-freeze -t "$WPID" --leave-running -- sh -c "ck-memread | ck-cgdump | ck-store put -D '$T/img'"
  ck-store get -D "$T/img" > "$T/s.ck"
  run ck-crit decode < "$T/s.ck"
  assert_output --partial '"writers":["ck-freeze 0.1","ck-memread 0.1","ck-cgdump 0.1"]'
  assert_output --partial "\"path\":\"/$NAME\",\"settings\""
  refute_output --partial "\"path\":\"/$NAME/dom\""
  # the workload's cgroups only, the ancestors marked
  echo "$WPID" > "$CGFS/cgroup.procs"
  rmdir "$CG/thr/t1" "$CG/thr/t2" "$CG/thr"
  ck-store get -D "$T/img" | ck-cgdump --restore-from - --place
  cg_state "$CG/thr" > "$T/after"
  diff -u "$T/before" "$T/after"
  check_wl threads "$WPID"
}

@test "restoring over a conflicting cgroup is refused by name and creates nothing" {
  build_tree
  ck-cgdump --cgroup "/$NAME" > "$T/cg.ck"
  destroy
  mkdir "$CG" "$CG/dom"
  echo +hugetlb > "$CG/cgroup.subtree_control"
  echo 6 > "$CG/cgroup.max.descendants"
  echo 2097152 > "$CG/dom/hugetlb.2MB.max"
  run ck-cgdump --restore-from "$T/cg.ck" --place
  assert_failure 1
  assert_output --partial "cgroup '/$NAME/dom' exists at '$CG/dom' with other settings: "
  assert_output --partial "hugetlb.2MB.max is '2097152', the image has '4194304'"
  run find "$CG" -mindepth 1 -type d
  assert_output "$CG/dom"
  [ "$(cat "$CG/dom/hugetlb.2MB.max")" = 2097152 ]
  # overwrite: written over it, the rest created
  ck-cgdump --restore-from "$T/cg.ck" --cgroup-mode overwrite
  [ "$(cat "$CG/dom/hugetlb.2MB.max")" = 4194304 ]
  grep -q 'frozen 1' "$CG/frz/cgroup.events"
}

@test "a setting the kernel rejects: refused with the file and value, everything created removed" {
  build_tree
  ck-cgdump --cgroup "/$NAME" > "$T/cg.ck"
  edit_image "$T/cg.ck" "$T/bad.ck" 'c["settings"].update({"cgroup.max.depth": "banana"}) if c["path"].endswith("/frz/inner") else None'
  destroy
  run ck-cgdump --restore-from "$T/bad.ck" --place
  assert_failure 1
  assert_output --partial "unable to write 'banana' to '$CG/frz/inner/cgroup.max.depth': Invalid argument"
  [ ! -d "$CG" ]
  # the tasks were not moved
  grep -qx '0::/' "/proc/$S1/cgroup"
}

@test "a setting or controller this kernel lacks is named; nothing is left" {
  build_tree
  ck-cgdump --cgroup "/$NAME" > "$T/cg.ck"
  edit_image "$T/cg.ck" "$T/lacks.ck" 'c["settings"].update({"hugetlb.2MB.nosuch.max": "1"}) if c["path"].endswith("/dom") else None'
  edit_image "$T/cg.ck" "$T/mem.ck" 'c["settings"].update({"cgroup.subtree_control": "hugetlb memory"}) if c["path"].endswith("/frz") else None'
  destroy
  run ck-cgdump --restore-from "$T/lacks.ck"
  assert_failure 1
  assert_output --partial "this kernel lacks settings the image has: /$NAME/dom: hugetlb.2MB.nosuch.max"
  [ ! -d "$CG" ]
  run ck-cgdump --restore-from "$T/mem.ck"
  assert_failure 1
  assert_output --partial "unable to enable controller 'memory' in '$CG/frz/cgroup.subtree_control'"
  [ ! -d "$CG" ]
  ck-cgdump --restore-from "$T/lacks.ck" --skip-missing 2> "$T/err"
  grep -q "hugetlb.2MB.nosuch.max" "$T/err"
  [ "$(cat "$CG/dom/hugetlb.2MB.max")" = 4194304 ]
}

@test "hostile images are bad input and touch nothing" {
  build_tree
  ck-cgdump --cgroup "/$NAME" > "$T/cg.ck"
  destroy
  edit_image "$T/cg.ck" "$T/evil.ck" 'c.update({"path": "/../../etc"}) if c["path"].endswith("/dom") else None'
  run ck-cgdump --restore-from "$T/evil.ck"
  assert_failure 3
  assert_output --partial "is not a plain cgroup path"
  edit_image "$T/cg.ck" "$T/procs.ck" 'c["settings"].update({"cgroup.procs": "1"})'
  run ck-cgdump --restore-from "$T/procs.ck"
  assert_failure 3
  [ ! -d "$CG" ]
  head -c 300 "$T/cg.ck" > "$T/cut.ck"
  run ck-cgdump --restore-from "$T/cut.ck"
  assert_failure 3
  [ ! -d "$CG" ]
}

@test "restore under another root with --cgroup-root" {
  build_tree
  ck-cgdump --cgroup "/$NAME/frz" > "$T/cg.ck"
  echo 10 > "$CG/cgroup.max.descendants"
  mkdir "$CG/elsewhere"
  ck-cgdump --restore-from "$T/cg.ck" --cgroup-root "/$NAME/elsewhere"
  [ "$(cat "$CG/elsewhere/$NAME/frz/hugetlb.2MB.max")" = 0 ]
  [ "$(cat "$CG/elsewhere/$NAME/frz/inner/hugetlb.2MB.max")" = 6291456 ]
  grep -q 'frozen 1' "$CG/elsewhere/$NAME/frz/cgroup.events"
  run ck-cgdump --restore-from "$T/cg.ck" --cgroup-root "/$NAME/nosuch"
  assert_failure 1
  assert_output --partial "cgroup root '/$NAME/nosuch' does not exist"
}
