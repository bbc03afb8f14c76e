# A bash loop appending numbered lines to a file: after a restore the
# numbers go on without a gap or a repeat.
i=0; while :; do i=$((i+1)); echo $i >> "$1"; sleep 0.01; done
