# Hardware report: DMI identity, disks (disks.sh) and NICs, as the JSON body of POST /hardware.

nic_list() { # physical NICs: type 1 (ether) with a device behind them
  for _i in "$NC_SYS"/class/net/*; do
    [ -e "$_i/device" ] || continue
    [ "$(_rd "$_i/type")" = 1 ] || continue
    echo "${_i##*/}"
  done
}

nic_mac() { _rd "$NC_SYS/class/net/$1/address"; }
nic_driver() { _dr=$(readlink "$NC_SYS/class/net/$1/device/driver" 2>/dev/null); printf '%s' "${_dr##*/}"; }
nic_speed() { _sp=$(_rd "$NC_SYS/class/net/$1/speed"); case "$_sp" in ''|-*) echo null ;; *) json_num "$_sp" ;; esac; }

nics_json() {
  _first=1; printf '['
  for _n in $(nic_list); do
    [ $_first = 1 ] || printf ','
    _first=0
    printf '{"name":%s,"mac":%s,"driver":%s,"speed":%s}' "$(json_str "$_n")" "$(json_str "$(nic_mac "$_n")")" \
      "$(json_str "$(nic_driver "$_n")")" "$(nic_speed "$_n")"
  done
  printf ']'
}

dmi_json() {
  _dmi="$NC_SYS/class/dmi/id"
  printf '{"vendor":%s,"model":%s,"serial":%s,"uuid":%s}' "$(json_str "$(_rd "$_dmi/sys_vendor")")" \
    "$(json_str "$(_rd "$_dmi/product_name")")" "$(json_str "$(_rd "$_dmi/product_serial")")" \
    "$(json_str "$(_rd "$_dmi/product_uuid")")"
}

# The firmware's Secure Boot state: "on"/"off" from the SecureBoot EFI variable (4 attribute bytes,
# then one data byte), "bios" without EFI, "" when the variable cannot be read (efivarfs missing).
secure_boot() {
  [ -d "$NC_SYS/firmware/efi" ] || { echo bios; return; }
  _sbv="$NC_SYS/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
  # Firmware without Secure Boot support has no such variable: that is "off".
  [ -e "$_sbv" ] || { [ -d "$NC_SYS/firmware/efi/efivars" ] && [ -n "$(ls "$NC_SYS/firmware/efi/efivars" 2>/dev/null)" ] && echo off; return; }
  # Read the whole variable: efivarfs files cannot seek, and busybox od -j then reads from byte 0.
  set -- $(od -An -tu1 <"$_sbv" 2>/dev/null)
  case "${5:-}" in
    1) echo on ;;
    0) echo off ;;
  esac
}

hardware_json() {
  _sb=$(secure_boot)
  printf '{"dmi":%s,"disks":%s,"nics":%s%s}' "$(dmi_json)" "$(disks_json)" "$(nics_json)" \
    "$([ -n "$_sb" ] && printf ',"secureBoot":%s' "$(json_str "$_sb")")"
}
