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
