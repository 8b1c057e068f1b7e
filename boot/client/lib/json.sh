# Minimal JSON helpers for the compact JSON the netclone server sends (one object, no pretty-printing
# needed). POSIX sh + sed; no jq in the initramfs.

# json_get KEY JSON -> prints the scalar value of the first "KEY": (string unescaped for \" \\ \/,
# numbers/true/false as-is, null as empty). Returns 1 when the key is absent.
json_get() {
  _jk=$1; _jv=$2
  case "$_jv" in *"\"$_jk\""*) ;; *) return 1 ;; esac
  # String value: allow escaped quotes inside.
  _jr=$(printf '%s' "$_jv" | sed -n "s/.*\"$_jk\"[[:space:]]*:[[:space:]]*\"\(\([^\"\\\\]\|\\\\.\)*\)\".*/\1/p" | head -n1)
  if [ -n "$_jr" ] || printf '%s' "$_jv" | grep -q "\"$_jk\"[[:space:]]*:[[:space:]]*\"\""; then
    printf '%s' "$_jr" | sed 's/\\"/"/g; s/\\\//\//g; s/\\\\/\\/g'
    return 0
  fi
  _jr=$(printf '%s' "$_jv" | sed -n "s/.*\"$_jk\"[[:space:]]*:[[:space:]]*\(-\{0,1\}[0-9][0-9.eE+-]*\|true\|false\|null\).*/\1/p" | head -n1)
  [ -n "$_jr" ] || return 1
  [ "$_jr" = null ] || printf '%s' "$_jr"
  return 0
}

# json_object KEY JSON -> prints the flat object value {...} of "KEY" (no nested objects inside it),
# or nothing when it is null/absent.
json_object() {
  printf '%s' "$2" | sed -n "s/.*\"$1\"[[:space:]]*:[[:space:]]*\({[^{}]*}\).*/\1/p" | head -n1
}

# json_str VALUE -> VALUE as a JSON string literal (quotes, backslashes and control characters escaped).
json_str() {
  printf '"%s"' "$(printf '%s' "$1" | tr -d '\000-\010\013-\037' | sed 's/\\/\\\\/g; s/"/\\"/g; s/\t/\\t/g' | sed ':a;N;$!ba;s/\n/\\n/g')"
}

# json_num VALUE -> VALUE if it is a decimal integer, else null.
json_num() {
  case "$1" in ''|*[!0-9-]*) printf 'null' ;; *) printf '%s' "$1" ;; esac
}
