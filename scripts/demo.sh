#!/usr/bin/env bash
# Builds pinpipe and runs the end-to-end demo on embedded defaults (local disk, no cloud):
# generate 100,000 posts -> ingest API handler -> in-process Kafka broker -> Kafka sink
# (raw landing + Delta tables) -> the nine analyses.
# Extra arguments go to `pinpipe demo` (see `pinpipe demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null; then
  echo "error: cargo not found; install a Rust toolchain (rustup) first" >&2
  exit 1
fi
source scripts/build-deps.sh --
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/pinpipe-target}"
cargo build --locked -p pinpipe-cli
exec "$CARGO_TARGET_DIR/debug/pinpipe" demo "$@"
