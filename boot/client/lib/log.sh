# Console output. The kernel sends /dev/console to the LAST console= only; the technician may look at
# the screen (tty0) or the serial port (ttyS0), so every line goes to each console named on the command line.

NC_CONSOLES=${NC_CONSOLES:-}

log_init_consoles() { # cmdline
  NC_CONSOLES=""
  for _a in $1; do
    case "$_a" in
      console=*) _c=${_a#console=}; _c=${_c%%,*}; [ -c "/dev/$_c" ] && NC_CONSOLES="$NC_CONSOLES /dev/$_c" ;;
    esac
  done
  [ -n "$NC_CONSOLES" ] || NC_CONSOLES=/dev/console
}

say() {
  if [ -z "$NC_CONSOLES" ]; then printf 'netclone: %s\n' "$*" >&2; return 0; fi
  for _c in $NC_CONSOLES; do printf 'netclone: %s\n' "$*" >"$_c" 2>/dev/null; done
  return 0
}
