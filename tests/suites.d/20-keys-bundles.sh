#!/usr/bin/env bash
# keys/gen-dev-pki.sh and the bundles' install-check hook, tested without RAUC.
# (The bundles themselves are installed into the real rauc service by fleet-rauc's cargo tests.)
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

# --- development PKI -------------------------------------------------------------------------
if "$root/keys/gen-dev-pki.sh" "$tmp/pki" >/dev/null; then ok; else bad "gen-dev-pki.sh failed"; fi
sums() { (cd "$tmp/pki" && sha256sum ./*.pem); }
before=$(sums)
"$root/keys/gen-dev-pki.sh" "$tmp/pki" >/dev/null
[ "$(sums)" = "$before" ] && ok || bad "second run changed the keys (not idempotent)"
openssl x509 -in "$tmp/pki/ca.cert.pem" -noout -subject | grep -q DEVELOPMENT && ok ||
  bad "CA subject lacks the DEVELOPMENT marker the Yocto layer checks"
openssl verify -CAfile "$tmp/pki/ca.cert.pem" -purpose smimesign "$tmp/pki/dev.cert.pem" >/dev/null 2>&1 && ok ||
  bad "signing certificate does not chain to the CA"
openssl x509 -in "$tmp/pki/dev.cert.pem" -noout -ext extendedKeyUsage | grep -q "Code Signing" && ok ||
  bad "signing certificate lacks codeSigning"
openssl pkey -in "$tmp/pki/offer.key.pem" -noout -text 2>/dev/null | grep -q ED25519 && ok ||
  bad "offer key is not ed25519"
head -1 "$tmp/pki/offer.key.pem" | grep -q "BEGIN PRIVATE KEY" && ok || bad "offer key is not PKCS#8 PEM"
[ "$(stat -c %a "$tmp/pki/ca.key.pem")" = 600 ] && ok || bad "CA key is not mode 0600"
# offer.pub: the hex stations read in trusted-keys, the same key as offer.pub.pem.
pem_hex=$(openssl pkey -pubin -in "$tmp/pki/offer.pub.pem" -outform DER | tail -c 32 | od -An -v -tx1 | tr -d ' \n')
grep -qxE '[0-9a-f]{64}' "$tmp/pki/offer.pub" && [ "$(cat "$tmp/pki/offer.pub")" = "$pem_hex" ] && ok ||
  bad "offer.pub is not the hex form of offer.pub.pem"

# --- install-check hook ------------------------------------------------------------------------
hook=$root/bundles/hooks/install-check
# expect EXIT SYSTEM_COMPATIBLE BUNDLE_COMPATIBLE VERSION FLOOR(- for none) [REASON]
expect() {
  local want=$1 sys=$2 bun=$3 ver=$4 floor=$5 reason=${6:-}
  rm -f "$tmp/floor"
  [ "$floor" != - ] && echo "$floor" > "$tmp/floor"
  local out got
  out=$(RAUC_SYSTEM_COMPATIBLE=$sys RAUC_MF_COMPATIBLE=$bun RAUC_MF_VERSION=$ver \
    FLEET_VERSION_FLOOR_FILE=$tmp/floor sh "$hook" install-check 2>&1)
  got=$?
  if [ "$got" != "$want" ]; then
    bad "hook($sys,$bun,$ver,floor $floor) exited $got, expected $want: $out"
  elif [ -n "$reason" ] && ! grep -q "$reason" <<<"$out"; then
    bad "hook($sys,$bun,$ver,floor $floor) said '$out', expected '$reason'"
  else
    ok
  fi
}
expect 0 st st 1.0.0 -
expect 0 st st 1.2.0 1.2.0
expect 0 st st 1.10.0 1.9.9
expect 0 st st 2.0.0 1.99.99
expect 0 st st 1.2.0+build.7 1.2.0
expect 0 st st 1.2.0 1.2.0-rc.1
expect 0 st st 1.2.0-rc.2 1.2.0-rc.1
expect 10 st st 1.1.9 1.2.0 "downgrade refused"
expect 10 st st 1.9.0 1.10.0 "downgrade refused"
expect 10 st st 1.2.0-rc.1 1.2.0 "downgrade refused"
expect 10 st st 1.2.0-rc.1 1.2.0-rc.2 "downgrade refused"
expect 10 st other 2.0.0 - "compatible mismatch"
expect 10 st st-2 2.0.0 - "compatible mismatch"
expect 10 "" "" 2.0.0 - "no compatible"
expect 10 st st banana - "not a semantic version"
expect 10 st st 1.2 - "not a semantic version"
expect 10 st st 1.2.3.4 - "not a semantic version"
expect 10 st st "" - "not a semantic version"
expect 10 st st 2.0.0 garbage "is not a semantic version"
# RAUC runs other hook types too; the hook leaves them alone.
sh "$hook" install-check-not >/dev/null 2>&1 && ok || bad "hook failed for another hook type"

# Slot hooks go to bootfs-post-install next to the hook; without it a declared slot hook fails.
mkdir -p "$tmp/bundle"
cp "$hook" "$tmp/bundle/hook"
sh "$tmp/bundle/hook" slot-post-install >/dev/null 2>&1 && bad "slot hook without its script passed" || ok
printf '#!/bin/sh\necho "$1" > "$(dirname "$0")/called"\n' > "$tmp/bundle/bootfs-post-install"
chmod +x "$tmp/bundle/bootfs-post-install"
sh "$tmp/bundle/hook" slot-post-install && [ "$(cat "$tmp/bundle/called")" = slot-post-install ] && ok ||
  bad "slot hook was not handed to bootfs-post-install"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
