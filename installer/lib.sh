#!/bin/sh
# shellcheck shell=dash
# Pure helpers of the installer, sourced by install.sh (and by its tests, on the host's busybox).

# A JSON string's body: no control characters, backslash and quote escaped.
json_str() { printf '%s' "$1" | tr -d '\000-\037' | sed 's/\\/\\\\/g; s/"/\\"/g'; }

# event_body <phase> [key value]...: {"type":"installer.<phase>","detail":{...}}; numbers and
# true/false stay bare, everything else is a string.
event_body() {
  _type=$1
  shift
  _detail=
  while [ $# -ge 2 ]; do
    case $2 in
      true | false) _v=$2 ;;
      '' | *[!0-9.]* | 0[0-9]* | *.*.* | .* | *.) _v="\"$(json_str "$2")\"" ;;
      *) _v=$2 ;;
    esac
    _detail="$_detail${_detail:+,}\"$(json_str "$1")\":$_v"
    shift 2
  done
  printf '{"type":"installer.%s"%s}' "$_type" "${_detail:+,\"detail\":{$_detail\}}"
}
