#!/usr/bin/env bash
# The whole test suite: installs what it needs (Debian redis-server, postgresql), starts a real
# Redis and PostgreSQL on free loopback ports, then runs unit and integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh test
source scripts/test-services.sh
trap stop_test_services EXIT
cargo test --locked --all-targets "$@"
