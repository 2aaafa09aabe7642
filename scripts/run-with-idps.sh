#!/usr/bin/env bash
# carebroker with the bundled upstream test identity providers: node-oidc-provider (tests/idp) as a
# CIS2-shaped one on :9101 and an NHS login-shaped one on :9102, Debian's SimpleSAMLphp
# (tests/saml-idp) as a care home's SAML IdP on :9103, a Validated Relationships Service double on
# :9104 (9434765919 may act for 9000000009), the NHS App journey `careplan`, and the demo SMART
# app on :8765. Then open the printed standalone launch URL in a browser and choose
# "NHS smartcard" (sign in as 555057896106), "NHS login" (9434765919) or "Lavender Care Homes"
# (carer / carer-pass).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh test
npm ci --silent --prefix tests/idp >/dev/null
npm ci --silent --prefix tests/e2e >/dev/null
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM
callback=http://127.0.0.1:8080/federation/callback
NODE_ENV=production node tests/idp/oidc-idp.mjs --port 9101 --profile cis2 --client-id carebroker --redirect-uri "$callback" \
  --client-jwks certs/test/idp-rp-cis2.jwks.json --backchannel-logout-uri http://127.0.0.1:8080/federation/backchannel-logout/cis2-local &
pids+=($!)
NODE_ENV=production node tests/idp/oidc-idp.mjs --port 9102 --profile nhs_login --client-id carebroker --redirect-uri "$callback" \
  --client-jwks certs/test/idp-rp-nhslogin.jwks.json &
pids+=($!)
node tests/idp/vrs-double.mjs --port 9104 --role 9434765919:9000000009 &
pids+=($!)
tests/saml-idp/serve.sh 9103 http://127.0.0.1:8080 "$(mktemp -d)" &
pids+=($!)
node tests/e2e/smart_launch.mjs --serve-only --app-port 8765 --client-id demo-app &
pids+=($!)
export CAREBROKER__FEDERATION__IDPS_DIR=config/dev/idps
export CAREBROKER__FEDERATION__SAML__KEY_FILE=certs/test/saml-sp.key.pem
export CAREBROKER__FEDERATION__SAML__CERT_FILE=certs/test/saml-sp.crt.pem
export CAREBROKER__NHS_APP__ENABLED=true
export CAREBROKER__NHS_APP__IDP=nhs-login-local
export CAREBROKER__NHS_APP__HOME_URL=https://www.nhsapp.service.nhs.uk/
export CAREBROKER__NHS_APP__JOURNEYS__CAREPLAN__CLIENT_ID=demo-app
export CAREBROKER__VRS__ENABLED=true
export CAREBROKER__VRS__BASE_URL=http://127.0.0.1:9104/validated-relationships/FHIR/R4
echo "NHS App jump-off: http://127.0.0.1:8080/nhs-app/careplan?assertedLoginIdentity=any-value"
echo "  ... as 9000000009's proxy: http://127.0.0.1:8080/nhs-app/careplan?assertedLoginIdentity=proxy-for:9000000009"
cargo run --release --locked --bin carebroker -- serve &
pids+=($!)
wait "${pids[@]}"
