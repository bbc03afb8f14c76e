#!/usr/bin/env bats
# The first `make` on a machine without the build packages: deps must have
# installed them before any rule runs a tool from them, though MAKEFLAGS has
# -j.  A stand-in dpkg-query knows no package, a stand-in apt-get "installs"
# by putting protoc (and gcc, which it brings along here) on PATH, slowly,
# so a rule that does not wait for deps runs first and fails.
load helpers

setup() {
  T=$(mktemp -d /tmp/ck-test.XXXXXX)
  PIDS=()
  mkdir -p "$T/bin" "$T/usr"
  # every command of this machine but those the packages bring
  find /usr/local/bin/ /usr/bin/ /bin/ -maxdepth 1 ! -type d -printf '%f %p\n' | awk '!seen[$1]++ { print $2 }' |
    grep -Ev '/(protoc|protoc-.*|gcc|gcc-.*|cc|x86_64-linux-gnu-gcc.*)$' | xargs ln -s -t "$T/usr"
  cat > "$T/bin/dpkg-query" <<'EOF'
#!/bin/sh
exit 1
EOF
  cat > "$T/bin/apt-get" <<EOF
#!/bin/sh
echo "apt-get \$*" >> "$T/apt.log"
case " \$* " in
  *" install "*) sleep 1; ln -sf "$(command -v protoc)" "$T/bin/protoc"; ln -sf "$(command -v gcc)" "$T/bin/gcc"; ln -sf "$(command -v cc)" "$T/bin/cc" ;;
esac
exit 0
EOF
  chmod +x "$T/bin/dpkg-query" "$T/bin/apt-get"
}

# bare_make TARGET...: make in this worktree, building into $T/build, on
# the bare PATH, with nothing of an outer make in the environment.
bare_make() {
  env -i PATH="$T/bin:$T/usr" HOME="$T" LANG=C make -C "$CK_TOP" B="$T/build" "$@"
}

@test "make: the first build on a bare machine waits for deps before protoc and gcc" {
  [ "$(id -u)" = 0 ] || skip "deps installs only as root"
  ! env -i PATH="$T/bin:$T/usr" sh -c 'command -v protoc || command -v gcc || command -v cc'
  run bare_make "$T/build/gen/ck.pb.h" "$T/build/workloads/sleeper"
  echo "$output"
  assert_success
  assert_output --partial "make: installing g++ make protobuf-compiler"
  grep -q "^apt-get .*install.* protobuf-compiler" "$T/apt.log"
  [ -s "$T/build/gen/ck.pb.h" ]
  [ -x "$T/build/workloads/sleeper" ]
}
