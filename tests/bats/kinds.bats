#!/usr/bin/env bats
# The one list of resource kinds (libcommon/kinds.h, `ck-crit kinds`):
#  - every kind is held by a real process (tests/workloads/holder) and
#    either dumped by the default dump (which kills), restored and checked
#    by the process itself, or refused at dump by name with the process
#    running on unchanged;
#  - for every kind a stream can carry, a sink (ck-store put) and ck-restore
#    decide alike: what restore would refuse, the sink refuses first, so no
#    kind can be refused only at restore;
#  - README's table is the list's.
load helpers

CGFS=${CK_CGROUP_ROOT:-/sys/fs/cgroup/unified}
HUGE_OLD=

teardown() {
  local p
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  if [ -n "${CGDIR:-}" ]; then
    for ((p = 0; p < 100; p++)); do rmdir "$CGDIR" 2>/dev/null && break; sleep 0.02; done
  fi
  [ -z "$HUGE_OLD" ] || echo "$HUGE_OLD" > /proc/sys/vm/nr_hugepages
  rm -rf "$T"
}

# Kinds that no process can hold: a record only a newer writer makes.
NO_PROCESS=" vma.other "

# hold KIND DIR [WRAPPER...]: starts the holder of KIND in DIR, sets HPID;
# its outside helper, if any, goes into PIDS too.
hold() {
  local k=$1 d=$2
  shift 2
  mkdir -p "$d"
  only_std setsid "$@" "$WL/holder" "$k" "$d" > "$d/out" 2>&1 < /dev/null &
  HPID=$!
  PIDS+=("$HPID")
  wait_line "$d/out" '^(READY|FAIL)' 20
  grep -q '^READY' "$d/out" || { cat "$d/out"; return 1; }
  local o
  o=$(info outside "$d/out")
  [ -z "$o" ] || PIDS+=("$o")
}

# passes DIR PID: the holder in DIR checks itself (SIGUSR2) and says PASS.
passes() {
  kill -USR2 "$2"
  wait_line "$1/out" '^(PASS|FAIL)' 20
  grep -q '^PASS' "$1/out" || { echo "holder in $1:"; cat "$1/out"; return 1; }
}

# walk KIND STATUS: the holder of KIND through a default dump.
walk() {
  local k=$1 st=$2 d="$T/$1" out
  case $k in
    vma.hugetlb)  # one huge page for it, put back in teardown
      HUGE_OLD=$(cat /proc/sys/vm/nr_hugepages)
      echo $((HUGE_OLD + 1)) > /proc/sys/vm/nr_hugepages ;;
    task.cgroup.v2)
      [ "$(stat -f -c %T "$CGFS" 2>/dev/null)" = cgroup2fs ] || { echo "no cgroup2 at $CGFS"; return 1; }
      CGDIR=$CGFS/ck-restorable-$$-$RANDOM
      mkdir "$CGDIR"
      export CK_HOLDER_CGROUP=$CGDIR CK_HOLDER_CGPATH=${CGDIR#"$CGFS"} ;;
  esac
  if [ "$k" = fd.tty ]; then  # on a terminal of script(1), as a job of its shell
    mkdir -p "$d"
    only_std setsid script -qfec "$WL/holder fd.tty '$d' > '$d/out' 2>&1; :" /dev/null < /dev/null > /dev/null 2>&1 &
    PIDS+=("$!")
    wait_line "$d/out" '^(READY|FAIL)' 20
    HPID=$(awk '/^READY/ {print $2}' "$d/out")
    [ -n "$HPID" ] || { cat "$d/out"; return 1; }
    PIDS+=("$HPID")
  else
    hold "$k" "$d"
  fi
  local kids
  kids=$(cat /proc/"$HPID"/task/*/children 2>/dev/null)
  out=$(ck-dump -t "$HPID" -D "$d/img" 2>&1)
  local rc=$?
  case $st in
    supported|needs-state)  # needs-state: its stage is in every dump's pipeline
      [ "$rc" = 0 ] || { echo "$k: the dump failed: $out"; return 1; }
      gone "$HPID"
      # its children too, reaped by whoever inherited them (a killed
      # stopped child is a zombie for a moment): their pids are restored
      local c i
      for c in $kids; do
        for ((i = 0; i < 250; i++)); do [ -e /proc/"$c" ] || break; sleep 0.02; done
      done
      if [ "$k" = fd.tty ]; then
        only_std setsid script -qfec "ck-restore --shell-job -D '$d/img' 2> '$d/restore.err'" /dev/null < /dev/null > /dev/null 2>&1 &
        PIDS+=("$!")
        local i
        for ((i = 0; i < 500; i++)); do [ "$(task_alive "$HPID")" = 1 ] && break; sleep 0.02; done
        [ "$(task_alive "$HPID")" = 1 ] || { echo "$k: not restored: $(cat "$d/restore.err")"; return 1; }
      else
        out=$(ck-restore -D "$d/img" -d --pidfile "$d/pid" 2>&1) || { echo "$k: the restore failed: $out"; return 1; }
        [ "$(cat "$d/pid")" = "$HPID" ] || { echo "$k: restored as pid $(cat "$d/pid"), not $HPID"; return 1; }
      fi
      passes "$d" "$HPID" || { echo "$k: restored wrong"; return 1; } ;;
    *)
      [ "$rc" = 1 ] || { echo "$k ($st): dump status $rc, not 1: $out"; return 1; }
      case $out in
        *"unable to dump "*"($k)"*) ;;
        *) echo "$k ($st): the refusal does not name the kind: $out"; return 1 ;;
      esac
      [ ! -e "$d/img/manifest" ] || { echo "$k: an image was stored"; return 1; }
      ! any_stopped "$HPID" || { echo "$k: left stopped"; return 1; }
      passes "$d" "$HPID" || { echo "$k: the refused dump changed it"; return 1; } ;;
  esac
  kill -9 "$HPID" 2>/dev/null
  if [ "$k" = vma.hugetlb ]; then
    gone "$HPID"
    echo "$HUGE_OLD" > /proc/sys/vm/nr_hugepages
    HUGE_OLD=
  fi
  echo "$k: $st: ok"
}

@test "every kind of the list: dumped and restored right, or refused at dump by name with the process unchanged" {
  run ck-crit kinds
  assert_success
  echo "$output" > "$T/kinds"
  # the holder knows every kind (and no other)
  "$WL/holder" | sort > "$T/held"
  cut -d' ' -f1 "$T/kinds" | while read -r k; do
    case $NO_PROCESS in *" $k "*) continue ;; esac
    echo "$k"
  done | sort > "$T/listed"
  diff -u "$T/listed" "$T/held"
  local k st failed=0
  while read -r k st; do
    case $NO_PROCESS in *" $k "*) continue ;; esac
    walk "$k" "$st" || failed=1
  done < "$T/kinds"
  [ "$failed" = 0 ]
}

# inject KIND BASE.json: see tests/kinds_inject.py.
inject() { python3 "$CK_TOP/tests/kinds_inject.py" "$@"; }

@test "for every kind a stream can carry, ck-store put refuses what ck-restore would refuse, by the same words" {
  start_wl counter 1
  run ck-dump -t "$WPID" -D "$T/base"
  assert_success
  gone "$WPID"
  ck-crit decode -D "$T/base" > "$T/base.json"
  local k st n=0 put rest prc rrc
  while read -r k st; do
    inject "$k" "$T/base.json" > "$T/$k.json"
    [ -s "$T/$k.json" ] || continue
    n=$((n + 1))
    ck-crit encode < "$T/$k.json" > "$T/$k.ck"
    prc=0 rrc=0
    put=$(ck-store put -D "$T/img-$k" < "$T/$k.ck" 2>&1) || prc=$?
    if [ "$st" = supported ]; then
      [ "$prc" = 0 ] || { echo "$k: put refused a supported kind: $put"; return 1; }
      continue
    fi
    rest=$(ck-restore -d < "$T/$k.ck" 2>&1) || rrc=$?
    [ "$(task_alive "$WPID")" = 0 ] || { echo "$k: ck-restore left pid $WPID running ($rrc: $rest)"; ps -o pid,ppid,stat,cmd -p "$WPID"; kill -9 "$WPID"; return 1; }
    case $st in
      external)
        [ "$prc" = 0 ] || { echo "$k: put refused an accepted external resource: $put"; return 1; }
        [ "$rrc" = 1 ] && [[ $rest == *"--inherit-fd"*"($k)"* ]] || { echo "$k: restore: $rest"; return 1; } ;;
      *)
        [ "$prc" = 1 ] && [[ $put == *"ck-store: unable to dump "*"($k)"* ]] || { echo "$k: put: $put"; return 1; }
        [ ! -e "$T/img-$k/manifest" ] || { echo "$k: put stored it"; return 1; }
        [ "$rrc" = 1 ] && [[ $rest == *"ck-restore: unable to restore "*"($k)"* ]] || { echo "$k: restore: $rest"; return 1; }
        # the same subject and reason, "dump" at the sink, "restore" at restore
        [ "${put#ck-store: unable to dump }" = "${rest#ck-restore: unable to restore }" ] ||
          { echo "$k: put and restore disagree: '$put' / '$rest'"; return 1; } ;;
    esac
  done < <(ck-crit kinds)
  [ "$n" -ge 45 ]
}

@test "README's table of resource kinds is the list's (make readme-kinds rewrites it)" {
  run ck-crit kinds --markdown
  assert_success
  echo "$output" > "$T/table"
  sed -n '/^<!-- kinds: /,/^<!-- end of kinds -->/p' "$CK_TOP/README.md" | sed '1d;$d' > "$T/readme"
  diff -u "$T/table" "$T/readme"
}
