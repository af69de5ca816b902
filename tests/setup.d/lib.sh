# Sourced by every install step in tests/setup.d (never run on its own): strict mode, the one
# failure line, and the apt helpers every step shares.
#
#   . "$(dirname "$0")/lib.sh"
#   setup_apt_install mosquitto rauc          # installs what is missing, says what it installs
#   setup_apt_install -t bookworm-backports qemu-system-arm
#   setup_run "pip install guano" python3 -m pip install guano
#   setup_fail "<command>" "<cause>"
#
# A step that fails prints exactly one line, `setup FAILED: <step>: <command>: <cause>`: to
# stderr when run on its own, or into $FLEET_SETUP_REPORT, which tests/setup.sh prints last.
# apt waits up to $FLEET_APT_LOCK_WAIT seconds (default 300) for a dpkg or apt-lists lock that
# another process (unattended-upgrades, a package manager window) holds.
set -Eeuo pipefail
setup_step=$(basename "${BASH_SOURCE[1]:-$0}")
export DEBIAN_FRONTEND=noninteractive
setup_lock_wait=${FLEET_APT_LOCK_WAIT:-300}

if [ -z "${FLEET_SETUP_REPORT:-}" ]; then
  FLEET_SETUP_REPORT=$(mktemp)
  export FLEET_SETUP_REPORT
  trap 'rc=$?; [ -s "$FLEET_SETUP_REPORT" ] && cat "$FLEET_SETUP_REPORT" >&2; rm -f "$FLEET_SETUP_REPORT"; exit $rc' EXIT
fi

# Records the failure line (the first one wins: the innermost failure names the real cause) and
# ends the step.
setup_fail() { # command cause
  local cause=${2//$'\n'/ }
  if [ ! -s "$FLEET_SETUP_REPORT" ]; then
    printf 'setup FAILED: %s: %s: %s\n' "$setup_step" "$1" "$cause" >"$FLEET_SETUP_REPORT"
  fi
  exit 1
}
# Any other command that ends the step under `set -e` still names itself.
trap 'setup_fail "$BASH_COMMAND" "exit status $?"' ERR

# Fails the step for a command whose output is in a log: shows the log's tail, and takes the log's
# first error line as the cause.
setup_fail_log() { # description log exit-status
  tail -n 20 "$2" | sed 's/^/  | /' >&2
  local cause
  # A full disk shows up in dpkg's lines before apt's own "E: Sub-process ... returned an error".
  cause=$( (grep -m1 -o '[^:]*: No space left on device' "$2" ||
    grep -E '^(E: |ERROR: |error: |error\[)' "$2") | head -n1 | sed 's/^ *//' || true)
  rm -f "$2"
  setup_fail "$1" "${cause:-exit status $3}"
}

# Runs a command with its output in a log; on failure fails the step (setup_fail_log).
setup_run() { # description command...
  local what=$1 log rc=0
  shift
  log=$(mktemp)
  "$@" >"$log" 2>&1 || rc=$?
  [ "$rc" = 0 ] || setup_fail_log "$what" "$log" "$rc"
  rm -f "$log"
}

setup_installed() { # package[:arch]
  # A bare name means this machine's architecture (or `all`): dpkg-query matches every installed
  # architecture of it, and libssl-dev:arm64 alone must not pass for libssl-dev.
  case $1 in
    *:*) dpkg-query -W -f='${Status}\n' "$1" 2>/dev/null | grep -q "install ok installed" ;;
    *) dpkg-query -W -f='${Architecture} ${Status}\n' "$1" 2>/dev/null |
         grep -qE "^($(dpkg --print-architecture)|all) install ok installed" ;;
  esac
}

# apt-get with the dpkg lock timeout, retried while the lists lock (apt-get update) is held.
setup_apt() { # apt-get arguments...
  local deadline=$(($(date +%s) + setup_lock_wait)) log rc said=0
  log=$(mktemp)
  while :; do
    rc=0
    apt-get -q -o DPkg::Lock::Timeout="$setup_lock_wait" "$@" >"$log" 2>&1 || rc=$?
    if [ "$rc" != 0 ] && grep -qE 'Could not get lock|Unable to lock|Unable to acquire the dpkg frontend lock' "$log" &&
      [ "$(date +%s)" -lt "$deadline" ]; then
      [ $said = 1 ] || echo "$setup_step: another process holds the apt lock; waiting up to ${setup_lock_wait} s"
      said=1
      sleep 5
      continue
    fi
    break
  done
  cat "$log"
  rm -f "$log"
  return "$rc"
}

# apt-get update once per change of the package sources (or once a day): the steps of one run
# share it, and a step that adds a source or an architecture gets fresh lists.
setup_apt_stamp=/var/cache/fleet/apt-update.stamp
setup_apt_sources_key() {
  {
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null || true
    dpkg --print-architecture
    dpkg --print-foreign-architectures
  } | sha256sum | cut -c1-16
}
setup_apt_update() { # [force]
  local key
  key=$(setup_apt_sources_key)
  if [ "${1:-}" != force ] && [ -f "$setup_apt_stamp" ] && [ "$(cat "$setup_apt_stamp")" = "$key" ] &&
    [ -n "$(find "$setup_apt_stamp" -mmin -1440)" ]; then
    return 0
  fi
  echo "$setup_step: apt-get update"
  setup_run "apt-get update" setup_apt update
  mkdir -p "$(dirname "$setup_apt_stamp")"
  echo "$key" >"$setup_apt_stamp"
}

# Installs the packages that are not installed yet, with their dependencies and without
# Recommends: a step names every package it needs. -t RELEASE picks the release.
setup_apt_install() { # [-t release] package...
  local release=()
  if [ "${1:-}" = -t ]; then
    release=(-t "$2")
    shift 2
  fi
  local missing=() p
  for p in "$@"; do setup_installed "$p" || missing+=("$p"); done
  [ ${#missing[@]} -gt 0 ] || return 0
  local started log rc=0
  started=$(date +%s)
  echo "$setup_step: installing (apt${release[*]:+ ${release[*]}}): ${missing[*]}"
  setup_apt_update
  local args=(install -y --no-install-recommends "${release[@]}" "${missing[@]}")
  log=$(mktemp)
  setup_apt "${args[@]}" >"$log" 2>&1 || rc=$?
  # Lists older than the mirror (a package replaced since): fresh lists, and once more.
  if [ "$rc" != 0 ] && grep -qE 'Unable to fetch|404 +Not Found|Hash Sum mismatch|File has unexpected size' "$log"; then
    setup_apt_update force
    rc=0
    setup_apt "${args[@]}" >"$log" 2>&1 || rc=$?
  fi
  [ "$rc" = 0 ] || setup_fail_log "apt-get ${args[*]}" "$log" "$rc"
  rm -f "$log"
  echo "$setup_step: installed in $(($(date +%s) - started)) s"
}

# The Debian mirror this machine's apt uses (deb822 .sources or one-line .list), for steps that
# add a source next to it.
setup_debian_mirror() {
  local uri
  uri=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null |
    grep -v security | head -n1 || true)
  [ -n "$uri" ] || uri=$(sed -n 's/^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*\) .*/\2/p' \
    /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | grep -v security | head -n1 || true)
  echo "${uri:-http://deb.debian.org/debian}"
}
