#!/usr/bin/env bash
# Runs carebroker on its embedded default: 127.0.0.1:8080, memory + SQLite under data/, dev keys
# generated on first start into data/keys/. Extra arguments go to `carebroker serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh run
exec cargo run --release --locked --bin carebroker -- serve "$@"
