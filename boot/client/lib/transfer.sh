# Disk transfers with nbdcopy and the read-back digest.

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
