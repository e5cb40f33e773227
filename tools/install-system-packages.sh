#!/bin/sh
# Install the Debian packages the tests need, when missing: OpenLDAP's slapd, slapadd and
# ldapmodify (the directory tests start a private slapd on 127.0.0.1), dcmtk (echoscu, storescu,
# findscu: the network tests use them as real clients), openssl (the TLS tests make a throwaway CA),
# postgresql (the store tests start a private server on 127.0.0.1 from its binaries in
# /usr/lib/postgresql/*/bin), libgdcm-tools (gdcmanon, a baseline of benchmarks/bench_deidentify.py),
# chromium and chromium-driver (the console's browser tests drive a headless Chromium with Selenium)
# and a Python with venv.
# Uses sudo when not run as root. The system instances of slapd and PostgreSQL (the cluster the
# Debian package creates) are not started or used.
set -eu
export DEBIAN_FRONTEND=noninteractive
packages="slapd ldap-utils dcmtk openssl postgresql libgdcm-tools chromium chromium-driver"
python3 -c 'import venv, ensurepip' 2>/dev/null || packages="$packages python3 python3-venv python3-pip"
missing=""
for package in $packages; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing="$missing $package"
done
[ -n "$missing" ] || exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing:$missing"
$SUDO apt-get update -q
# shellcheck disable=SC2086 # one word per package
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
