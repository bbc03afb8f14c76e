# The stages of a full dump, listed once.  Sourced by every pipeline that
# dumps a tree (ck-dump, ck-predump; ck-migrate and ck-report later), so a
# stage added here is in every one of them.  POSIX sh.
#
# ck_dump_script MEMREAD_ARGS SINK: the sh -c script of a whole dump: the
# stages between ck-freeze and the sink, then SINK.  MEMREAD_ARGS and SINK
# are shell words expanded by that sh.  The order is the stream's:
# ck-memread appends the layouts and pages, ck-sockdump puts the socket
# state before the first layout (see ck-stream(5)), ck-cgdump appends the
# cgroup v2 subtree.
#
# Its status is the one that says why the dump failed: a stage that refuses
# (status 1) leaves the sink a cut stream (status 3), and sh would report
# the sink's.  So each stage's failure is noted in order, and the script
# ends with the first one noted, unless the sink itself refused (1) or was
# misused (2): then upstream failures are the consequence (a broken pipe).
ck_dump_script() {
  cat <<EOF
st=\$(mktemp) || exit 1
stage() { "\$@"; s=\$?; [ \$s = 0 ] || echo \$s >> "\$st"; return \$s; }
stage ck-memread $1 | stage ck-sockdump | stage ck-cgdump | $2
rc=\$?; first=\$(head -n 1 "\$st"); rm -f "\$st"
case \$rc in 0|1|2) exit \$rc ;; esac
exit \${first:-\$rc}
EOF
}

# ck_version NAME: "NAME VERSION", the version of the tools it runs.
ck_version() {
  v=$(ck-freeze --version) || exit 1
  echo "$1 ${v#ck-freeze }"
}

# ck_quote WORD: WORD quoted for sh.
ck_quote() {
  printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
}
