# The stages of a full dump, listed once.  Sourced by every pipeline that
# dumps a tree (ck-dump, ck-predump; ck-migrate and ck-report later), so a
# stage added here is in every one of them.  POSIX sh.
#
# ck_dump_stages MEMREAD_ARGS: the stages between ck-freeze and the sink, as
# a pipeline for sh -c.  MEMREAD_ARGS (shell words, expanded by that sh) go
# to ck-memread.  The order is the stream's: ck-memread appends the layouts
# and pages, ck-cgdump the cgroup v2 subtree.
ck_dump_stages() {
  echo "ck-memread $1 | ck-cgdump"
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
