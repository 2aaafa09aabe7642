#!/usr/bin/env bash
# Installs the Debian packages carebroker needs, only those missing. Usage: install-deps.sh run|test|bench
set -euo pipefail
what=${1:-run}
# building: xmlsec (SAML signatures) through bindgen (libclang) and OpenSSL
packages=(pkg-config libssl-dev libxml2-dev libxmlsec1-dev libclang-dev)
case "$what" in
  run) ;;
  test) packages+=(redis-server postgresql chromium nodejs simplesamlphp php-cli php-xml php-mbstring) ;;
  bench) packages+=(wrk nodejs) ;;
  *) echo "usage: $0 run|test|bench" >&2; exit 2 ;;
esac
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo is not installed: install Rust with rustup (https://rustup.rs)" >&2; exit 1; }
