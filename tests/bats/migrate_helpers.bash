# Two test "hosts" on this machine for ck-migrate: network namespaces
# joined by a veth pair, each with its own sshd (keys made here), its own
# mount namespace with its own /run, and, at the destination, its own pid
# namespace with its own /proc.  The file systems are shared (as shared
# storage would be).  Load after helpers.bash.
#
#   mk_hosts         makes them; sets SRC_NS DST_NS SRC_IP DST_IP SSH_CFG
#                    and CK_MIGRATE_SSH (the ssh command ck-migrate uses)
#   on_src CMD...    runs CMD on the source host (its netns and mount ns)
#   on_dst CMD...    runs CMD on the destination (netns, mount ns, pid ns)
#   rm_hosts         removes everything mk_hosts made; safe to call twice,
#                    and after a partial mk_hosts
# Everything is named ck-mig-<pid of the test>-*, so two runs never meet.

MIG_TAG=
mk_hosts() {
  MIG_TAG=ck-mig-$$
  SRC_NS=$MIG_TAG-src DST_NS=$MIG_TAG-dst
  # An address pair of its own per run: 10.213.X.1/2 with X from the pid.
  local x=$(($$ % 250 + 1))
  SRC_IP=10.213.$x.1 DST_IP=10.213.$x.2
  ip netns add "$SRC_NS" && ip netns add "$DST_NS" || return 1
  ip link add "${MIG_TAG#ck-}a" netns "$SRC_NS" type veth peer name "${MIG_TAG#ck-}b" netns "$DST_NS" || return 1
  ip -n "$SRC_NS" addr add "$SRC_IP/24" dev "${MIG_TAG#ck-}a"
  ip -n "$DST_NS" addr add "$DST_IP/24" dev "${MIG_TAG#ck-}b"
  local ns
  for ns in "$SRC_NS" "$DST_NS"; do
    ip -n "$ns" link set lo up
  done
  ip -n "$SRC_NS" link set "${MIG_TAG#ck-}a" up
  ip -n "$DST_NS" link set "${MIG_TAG#ck-}b" up
  mkdir -p "$T/ssh" && chmod 700 "$T/ssh"
  ssh-keygen -q -t ed25519 -N '' -f "$T/ssh/id" || return 1
  ssh-keygen -q -t ed25519 -N '' -f "$T/ssh/host" || return 1
  cp "$T/ssh/id.pub" "$T/ssh/authorized_keys"
  local path="$CK_TOP/build/bin:$CK_TOP/pipelines:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  local h
  for h in src dst; do
    cat > "$T/ssh/sshd_$h" <<EOF
ListenAddress $( [ $h = src ] && echo "$SRC_IP" || echo "$DST_IP" )
HostKey $T/ssh/host
AuthorizedKeysFile $T/ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile none
MaxSessions 64
MaxStartups 64
SetEnv PATH=$path CK_MIGRATE_HOST=$h
EOF
  done
  cat > "$T/ssh/config" <<EOF
Host *
  IdentityFile $T/ssh/id
  IdentitiesOnly yes
  UserKnownHostsFile /dev/null
  StrictHostKeyChecking no
  LogLevel ERROR
  BatchMode yes
  ConnectTimeout 5
  ServerAliveInterval 1
  ServerAliveCountMax 3
EOF
  SSH_CFG=$T/ssh/config
  export CK_MIGRATE_SSH="ssh -F $SSH_CFG"
  # Each host: a mount namespace with a /run of its own (and /run/sshd,
  # which sshd's privilege separation wants); the destination also a pid
  # namespace, with /proc mounted for it.  sshd -D stays in front: its pid
  # (in our pid namespace) names the host for nsenter.
  only_std nsenter --net=/run/netns/"$SRC_NS" unshare -m --propagation private sh -c \
    'mount -t tmpfs -o mode=755 ck-run /run && mkdir -p /run/sshd && exec /usr/sbin/sshd -D -e -f "$1"' \
    sh "$T/ssh/sshd_src" > "$T/sshd_src.log" 2>&1 < /dev/null &
  SRC_SSHD=$!
  only_std nsenter --net=/run/netns/"$DST_NS" unshare -m -p -f --propagation private --mount-proc sh -c \
    'mount -t tmpfs -o mode=755 ck-run /run && mkdir -p /run/sshd && exec /usr/sbin/sshd -D -e -f "$1"' \
    sh "$T/ssh/sshd_dst" > "$T/sshd_dst.log" 2>&1 < /dev/null &
  DST_WRAP=$!
  local i
  for ((i = 0; i < 100; i++)); do
    ip netns exec "$SRC_NS" ssh -F "$SSH_CFG" "root@$DST_IP" true 2>/dev/null &&
      ip netns exec "$DST_NS" ssh -F "$SSH_CFG" "root@$SRC_IP" true 2>/dev/null && break
    sleep 0.1
  done
  [ $i -lt 100 ] || { echo "test hosts: sshd did not come up" >&2; cat "$T"/sshd_*.log >&2; return 1; }
}

# The listening sshd of each host, found by its network namespace (and, at
# the destination, by being pid 1 of its pid namespace).
src_sshd() {
  local p
  for p in $(pgrep -x sshd); do
    [ "$(readlink /proc/$p/ns/net)" = "$(ip netns exec "$SRC_NS" readlink /proc/self/ns/net)" ] && { echo "$p"; return; }
  done
}
dst_sshd() {
  local p
  for p in $(pgrep -x sshd); do
    [ "$(readlink /proc/$p/ns/net)" = "$(ip netns exec "$DST_NS" readlink /proc/self/ns/net)" ] || continue
    grep -q "^NSpid:.*[[:space:]]1$" /proc/$p/status && { echo "$p"; return; }
  done
}

on_src() { nsenter -t "$(src_sshd)" -n -m -- "$@"; }
on_dst() { nsenter -t "$(dst_sshd)" -n -m -p -- "$@"; }

rm_hosts() {
  [ -n "$MIG_TAG" ] || return 0
  local p
  # The hosts' processes: everything in their network namespaces (the
  # sshds, what ran there), by pid, from ip netns pids.
  for ns in "$SRC_NS" "$DST_NS"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
  done
  [ -n "${DST_WRAP:-}" ] && kill -9 "$DST_WRAP" 2>/dev/null
  ip netns del "$SRC_NS" 2>/dev/null
  ip netns del "$DST_NS" 2>/dev/null
  MIG_TAG=
  return 0
}
