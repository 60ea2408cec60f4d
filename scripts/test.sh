#!/usr/bin/env bash
# Runs every test: Rust unit tests, then the end-to-end suite that drives the real `pinpipe`
# binary against real Delta tables (read back with the deltalake package), DuckDB as an
# independent implementation, and moto's S3 on 127.0.0.1. Installs what it needs, idempotently.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
  echo "error: cargo not found; install a Rust toolchain (rustup) first" >&2
  exit 1
fi
# C build tools for the bundled native libraries; node and npm for kinesis-local.
# java for PySpark (tests/test_spark_sql.py runs sql/spark/ on Spark 3.5).
source scripts/build-deps.sh node:nodejs npm:npm java:openjdk-17-jre-headless
export PINPIPE_TOOLS="${PINPIPE_TOOLS:-/var/tmp/pinpipe-tools}"
if [ ! -f "$PINPIPE_TOOLS/node_modules/kinesis-local/main.js" ]; then
  mkdir -p "$PINPIPE_TOOLS"
  npm install --prefix "$PINPIPE_TOOLS" --no-audit --no-fund --silent kinesis-local@0.6.2
fi

# A real Kafka broker for the topic-creating custom resource and the end-to-end run.
bash scripts/build-tansu.sh

python3 -c 'import deltalake, duckdb, pyarrow, pytest, moto, boto3, pyspark, samtranslator' 2>/dev/null ||
  python3 -m pip install --disable-pip-version-check -q -r tests/requirements.txt

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/pinpipe-target}"
if [ "${CI:-}" = "true" ]; then
  export CARGO_INCREMENTAL=0 CARGO_PROFILE_DEV_DEBUG=0
fi

bash scripts/lint-infra.sh
cargo build --locked -p pinpipe-cli
# The fault schedules' unit test runs 40 schedules by default; the test command runs 1,000.
PINPIPE_SCHEDULES="${PINPIPE_SCHEDULES:-1000}" cargo test --locked --workspace
# Lints as errors where the toolchain has clippy (rustup's default profile does; it cannot be
# fetched here when missing, so then this step says so and is skipped).
if cargo clippy --version >/dev/null 2>&1; then
  cargo clippy --locked --workspace --all-targets -- -D warnings
else
  echo "note: cargo clippy is not installed; lint step skipped"
fi
python3 -m pytest tests/ -q -p no:cacheprovider "$@"
# The whole pipeline on the local stack (tansu where its binary is cached, else the mock
# cluster), then again with a broker outage and an S3 outage. The outage drill runs on the
# mock cluster: tansu 0.6's sqlite storage failed on its own during it (see README).
bash scripts/e2e.sh "${E2E_POSTS:-100}"
PINPIPE_BROKER=mock E2E_CHAOS=1 bash scripts/e2e.sh "${E2E_POSTS:-100}"
