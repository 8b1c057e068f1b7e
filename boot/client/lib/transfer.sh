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
image_digest() {
  _dev=$1; _size=$2; _chunk=$3
  case "$_size$_chunk" in *[!0-9]*|'') echo "image_digest: bad size/chunk '$_size' '$_chunk'" >&2; return 1 ;; esac
  [ "$_chunk" -gt 0 ] || { echo "image_digest: chunk size must be > 0" >&2; return 1; }
  _count=$(( (_size + _chunk - 1) / _chunk ))
  _i=0
  while [ "$_i" -lt "$_count" ]; do
    _len=$_chunk
    [ $(( (_i + 1) * _chunk )) -gt "$_size" ] && _len=$(( _size - _i * _chunk ))
    _h=$(dd if="$_dev" bs="$_chunk" skip="$_i" count=1 iflag=fullblock 2>/dev/null | head -c "$_len" | sha256sum) || return 1
    _h=${_h%% *}
    [ ${#_h} = 64 ] || { echo "image_digest: reading chunk $_i of $_dev failed" >&2; return 1; }
    printf '%s\n' "$_h"
    _i=$((_i + 1))
  done | sha256sum | { read -r _d _; echo "$_d"; }
}
