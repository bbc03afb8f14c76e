#!/usr/bin/env bats
# The logging engine end to end: nothing lost on a crash, filtering by level
# and module through CK_LOG / -v / -q / --log-file, and the logs of several
# pipeline stages merged into one timeline.  See ck-log(7).
load helpers

LT="$CK_TOP/build/unit/log_test"

# count_crash FILE N: every "crash message I" for I in 0..N-1 is in FILE once.
check_crash_log() {
  local f=$1 n=$2
  run sh -c "grep -o 'crash message [0-9]*\$' '$f' | sort -u | wc -l"
  assert_output "$n"
  run sh -c "grep -c 'crash message' '$f'"
  assert_output "$n"
  run sh -c "grep -vcE '^[0-9]+\\.[0-9]{9} log_test\\[[0-9]+\\] debug logtest: crash message [0-9]+\$' '$f'"
  assert_output 0
}

@test "log: abort() in the middle of a run loses no message" {
  # CK_LOG_FLUSHER=0: no background writer, so every message is still in
  # the rings when the process dies, and only the crash handler can save it
  CK_LOG_FLUSHER=0 run "$LT" crash abort 20000 "$T/log" 4
  [ "$status" -eq 134 ]
  check_crash_log "$T/log" 20000
}

@test "log: SIGSEGV in the middle of a run loses no message" {
  CK_LOG_FLUSHER=0 run "$LT" crash segv 20000 "$T/log" 4
  [ "$status" -eq 139 ]
  check_crash_log "$T/log" 20000
}

@test "log: SIGBUS, SIGFPE, SIGILL lose no message; with the flusher running too" {
  local how
  for how in bus fpe ill; do
    rm -f "$T/log"
    CK_LOG_FLUSHER=0 run "$LT" crash "$how" 3000 "$T/log" 2
    [ "$status" -gt 128 ]
    check_crash_log "$T/log" 3000
  done
  rm -f "$T/log"
  run "$LT" crash segv 50000 "$T/log" 8
  [ "$status" -eq 139 ]
  check_crash_log "$T/log" 50000
}

@test "log: a failing exit writes every message" {
  CK_LOG_FLUSHER=0 run "$LT" crash exit 7000 "$T/log"
  [ "$status" -eq 1 ]
  check_crash_log "$T/log" 7000
}

@test "log: the default level shows errors and warnings in the user's shape" {
  run "$LT" tool
  assert_success
  assert_output "ck-logtest: alpha error 0
ck-logtest: warning: alpha warn 0
ck-logtest: beta error 0
ck-logtest: warning: beta warn 0"
}

@test "log: -q keeps errors only, -v adds info, -vv debug" {
  run "$LT" tool -q
  assert_output "ck-logtest: alpha error 0
ck-logtest: beta error 0"
  run "$LT" tool -v
  assert_line --regexp '^[0-9]+\.[0-9]{9} ck-logtest\[[0-9]+\] info alpha: alpha info 0$'
  refute_output --partial "debug 0"
  run "$LT" tool -vv
  assert_line --regexp '\] debug beta: beta debug 0$'
  refute_output --partial "trace 0"
}

@test "log: CK_LOG sets levels per module; --log-file gets full lines" {
  CK_LOG=all:error,beta:trace run "$LT" tool --log-file "$T/log"
  assert_success
  assert_output ""
  run cut -d' ' -f3- "$T/log"
  assert_output "error alpha: alpha error 0
error beta: beta error 0
warn beta: beta warn 0
info beta: beta info 0
debug beta: beta debug 0
trace beta: beta trace 0"
  CK_LOG=alpha:off run "$LT" tool
  assert_output "ck-logtest: beta error 0
ck-logtest: warning: beta warn 0"
  CK_LOG=beta:bogus run "$LT" tool
  assert_line "ck-logtest: warning: CK_LOG: unknown level in 'beta:bogus'"
}

@test "log: stages of a pipeline append to one file and sort into one timeline" {
  CK_LOG=all:debug "$LT" stage first 3000 --log-file "$T/log" &
  local a=$!
  CK_LOG=all:debug "$LT" stage second 3000 --log-file "$T/log" &
  local b=$!
  PIDS+=("$a" "$b")
  wait "$a"
  wait "$b"
  # every line whole, from one of the two stages
  run grep -cE '^[0-9]+\.[0-9]{9} ck-stage\[[0-9]+\] debug logtest: (first|second) step [0-9]+$' "$T/log"
  assert_output 6000
  run wc -l < "$T/log"
  assert_output 6000
  # sorted by time, each stage's own steps come out in order
  sort -s -n -k1,1 "$T/log" > "$T/merged"
  run sh -c "grep ' first step' '$T/merged' | awk '{print \$NF}' | awk 'NR-1 != \$1 {bad=1} END {print bad ? \"unordered\" : \"ordered\"}'"
  assert_output ordered
  run sh -c "grep ' second step' '$T/merged' | awk '{print \$NF}' | awk 'NR-1 != \$1 {bad=1} END {print bad ? \"unordered\" : \"ordered\"}'"
  assert_output ordered
  # and the two stages interleave in time (they ran at once)
  run sh -c "awk '{print \$5}' '$T/merged' | uniq | wc -l"
  [ "$output" -gt 2 ]
}
