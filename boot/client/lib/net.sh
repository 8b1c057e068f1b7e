# Network bring-up: link up every NIC, wait for carrier, DHCP on the first NIC that has one.

NC_CARRIER_WAIT=${NC_CARRIER_WAIT:-20}
NC_UDHCPC_SCRIPT=${NC_UDHCPC_SCRIPT:-/usr/share/netclone/udhcpc.script}

# net_wait_carrier -> prints the first NIC (in nic_list order) with carrier, waiting up to NC_CARRIER_WAIT s.
net_wait_carrier() {
  for _n in $(nic_list); do ip link set "$_n" up 2>/dev/null; done
  _t=0
  while [ "$_t" -le $((NC_CARRIER_WAIT * 2)) ]; do
    for _n in $(nic_list); do
      if [ "$(_rd "$NC_SYS/class/net/$_n/carrier")" = 1 ]; then echo "$_n"; return 0; fi
    done
    sleep 0.5; _t=$((_t + 1))
  done
  return 1
}

# net_dhcp IFACE -> configures IFACE by DHCP (udhcpc runs the script, which sets address/route/DNS).
net_dhcp() {
  udhcpc -i "$1" -s "$NC_UDHCPC_SCRIPT" -n -q -f -t 10 -T 2 -A 3 -V netclone >/tmp/udhcpc.log 2>&1
}

net_addr() { ip -4 -o addr show dev "$1" 2>/dev/null | awk '{print $4; exit}'; }
