# Disk transfers: the imaging agent (chunks transport), nbdcopy (nbd transport) and the read-back digest.

# ---- the imaging agent (src/agent, shipped by boot/build.sh) ------------------------------------
NC_NODE=${NC_NODE:-/usr/bin/node}
NC_AGENT=${NC_AGENT:-/opt/netclone/dist/agent/main.js}
NC_AGENT_OUT=${NC_AGENT_OUT:-/tmp/agent.out}
NC_AGENT_ERR=${NC_AGENT_ERR:-/tmp/agent.err}

# nc_agent capture|deploy DEVICE NAME SIZE SECTOR_SIZE [SERIAL] -> runs the agent against DEVICE (it posts
# start, moves the chunks, posts progress itself and, for deploy, reads the disk back). Each stderr line
# is shown on the consoles as it comes and kept in $NC_AGENT_ERR; stdout (one JSON line) goes to
# $NC_AGENT_OUT. Returns 0 when the agent exited 0. The exit status is kept in a file because the agent
# runs inside a pipeline.
nc_agent() {
  _kind=$1; _dev=$2; _name=$3; _size=$4; _lss=$5; _serial=${6:-}
  rm -f "$NC_AGENT_OUT.rc" "$NC_AGENT_OUT"; : >"$NC_AGENT_ERR"
  set -- "$_kind" --server "http://$NC_SERVER" --token "$NC_TOKEN" --disk "$_dev" --disk-name "$_name" \
    --size "$_size" --sector-size "$_lss"
  [ -n "$_serial" ] && set -- "$@" --serial "$_serial"
  { "$NC_NODE" "$NC_AGENT" "$@" 2>&1 >"$NC_AGENT_OUT" </dev/null; echo $? >"$NC_AGENT_OUT.rc"; } | _agent_lines
  _rc=$(cat "$NC_AGENT_OUT.rc" 2>/dev/null)
  [ "$_rc" = 0 ]
}

_agent_lines() {
  while IFS= read -r _l; do
    say "$_l"
    printf '%s\n' "$_l" >>"$NC_AGENT_ERR"
  done
}

# nc_agent_result -> the agent's stdout JSON line (its outcome).
nc_agent_result() { head -n 1 "$NC_AGENT_OUT" 2>/dev/null; }

# nc_agent_error -> the agent's reason for failing: the last line it wrote on stderr.
nc_agent_error() {
  _last=$(grep -v '^[[:space:]]*$' "$NC_AGENT_ERR" 2>/dev/null | tail -n 1 | sed 's/^agent: //')
  [ -n "$_last" ] && { printf '%s' "$_last"; return 0; }
  printf 'the imaging agent exited with status %s and gave no reason' "$(cat "$NC_AGENT_OUT.rc" 2>/dev/null || echo '?')"
}

# ---- nbdcopy ----------------------------------------------------------------------------------

# nc_copy SRC DST -> runs nbdcopy, printing a progress line every 10 % on the consoles.
# Its exit status is kept in a file because it runs inside a pipeline.
nc_copy() {
  rm -f /tmp/nbdcopy.rc
  { nbdcopy --flush --progress=3 "$1" "$2" 3>&1 1>&2 2>/tmp/nbdcopy.err; echo $? >/tmp/nbdcopy.rc; } | _progress_lines
  _rc=$(cat /tmp/nbdcopy.rc 2>/dev/null)
  [ "$_rc" = 0 ]
}

_progress_lines() { # reads "N/100" lines, prints every 10 %
  _last=-10
  while IFS=/ read -r _p _rest; do
    case "$_p" in ''|*[!0-9]*) continue ;; esac
    if [ "$_p" -ge $((_last + 10)) ]; then say "transfer: $_p %"; _last=$_p; fi
  done
}

nc_copy_error() { tail -n 3 /tmp/nbdcopy.err 2>/dev/null | tr '\n' ' '; }

# image_digest DEVICE SIZE CHUNK -> sha256 over the lines "<sha256 hex of chunk i>\n" for every chunk of
# the first SIZE bytes of DEVICE (the last chunk may be shorter). Same definition as the server's.
# Starting processes is what costs most on a slow CPU, so chunks are copied into a scratch directory
# a batch at a time (one dd each) and hashed by one sha256sum per batch.
DIGEST_BATCH=${DIGEST_BATCH:-32}
image_digest() {
  _dev=$1; _size=$2; _chunk=$3
  case "$_size$_chunk" in *[!0-9]*|'') echo "image_digest: bad size/chunk '$_size' '$_chunk'" >&2; return 1 ;; esac
  [ "$_chunk" -gt 0 ] || { echo "image_digest: chunk size must be > 0" >&2; return 1; }
  _count=$(( (_size + _chunk - 1) / _chunk ))
  _scratch=${TMPDIR:-/tmp}/netclone-digest.$$
  rm -rf "$_scratch" && mkdir -p "$_scratch" || return 1
  _i=0
  while [ "$_i" -lt "$_count" ]; do
    _n=$DIGEST_BATCH
    [ $((_i + _n)) -gt "$_count" ] && _n=$((_count - _i))
    rm -f "$_scratch"/c.*
    _j=0
    while [ "$_j" -lt "$_n" ]; do
      _k=$((_i + _j))
      # Fixed-width names keep the shell's sorted glob in disk order.
      _f="$_scratch/c.$((1000000000 + _k))"
      if [ $(( (_k + 1) * _chunk )) -le "$_size" ]; then
        dd if="$_dev" of="$_f" bs="$_chunk" skip="$_k" count=1 iflag=fullblock 2>/dev/null || return 1
      else
        dd if="$_dev" bs="$_chunk" skip="$_k" count=1 iflag=fullblock 2>/dev/null | head -c $(( _size - _k * _chunk )) >"$_f" || return 1
      fi
      _j=$((_j + 1))
    done
    _got=0
    sha256sum "$_scratch"/c.* >"$_scratch/sums" || { echo "image_digest: reading chunks $_i.. of $_dev failed" >&2; return 1; }
    while read -r _h _; do
      [ ${#_h} = 64 ] || { echo "image_digest: bad hash for a chunk of $_dev" >&2; return 1; }
      printf '%s\n' "$_h"
      _got=$((_got + 1))
    done <"$_scratch/sums"
    [ "$_got" = "$_n" ] || { echo "image_digest: read $_got of $_n chunks at chunk $_i of $_dev" >&2; return 1; }
    _i=$((_i + _n))
  done | sha256sum | { read -r _d _; echo "$_d"; }
  _rc=$?
  rm -rf "$_scratch"
  return $_rc
}
