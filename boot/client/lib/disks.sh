# Disk discovery and the target-disk rule. Reads sysfs under $NC_SYS (default /sys) so tests can feed a
# fake tree.

NC_SYS=${NC_SYS:-/sys}

_rd() { # file -> first line, trimmed; empty when missing/unreadable
  [ -r "$1" ] || return 0
  head -n1 "$1" 2>/dev/null | sed 's/^[[:space:]]*//; s/[[:space:]]*$//'
}

# disk_list -> names of whole disks worth considering (no ram, loop, optical, nbd, zram, empty readers).
disk_list() {
  for _d in "$NC_SYS"/block/*; do
    [ -e "$_d" ] || continue
    _n=${_d##*/}
    case "$_n" in ram*|loop*|sr*|nbd*|zram*|fd*|dm-*|md*|mtdblock*) continue ;; esac
    [ "$(_rd "$_d/size")" = 0 ] && continue
    echo "$_n"
  done
}

disk_size() { echo $(( $(_rd "$NC_SYS/block/$1/size") * 512 )); } # sysfs size is in 512-byte units
disk_lss() { _rd "$NC_SYS/block/$1/queue/logical_block_size"; }
disk_pss() { _rd "$NC_SYS/block/$1/queue/physical_block_size"; }
disk_rotational() { [ "$(_rd "$NC_SYS/block/$1/queue/rotational")" = 1 ] && echo true || echo false; }
disk_removable() { [ "$(_rd "$NC_SYS/block/$1/removable")" = 1 ] && echo true || echo false; }
disk_model() { _rd "$NC_SYS/block/$1/device/model"; }

# disk_transport NAME -> nvme | usb | sata | virtio | scsi | unknown, from where the disk sits in the device tree.
disk_transport() {
  _p=$(readlink -f "$NC_SYS/block/$1" 2>/dev/null)
  case "$_p" in
    */usb[0-9]*) echo usb ;;
    */nvme*) echo nvme ;;
    */virtio[0-9]*) echo virtio ;;
    */ata[0-9]*) echo sata ;;
    */host[0-9]*|*/target[0-9]*) echo scsi ;;
    *) echo unknown ;;
  esac
}

# disk_serial NAME -> serial number: virtio/nvme expose it as text; SCSI/SATA through VPD page 0x80.
disk_serial() {
  _s=$(_rd "$NC_SYS/block/$1/serial")
  [ -n "$_s" ] || _s=$(_rd "$NC_SYS/block/$1/device/serial")
  if [ -z "$_s" ] && [ -r "$NC_SYS/block/$1/device/vpd_pg80" ]; then
    # 4-byte page header, then the serial padded with spaces.
    _s=$(tail -c +5 "$NC_SYS/block/$1/device/vpd_pg80" | tr -d '\000' | sed 's/^[[:space:]]*//; s/[[:space:]]*$//')
  fi
  printf '%s' "$_s"
}

disk_json() {
  printf '{"name":%s,"size":%s,"model":%s,"serial":%s,"logicalSectorSize":%s,"physicalSectorSize":%s,"rotational":%s,"removable":%s,"transport":%s}' \
    "$(json_str "$1")" "$(disk_size "$1")" "$(json_str "$(disk_model "$1")")" "$(json_str "$(disk_serial "$1")")" \
    "$(json_num "$(disk_lss "$1")")" "$(json_num "$(disk_pss "$1")")" "$(disk_rotational "$1")" \
    "$(disk_removable "$1")" "$(json_str "$(disk_transport "$1")")"
}

disks_json() {
  _first=1; printf '['
  for _n in $(disk_list); do
    [ $_first = 1 ] || printf ','
    _first=0; disk_json "$_n"
  done
  printf ']'
}

# choose_disk SERIAL IMAGE_SIZE IMAGE_SECTOR -> prints the target disk name. SERIAL may be empty (then the
# only internal disk is taken); IMAGE_SIZE/IMAGE_SECTOR empty for capture. On refusal prints the reason on
# stderr and returns 1.
choose_disk() {
  _want=$1; _isize=$2; _isect=$3; _pick=""; _all=""
  if [ -n "$_want" ]; then
    for _n in $(disk_list); do
      _all="$_all $_n"
      [ "$(disk_serial "$_n")" = "$_want" ] && _pick="$_pick $_n"
    done
    set -- $_pick
    if [ $# = 0 ]; then echo "no disk has serial '$_want' (disks:${_all:- none}); check the host's disk serial in the task" >&2; return 1; fi
    if [ $# -gt 1 ]; then echo "more than one disk has serial '$_want' ($*); cannot tell which to use" >&2; return 1; fi
  else
    for _n in $(disk_list); do
      _all="$_all $_n"
      [ "$(disk_removable "$_n")" = true ] && continue
      [ "$(disk_transport "$_n")" = usb ] && continue
      _pick="$_pick $_n"
    done
    set -- $_pick
    if [ $# = 0 ]; then echo "no internal disk found (disks:${_all:- none}); check cabling/BIOS storage mode" >&2; return 1; fi
    if [ $# -gt 1 ]; then echo "more than one internal disk ($*); set the disk serial in the task to choose one" >&2; return 1; fi
  fi
  _n=$1
  if [ -n "$_isect" ] && [ "$(disk_lss "$_n")" != "$_isect" ]; then
    echo "disk $_n has $(disk_lss "$_n")-byte logical sectors but the image has $_isect-byte sectors; refusing" >&2; return 1
  fi
  if [ -n "$_isize" ] && [ "$(disk_size "$_n")" -lt "$_isize" ]; then
    echo "disk $_n is $(disk_size "$_n") bytes, smaller than the image ($_isize bytes); refusing" >&2; return 1
  fi
  echo "$_n"
}
