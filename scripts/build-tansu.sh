#!/usr/bin/env bash
# Builds tansu 0.6 (a Kafka-protocol broker in Rust, from crates.io) into $PINPIPE_TOOLS/bin once:
# tests/test_infra.py creates topics on it (librdkafka's mock cluster has no CreateTopics) and
# scripts/e2e.sh prefers it to the mock cluster. A 20-minute build on 2 cores; idempotent.
set -euo pipefail
TOOLS="${PINPIPE_TOOLS:-/var/tmp/pinpipe-tools}"
if [ -x "$TOOLS/bin/tansu" ]; then
  exit 0
fi
mkdir -p "$TOOLS"
echo "building tansu 0.6.0 into $TOOLS/bin (once; about 20 minutes)"
cargo install tansu --version 0.6.0 --locked --no-default-features --features dynostore,libsql,postgres \
  --root "$TOOLS" --target-dir "$TOOLS/tansu-build" --quiet
rm -rf "$TOOLS/tansu-build"
