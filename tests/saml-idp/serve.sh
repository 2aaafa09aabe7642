#!/usr/bin/env bash
# Serves the bundled SimpleSAMLphp IdP on 127.0.0.1 with PHP's built-in server.
#   tests/saml-idp/serve.sh PORT CAREBROKER_URL [STATE_DIR]
# Needs Debian's simplesamlphp and php-cli (scripts/install-deps.sh installs them).
set -euo pipefail
port="$1"; broker="$2"; state="${3:-$(mktemp -d)}"
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
mkdir -p "$state/log" "$state/data" "$state/tmp" "$state/sessions"
export SIMPLESAMLPHP_CONFIG_DIR="$here/config"
export SAML_IDP_URL="http://127.0.0.1:$port"
export SAML_IDP_STATE="$state"
export CAREBROKER_CERTS="$root/certs/test"
export CAREBROKER_URL="$broker"
exec php -d variables_order=EGPCS -S "127.0.0.1:$port" -t /usr/share/simplesamlphp/www
