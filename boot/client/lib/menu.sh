# Menu mode (netclone.mode=menu on the kernel command line; see boot/client/README.md): the PC booted the
# client with no task, because its loader cannot POST a form (iPXE without PARAM_CMD, a Secure Boot chain).
# A technician logs in here, picks what to do, and the server answers a task id and token, which the rest
# of init uses exactly as if they had come on the kernel command line.
# Reads the answers from stdin and writes the dialog on stdout (init points both at /dev/console), so a test
# can feed it. Needs NC_SERVER and MAC; uses json.sh and api.sh (NC_API_TIMEOUT, NC_API_ERR, api_error).

NC_MENU_TRIES=${NC_MENU_TRIES:-3}
# A PC left at a prompt goes back to the boot menu (and from there to its local disk) instead of waiting for ever.
NC_MENU_IDLE=${NC_MENU_IDLE:-600}
MENU_ERR=""
MENU_REPLY=""

# menu_post PATH JSON-FILE [SESSION] -> answer body on stdout; 1 with the reason in $NC_API_ERR on failure.
# The body goes in a file, not on the command line, where the password would show in ps.
menu_post() {
  if [ -n "$3" ]; then
    timeout "$NC_API_TIMEOUT" wget -q -O - --header "Authorization: Bearer $3" \
      --header "Content-Type: application/json" --header "Accept: application/json" \
      --post-file "$2" "http://$NC_SERVER/api/client/v1/menu/$1" 2>"$NC_API_ERR"
  else
    timeout "$NC_API_TIMEOUT" wget -q -O - \
      --header "Content-Type: application/json" --header "Accept: application/json" \
      --post-file "$2" "http://$NC_SERVER/api/client/v1/menu/$1" 2>"$NC_API_ERR"
  fi
}

# menu_status -> the HTTP status of the last failed menu_post ("" when the server was not reached). The
# server repeats its message in the status line, since busybox wget shows no error body.
menu_status() { sed -n 's/.*HTTP\/[0-9.]* \([0-9][0-9][0-9]\).*/\1/p' "$NC_API_ERR" 2>/dev/null | head -n1; }
menu_reason() { sed -n 's/.*HTTP\/[0-9.]* [0-9][0-9][0-9] *//p' "$NC_API_ERR" 2>/dev/null | head -n1; }

# menu_ask PROMPT -> the answer line in MENU_REPLY; 1 when the console gave none within NC_MENU_IDLE s (or closed).
menu_ask() {
  printf '%s' "$1"
  IFS= read -r -t "$NC_MENU_IDLE" MENU_REPLY || { echo; return 1; }
}

# menu_secret PROMPT -> like menu_ask, without echoing what is typed on a terminal.
menu_secret() {
  printf '%s' "$1"
  if [ -t 0 ]; then
    stty -echo 2>/dev/null
    IFS= read -r -t "$NC_MENU_IDLE" MENU_REPLY; _ms_rc=$?
    stty echo 2>/dev/null
    echo
    return $_ms_rc
  fi
  IFS= read -r -t "$NC_MENU_IDLE" MENU_REPLY || { echo; return 1; }
}

# menu_silent -> 2 (reboot) with the reason in MENU_ERR: nobody answered at the console.
menu_silent() {
  MENU_ERR="no answer on the console for $NC_MENU_IDLE s; nothing was changed"
  return 2
}

# menu_default_image HOSTNAME MAC -> the capture's default image name, like the server's own default: the PC's
# name made into an image name (bytes outside A-Za-z0-9._- become '-'), else pc-<MAC digits>. The client sends
# the name it shows, so the two need not agree on names with non-ASCII letters.
menu_default_image() {
  _mdi=$(printf '%s' "$1" | tr -c 'A-Za-z0-9._-' '-' | sed 's/^[^A-Za-z0-9]*//; s/\.\.*/./g' | cut -c1-64)
  [ -n "$_mdi" ] || _mdi="pc-$(printf '%s' "$2" | tr -d ':')"
  printf '%s' "$_mdi"
}

# menu_login -> 0 with the server's answer in MENU_LOGIN; 1 with the reason in MENU_ERR; 2 when nobody answers.
menu_login() {
  _ml_try=1
  while :; do
    menu_ask "User: " || { menu_silent; return; }
    _ml_user=$MENU_REPLY
    menu_secret "Password: " || { menu_silent; return; }
    _ml_body=${TMPDIR:-/tmp}/netclone-login.$$
    ( umask 077; printf '{"mac":%s,"username":%s,"password":%s}' "$(json_str "$MAC")" "$(json_str "$_ml_user")" \
        "$(json_str "$MENU_REPLY")" >"$_ml_body" )
    MENU_REPLY=""
    MENU_LOGIN=$(menu_post login "$_ml_body"); _ml_rc=$?
    rm -f "$_ml_body"
    [ "$_ml_rc" = 0 ] && return 0
    case "$(menu_status)" in
      401) echo "Wrong username or password." ;;
      429) echo "Too many failed logins from this PC: wait a minute before the next try." ;;
      "") MENU_ERR="cannot reach the server $NC_SERVER to log in: $(api_error)"; return 1 ;;
      *) MENU_ERR="the server refused the login: $(menu_reason)"; return 1 ;;
    esac
    if [ "$_ml_try" -ge "$NC_MENU_TRIES" ]; then
      MENU_ERR="no valid login after $NC_MENU_TRIES tries; nothing was changed"
      return 1
    fi
    _ml_try=$((_ml_try + 1))
  done
}

# menu_act JSON -> 0 with the answer in MENU_ANSWER; 1 after telling the technician why not (the server keeps
# the login after a refusal); 3 when the login is gone (expired or spent) and must be typed again.
menu_act() {
  _ma_body=${TMPDIR:-/tmp}/netclone-action.$$
  printf '%s' "$1" >"$_ma_body"
  MENU_ANSWER=$(menu_post action "$_ma_body" "$MENU_SESSION"); _ma_rc=$?
  rm -f "$_ma_body"
  [ "$_ma_rc" = 0 ] && return 0
  case "$(menu_status)" in
    401) echo "The login expired; log in again."; return 3 ;;
    "") echo "Cannot reach the server: $(api_error)" ;;
    *) echo "Refused: $(menu_reason)" ;;
  esac
  return 1
}

# menu_run -> 0 with NC_TASK and NC_TOKEN set for the chosen capture or deploy; 2 when the PC should reboot
# (registered, the technician asked for it, or nobody answered: then MENU_ERR says so); 1 with the reason in
# MENU_ERR.
menu_run() {
  NC_TASK=""; NC_TOKEN=""; MENU_SESSION=""; MENU_ERR=""
  echo
  echo "netclone: this PC is $MAC; server $NC_SERVER"
  echo "Log in with a netclone user to capture, deploy or register this PC."
  while :; do
    menu_login || return
    MENU_SESSION=$(json_get session "$MENU_LOGIN")
    [ -n "$MENU_SESSION" ] || { MENU_ERR="the server's login answer has no session"; return 1; }
    _mr_host=$(json_object host "$MENU_LOGIN")
    _mr_name=$(json_get name "$_mr_host"); _mr_reg=$(json_get registered "$_mr_host")
    _mr_images=$(printf '%s' "$MENU_LOGIN" | sed -n 's/.*"images":\[\([^]]*\)\].*/\1/p' | tr ',' '\n' | sed 's/^"//; s/"$//' | grep -v '^$')
    _mr_task=$(json_object task "$MENU_LOGIN")
    _mr_wait_kind=""; _mr_wait_image=""
    if [ -n "$_mr_task" ]; then _mr_wait_kind=$(json_get kind "$_mr_task"); _mr_wait_image=$(json_get image "$_mr_task"); fi
    menu_choose; _mr_rc=$?
    [ "$_mr_rc" = 3 ] && continue
    return $_mr_rc
  done
}

# menu_choose -> as menu_run; 3 to log in again.
menu_choose() {
  while :; do
    echo
    echo "PC $MAC${_mr_name:+ ($_mr_name)}$([ "$_mr_reg" = true ] && echo ', registered' || echo ', not registered')"
    echo "  1) Capture this PC into an image"
    echo "  2) Deploy an image onto this PC (erases its disk)"
    [ "$_mr_reg" = true ] || echo "  3) Register this PC, then reboot"
    [ -n "$_mr_wait_kind" ] && echo "  4) Start the waiting $_mr_wait_kind of image $_mr_wait_image"
    echo "  0) Reboot (the boot menu then starts the local disk)"
    menu_ask "Choice: " || { menu_silent; return; }
    case "$MENU_REPLY" in
      1)
        _mc_default=$(menu_default_image "$_mr_name" "$MAC")
        menu_ask "Image name [$_mc_default]: " || { menu_silent; return; }
        _mc_image=${MENU_REPLY:-$_mc_default}
        menu_act "{\"do\":\"capture\",\"image\":$(json_str "$_mc_image")}"; _mc_rc=$?
        ;;
      2)
        if [ -z "$_mr_images" ]; then echo "No image has a committed version yet: capture a PC first."; continue; fi
        _mc_i=0
        for _mc_n in $_mr_images; do _mc_i=$((_mc_i + 1)); echo "  $_mc_i) $_mc_n"; done
        menu_ask "Image number: " || { menu_silent; return; }
        case "$MENU_REPLY" in ''|*[!0-9]*) echo "Not an image number."; continue ;; esac
        _mc_image=$(printf '%s\n' $_mr_images | sed -n "${MENU_REPLY}p")
        if [ "$MENU_REPLY" = 0 ] || [ -z "$_mc_image" ]; then echo "Not an image number."; continue; fi
        menu_ask "Deploying $_mc_image erases the whole disk of this PC. Type YES to go on: " || { menu_silent; return; }
        if [ "$MENU_REPLY" != YES ]; then echo "Not confirmed; nothing was changed."; continue; fi
        menu_act "{\"do\":\"deploy\",\"image\":$(json_str "$_mc_image")}"; _mc_rc=$?
        ;;
      3)
        if [ "$_mr_reg" = true ]; then echo "Not a choice."; continue; fi
        menu_act '{"do":"register"}'; _mc_rc=$?
        if [ "$_mc_rc" = 0 ]; then echo "This PC is registered."; return 2; fi
        ;;
      4)
        if [ -z "$_mr_wait_kind" ]; then echo "Not a choice."; continue; fi
        menu_act '{"do":"start"}'; _mc_rc=$?
        ;;
      0) return 2 ;;
      *) echo "Not a choice."; continue ;;
    esac
    case $_mc_rc in
      0)
        NC_TASK=$(json_get task "$MENU_ANSWER"); NC_TOKEN=$(json_get token "$MENU_ANSWER")
        if [ -n "$NC_TASK" ] && [ -n "$NC_TOKEN" ]; then return 0; fi
        MENU_ERR="the server's answer has no task and token"; return 1
        ;;
      3) return 3 ;;
    esac
  done
}
