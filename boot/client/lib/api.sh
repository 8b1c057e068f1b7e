# Client side of the netclone HTTP API (see boot/client/README.md). Needs NC_SERVER (IP:PORT) and NC_TOKEN.
# busybox wget: non-2xx answers make it exit 1 with "server returned error: HTTP/1.1 NNN ..." on stderr.

NC_API_TIMEOUT=${NC_API_TIMEOUT:-30}
NC_API_ERR=/tmp/netclone-api.err

# api_get PATH -> body on stdout; returns 1 with the reason in $NC_API_ERR on failure.
api_get() {
  timeout "$NC_API_TIMEOUT" wget -q -O - \
    --header "Authorization: Bearer $NC_TOKEN" \
    --header "Accept: application/json" \
    "http://$NC_SERVER/api/client/v1/$1" 2>"$NC_API_ERR"
}

# api_post PATH JSON -> body on stdout.
api_post() {
  timeout "$NC_API_TIMEOUT" wget -q -O - \
    --header "Authorization: Bearer $NC_TOKEN" \
    --header "Content-Type: application/json" \
    --header "Accept: application/json" \
    --post-data "$2" \
    "http://$NC_SERVER/api/client/v1/$1" 2>"$NC_API_ERR"
}

# api_retry N CMD... -> runs CMD up to N times, 3 s apart, for calls that are safe to repeat.
api_retry() {
  _n=$1; shift; _i=1
  while :; do
    "$@" && return 0
    [ "$_i" -ge "$_n" ] && return 1
    _i=$((_i + 1)); sleep 3
  done
}

api_error() { sed -n 's/^wget: //p' "$NC_API_ERR" 2>/dev/null | head -n1; }

# Heartbeat: while nbdcopy or the read-back runs, nothing else reaches the server for minutes, and the server
# fails a task whose client stays silent (config client-timeout, 2 min by default). A background loop posts
# the current phase every NC_HEARTBEAT seconds; its own error file keeps $NC_API_ERR for the main calls.
NC_HEARTBEAT=${NC_HEARTBEAT:-5}
NC_HEARTBEAT_PID=""
NC_PHASE_FILE=${NC_PHASE_FILE:-/tmp/netclone-phase}

# heartbeat_start PHASE (transferring|verifying)
heartbeat_start() {
  heartbeat_stop
  echo "$1" >"$NC_PHASE_FILE"
  (
    # Each step runs in the background and is waited for, so a stop ends the loop at once and
    # kills a request still in flight instead of waiting up to its timeout.
    _hb_child=""
    trap '[ -n "$_hb_child" ] && kill "$_hb_child" 2>/dev/null; exit 0' TERM
    while :; do
      timeout 10 wget -q -O /dev/null \
        --header "Authorization: Bearer $NC_TOKEN" \
        --header "Content-Type: application/json" \
        --post-data "{\"phase\":\"$(cat "$NC_PHASE_FILE")\"}" \
        "http://$NC_SERVER/api/client/v1/progress" 2>/tmp/netclone-heartbeat.err &
      _hb_child=$!; wait "$_hb_child"
      sleep "$NC_HEARTBEAT" &
      _hb_child=$!; wait "$_hb_child"
    done
  ) &
  NC_HEARTBEAT_PID=$!
}

heartbeat_phase() { echo "$1" >"$NC_PHASE_FILE"; }

heartbeat_stop() {
  [ -n "$NC_HEARTBEAT_PID" ] || return 0
  kill "$NC_HEARTBEAT_PID" 2>/dev/null
  wait "$NC_HEARTBEAT_PID" 2>/dev/null
  NC_HEARTBEAT_PID=""
}
