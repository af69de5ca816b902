#!/usr/bin/env bash
# The broker configuration in docs/mosquitto/ against a real mosquitto: TLS with client
# certificates from a test PKI made here with openssl, and the ACL. Publishes that the ACL
# refuses are acknowledged by mosquitto all the same, so every "cannot" is proved by an
# operator subscriber on fleet/v1/# that never sees the message (a marker published last shows
# it saw everything before it).
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
broker_pid=""
sub_pid=""
cleanup() {
  [ -n "$sub_pid" ] && kill "$sub_pid" 2>/dev/null
  [ -n "$broker_pid" ] && kill "$broker_pid" 2>/dev/null && wait "$broker_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
finish() { echo "$pass passed, $fail failed"; exit $((fail > 0)); }

# --- test PKI ------------------------------------------------------------------------------
pki=$tmp/pki
mkdir -p "$pki"
ca() { # name subject
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=$2" -keyout "$pki/$1.key" -out "$pki/$1.crt" 2>/dev/null
}
cert() { # ca name cn [ext]
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$3" \
    -keyout "$pki/$2.key" -out "$pki/$2.csr" 2>/dev/null
  printf '%s\n' "${4:-extendedKeyUsage=clientAuth}" >"$pki/$2.ext"
  openssl x509 -req -in "$pki/$2.csr" -CA "$pki/$1.crt" -CAkey "$pki/$1.key" -CAcreateserial \
    -days 2 -extfile "$pki/$2.ext" -out "$pki/$2.crt" 2>/dev/null
}
ca ca "fleet test broker CA"
ca rogue-ca "someone else's CA"
cert ca server 127.0.0.1 "subjectAltName=IP:127.0.0.1
extendedKeyUsage=serverAuth"
cert ca stn-0001 stn-0001
cert ca stn-0002 stn-0002
cert ca operator operator
cert rogue-ca rogue-operator operator
[ -s "$pki/operator.crt" ] && [ -s "$pki/rogue-operator.crt" ] && ok || { bad "test PKI"; finish; }

# --- broker --------------------------------------------------------------------------------
# Whether process $1 itself holds the socket listening on 127.0.0.1:$2: a port that merely
# accepts may be answered by another process that took it first (then this broker exits).
own_listener() {
  local inode
  inode=$(awk -v a="$(printf '0100007F:%04X' "$2")" '$2 == a && $4 == "0A" { print $10 }' \
    "/proc/$1/net/tcp" 2>/dev/null)
  [ -n "$inode" ] && find "/proc/$1/fd" -lname "socket:\[$inode\]" 2>/dev/null | grep -q .
}
conf=$tmp/conf
mkdir -p "$conf" "$tmp/data"
cp "$pki/ca.crt" "$pki/server.crt" "$pki/server.key" "$conf/"
cp "$root/docs/mosquitto/acl" "$conf/acl"
# A free port can be taken before the broker binds it: then it exits, and starts on another.
for _ in 1 2 3 4 5; do
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  sed -e "s|@CONF_DIR@|$conf|g" -e "s|@DATA_DIR@|$tmp/data|g" -e "s|@PORT@|$port|" \
    -e "s|@BIND@|127.0.0.1|" "$root/docs/mosquitto/mosquitto.conf" >"$conf/mosquitto.conf"
  # mosquitto drops root privileges to its own user unless told to stay: the test files are ours.
  [ "$(id -u)" = 0 ] && echo "user root" >>"$conf/mosquitto.conf"
  mosquitto -c "$conf/mosquitto.conf" >"$tmp/broker.log" 2>&1 &
  broker_pid=$!
  for _ in $(seq 100); do
    own_listener "$broker_pid" "$port" && break
    kill -0 "$broker_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$broker_pid" 2>/dev/null && break
  wait "$broker_pid" 2>/dev/null
  broker_pid=""
done
[ -n "$broker_pid" ] && own_listener "$broker_pid" "$port" && ok ||
  { bad "broker did not start: $(cat "$tmp/broker.log")"; finish; }

as() { # identity, then mosquitto_pub/sub arguments
  local id=$1; shift
  "$@" -h 127.0.0.1 -p "$port" --cafile "$pki/ca.crt" --cert "$pki/$id.crt" --key "$pki/$id.key" -q 1
}
pub() { local id=$1; shift; as "$id" mosquitto_pub -i "pub-$id-$RANDOM" "$@"; }

# The operator's view of everything published.
# exec: $! is mosquitto_sub itself (not a subshell around it), so cleanup really stops it.
as operator exec mosquitto_sub -i watch -t 'fleet/v1/#' -v >"$tmp/seen" 2>"$tmp/sub.err" &
sub_pid=$!
sleep 1
marker() { # publishes a marker as the operator and waits until the watcher saw it
  pub operator -t "fleet/v1/devices/marker/state" -m "$1"
  for _ in $(seq 50); do grep -q "$1" "$tmp/seen" && return 0; sleep 0.1; done
  return 1
}
seen() { grep -qF "$1" "$tmp/seen"; }

# --- a station connects with TLS and publishes its own topics -------------------------------
pub stn-0001 -t fleet/v1/devices/stn-0001/state -m own-state && ok || bad "station could not publish over TLS"
pub stn-0001 -t fleet/v1/devices/stn-0001/events -m own-event
pub stn-0001 -t fleet/v1/devices/stn-0001/presence -m online
pub stn-0001 -t fleet/v1/devices/stn-0001/health -r -m own-health
pub stn-0001 -t fleet/v1/devices/stn-0001/logs/reply -m own-log-reply
# --- ... and nothing else -------------------------------------------------------------------
pub stn-0001 -t fleet/v1/devices/stn-0002/state -m forged-state
pub stn-0001 -t fleet/v1/devices/stn-0002/events -m forged-event
pub stn-0001 -t fleet/v1/devices/stn-0002/presence -m forged-presence
pub stn-0001 -t fleet/v1/devices/stn-0001/offer -m station-offer-self
pub stn-0001 -t fleet/v1/devices/stn-0002/offer -m station-offer-other
pub stn-0001 -t fleet/v1/groups/canary/offer -m station-offer-group
pub stn-0001 -t fleet/v1/bundles/0000/manifest -m station-manifest
pub stn-0001 -t fleet/v1/bundles/0000/chunks/0 -m station-chunk
pub stn-0001 -t fleet/v1/control -m station-control
pub stn-0001 -t fleet/v1/keys/rotation -m station-rotation
pub stn-0001 -t fleet/v1/devices/stn-0002/health -m forged-health
pub stn-0001 -t fleet/v1/devices/stn-0002/logs/reply -m forged-log-reply
pub stn-0001 -t fleet/v1/devices/stn-0001/logs/request -m station-log-request-self
pub stn-0001 -t fleet/v1/devices/stn-0002/logs/request -m station-log-request-other
# --- the operator publishes offers, bundles, controls and rotations ------------------------
pub operator -t fleet/v1/devices/stn-0002/offer -r -m operator-offer
pub operator -t fleet/v1/groups/canary/offer -m operator-group-offer
pub operator -t fleet/v1/bundles/0000/chunks/0 -m operator-chunk
pub operator -t fleet/v1/control -m operator-control
pub operator -t fleet/v1/keys/rotation -m operator-rotation
pub operator -t fleet/v1/devices/stn-0002/logs/request -m operator-log-request
marker end-1 && ok || bad "the watcher never saw the marker: $(cat "$tmp/sub.err")"

for m in own-state own-event online own-health own-log-reply operator-offer \
  operator-group-offer operator-chunk operator-control operator-rotation operator-log-request; do
  seen "$m" && ok || bad "allowed publish '$m' never arrived"
done
for m in forged-state forged-event forged-presence station-offer-self station-offer-other \
  station-offer-group station-manifest station-chunk station-control station-rotation \
  forged-health forged-log-reply station-log-request-self station-log-request-other; do
  seen "$m" && bad "refused publish '$m' reached a subscriber" || ok
done

# --- a station reads its own offers, not another station's ----------------------------------
got=$(as stn-0002 mosquitto_sub -i r2 -t fleet/v1/devices/stn-0002/offer -C 1 -W 5 2>/dev/null)
[ "$got" = operator-offer ] && ok || bad "stn-0002 did not read its own retained offer (got '$got')"
got=$(as stn-0001 mosquitto_sub -i r1 -t fleet/v1/devices/stn-0002/offer -C 1 -W 3 2>/dev/null)
[ -z "$got" ] && ok || bad "stn-0001 read stn-0002's offer"
got=$(as stn-0001 mosquitto_sub -i r1b -t 'fleet/v1/devices/+/state' -C 1 -W 3 2>/dev/null)
[ -z "$got" ] && ok || bad "stn-0001 read other stations' state ('$got')"

# --- health and log requests: a station reads its own, never another's ---------------------
got=$(as stn-0001 mosquitto_sub -i r1h -t fleet/v1/devices/stn-0001/health -C 1 -W 5 2>/dev/null)
[ "$got" = own-health ] && ok || bad "stn-0001 did not read back its own retained health (got '$got')"
got=$(as stn-0002 mosquitto_sub -i r2h -t 'fleet/v1/devices/+/health' -C 1 -W 3 2>/dev/null)
[ -z "$got" ] && ok || bad "stn-0002 read another station's health ('$got')"
as stn-0002 exec mosquitto_sub -i r2l -t fleet/v1/devices/stn-0002/logs/request -C 1 -W 8 \
  >"$tmp/own-request" 2>/dev/null &
own_pid=$!
as stn-0001 exec mosquitto_sub -i r1l -t fleet/v1/devices/stn-0002/logs/request -C 1 -W 4 \
  >"$tmp/other-request" 2>/dev/null &
other_pid=$!
sleep 1
pub operator -t fleet/v1/devices/stn-0002/logs/request -m second-log-request
wait "$own_pid" "$other_pid" 2>/dev/null
[ "$(cat "$tmp/own-request")" = second-log-request ] && ok \
  || bad "stn-0002 did not receive its own log request (got '$(cat "$tmp/own-request")')"
[ -s "$tmp/other-request" ] && bad "stn-0001 received stn-0002's log request" || ok

# --- who may connect ---------------------------------------------------------------------------
if as rogue-operator mosquitto_pub -i rogue -t fleet/v1/devices/stn-0001/offer -m rogue-offer \
  2>/dev/null; then bad "a certificate from another CA was accepted"; else ok; fi
if mosquitto_pub -h 127.0.0.1 -p "$port" --cafile "$pki/ca.crt" -i nocert -t x -m nocert \
  2>/dev/null; then bad "a client without certificate was accepted"; else ok; fi
if mosquitto_pub -h 127.0.0.1 -p "$port" -i plain -t x -m plain 2>/dev/null; then
  bad "a plain-text client was accepted"; else ok; fi
# Server verification: a client that trusts another CA, or names the host differently from
# the certificate, refuses the broker.
if mosquitto_pub -h 127.0.0.1 -p "$port" --cafile "$pki/rogue-ca.crt" --cert "$pki/stn-0001.crt" \
  --key "$pki/stn-0001.key" -t fleet/v1/devices/stn-0001/state -m wrong-ca 2>/dev/null; then
  bad "connected to a broker whose certificate chains to a CA the client does not trust"; else ok; fi
if mosquitto_pub -h localhost -p "$port" --cafile "$pki/ca.crt" --cert "$pki/stn-0001.crt" \
  --key "$pki/stn-0001.key" -t fleet/v1/devices/stn-0001/state -m wrong-name 2>/dev/null; then
  bad "connected to a broker whose certificate names another host"; else ok; fi
marker end-2 && ok || bad "the watcher stopped"
seen rogue-offer && bad "the rogue operator's offer arrived" || ok

finish
