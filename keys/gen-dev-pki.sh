#!/usr/bin/env bash
# Generates the DEVELOPMENT PKI for fleet: a RAUC CA, a bundle-signing certificate and key, and an
# ed25519 offer-signing key. Never use these for a release: see docs/key-handling.md.
#
# Usage: keys/gen-dev-pki.sh [OUT_DIR]   (default: keys/dev/ next to this script, .gitignored)
#
# Idempotent: existing files are kept; only missing ones are created. Delete OUT_DIR to start over.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/dev}
# The marker every development CA subject carries. The Yocto layer refuses to embed a keyring whose
# CA subject contains it in a release build (FLEET_RELEASE = "1"); keep the two in step.
marker="FLEET DEVELOPMENT ONLY"
days=3650

umask 077
mkdir -p "$out"
cd "$out"

created=()

if [ ! -s ca.key.pem ] || [ ! -s ca.cert.pem ]; then
  rm -f ca.key.pem ca.cert.pem dev.cert.pem dev.key.pem  # a new CA invalidates the old leaf
  openssl genpkey -quiet -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key.pem
  openssl req -new -x509 -key ca.key.pem -out ca.cert.pem -days "$days" -sha256 \
    -subj "/O=fleet/OU=$marker/CN=$marker RAUC CA" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash"
  created+=(ca.key.pem ca.cert.pem)
fi

# The leaf names codeSigning (stations verify with `check-purpose=codesign`) and also
# emailProtection, so that tools verifying with OpenSSL's default S/MIME purpose (a `rauc bundle`
# run without such a system.conf, e.g. the Yocto bundle class) accept it too.
if [ ! -s dev.key.pem ] || [ ! -s dev.cert.pem ]; then
  openssl genpkey -quiet -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out dev.key.pem
  openssl req -new -key dev.key.pem -out dev.csr.pem -subj "/O=fleet/OU=$marker/CN=$marker bundle signing"
  printf '%s\n' \
    "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=critical,codeSigning,emailProtection" \
    "subjectKeyIdentifier=hash" \
    "authorityKeyIdentifier=keyid" > dev.ext
  openssl x509 -req -in dev.csr.pem -CA ca.cert.pem -CAkey ca.key.pem -CAcreateserial \
    -out dev.cert.pem -days "$days" -sha256 -extfile dev.ext 2>/dev/null
  rm -f dev.csr.pem dev.ext ca.cert.srl
  created+=(dev.key.pem dev.cert.pem)
fi

if [ ! -s offer.key.pem ]; then
  # PKCS#8 PEM, as ed25519-dalek's `pkcs8` + `pem` features read it.
  openssl genpkey -algorithm ed25519 -out offer.key.pem
  created+=(offer.key.pem)
fi
if [ ! -s offer.pub.pem ]; then
  openssl pkey -in offer.key.pem -pubout -out offer.pub.pem
  created+=(offer.pub.pem)
fi

if [ ! -s offer.pub ]; then
  # The form stations read in `trusted-keys`: the raw 32-byte key (the end of the DER) in hex.
  openssl pkey -in offer.key.pem -pubout -outform DER | tail -c 32 | od -An -v -tx1 | tr -d ' \n' > offer.pub
  echo >> offer.pub
  created+=(offer.pub)
fi

# Certificates and public keys are not secret.
chmod 0644 ca.cert.pem dev.cert.pem offer.pub.pem offer.pub

openssl verify -CAfile ca.cert.pem -purpose any dev.cert.pem >/dev/null

if [ ${#created[@]} -gt 0 ]; then
  echo "created in $out: ${created[*]}"
else
  echo "development PKI already present in $out (nothing created)"
fi
echo "WARNING: these are DEVELOPMENT keys ($marker). Never sign a release with them."
