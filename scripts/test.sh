#!/usr/bin/env bash
# The whole test suite: installs what it needs (Debian redis-server, postgresql, chromium, nodejs;
# npm packages for the browser tests), starts a real Redis and PostgreSQL on free loopback ports,
# then runs unit and integration tests, and Schemathesis (PyPI) against a running carebroker's
# OpenAPI document (tests/schemathesis.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh test
npm ci --silent --prefix tests/e2e >/dev/null
npm ci --silent --prefix tests/idp >/dev/null
source scripts/test-services.sh
trap stop_test_services EXIT
cargo test --locked --lib --bins --tests "$@"
tests/schemathesis.sh
# benches and examples must keep compiling
cargo build --locked --benches --examples
