#!/usr/bin/env bash
# A local AWS-like stack on 127.0.0.1: S3 (moto, behind a fault-injection proxy), Kinesis
# (kinesis-local) and Kafka (tansu when its binary is cached, else librdkafka's mock cluster
# via `pinpipe kafka-mock`). Creates the bucket, streams and topics for PINPIPE_ID.
#
#   scripts/stack.sh up      start everything (installs what is missing), print the env
#   scripts/stack.sh env     print the env to `eval` in a shell
#   scripts/stack.sh down    stop everything
#
# State lives in $PINPIPE_STACK (default /tmp/pinpipe-stack). PINPIPE_BROKER=mock uses the mock
# cluster even where tansu is cached (tansu=require tansu, auto=tansu when cached: default).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
STATE="${PINPIPE_STACK:-/tmp/pinpipe-stack}"
TOOLS="${PINPIPE_TOOLS:-/var/tmp/pinpipe-tools}"
ID="${PINPIPE_ID:-demo}"
BUCKET="${PINPIPE_BUCKET:-pinpipe-local}"
S3_PORT="${PINPIPE_S3_PORT:-5000}" PROXY_PORT="${PINPIPE_S3_PROXY_PORT:-5001}" KINESIS_PORT="${PINPIPE_KINESIS_PORT:-4568}"
KAFKA_PORT="${PINPIPE_KAFKA_PORT:-9092}"
BROKER="${PINPIPE_BROKER:-auto}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/pinpipe-target}"
PINPIPE="${PINPIPE_BIN:-$CARGO_TARGET_DIR/debug/pinpipe}"

wait_port() {
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "error: nothing listens on 127.0.0.1:$1 ($2)" >&2
  return 1
}

start() { # name, command...: runs in the background, pid in $STATE/name.pid
  local name=$1; shift
  nohup "$@" >"$STATE/$name.log" 2>&1 &
  echo $! >"$STATE/$name.pid"
}

print_env() {
  cat "$STATE/env"
}

port_free() {
  if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
    echo "error: port $1 ($2) is already in use: stop what runs there, or set $3" >&2
    exit 1
  fi
}

up() {
  mkdir -p "$STATE" "$TOOLS"
  port_free "$S3_PORT" moto PINPIPE_S3_PORT
  port_free "$PROXY_PORT" "S3 fault proxy" PINPIPE_S3_PROXY_PORT
  port_free "$KINESIS_PORT" kinesis-local PINPIPE_KINESIS_PORT
  local use_tansu=0
  case "$BROKER" in
    tansu) [ -x "$TOOLS/bin/tansu" ] || { echo "error: PINPIPE_BROKER=tansu but $TOOLS/bin/tansu is not built" >&2; exit 1; }
           use_tansu=1 ;;
    auto) [ -x "$TOOLS/bin/tansu" ] && use_tansu=1 ;;
    mock) ;;
    *) echo "error: PINPIPE_BROKER=$BROKER: use auto, tansu or mock" >&2; exit 2 ;;
  esac
  [ $use_tansu = 1 ] && port_free "$KAFKA_PORT" tansu PINPIPE_KAFKA_PORT
  python3 -c 'import moto, boto3' 2>/dev/null || python3 -m pip install --disable-pip-version-check -q 'moto[server]==5.2.1' boto3
  if [ ! -f "$TOOLS/node_modules/kinesis-local/main.js" ]; then
    npm install --prefix "$TOOLS" --no-audit --no-fund --silent kinesis-local@0.6.2
  fi
  [ -x "$PINPIPE" ] || cargo build -p pinpipe-cli

  start moto python3 -m moto.server -H 127.0.0.1 -p "$S3_PORT"
  wait_port "$S3_PORT" moto
  start s3proxy python3 "$REPO/tests/faulty_proxy.py" "http://127.0.0.1:$S3_PORT" "$PROXY_PORT"
  wait_port "$PROXY_PORT" "S3 fault proxy"
  KINESIS_MOCK_CERT_PATH="$TOOLS/node_modules/kinesis-local/server.json" KINESIS_MOCK_PLAIN_PORT="$KINESIS_PORT" \
    KINESIS_MOCK_TLS_PORT=$((KINESIS_PORT + 1)) LOG_LEVEL=WARN \
    start kinesis node "$TOOLS/node_modules/kinesis-local/main.js"
  wait_port "$KINESIS_PORT" kinesis-local

  local broker
  if [ $use_tansu = 1 ]; then
    # A fresh broker each time, like the in-memory moto and kinesis-local: records a previous
    # run left in tansu's database would otherwise show up as this run's duplicates.
    rm -f "$STATE"/tansu.db*
    # tansu takes the sqlite path relative to its working directory.
    start kafka bash -c "cd '$STATE' && exec '$TOOLS/bin/tansu' broker --listener-url tcp://127.0.0.1:$KAFKA_PORT \
      --advertised-listener-url tcp://127.0.0.1:$KAFKA_PORT --storage-engine sqlite://tansu.db"
    wait_port "$KAFKA_PORT" tansu
    for kind in pin geo user; do
      "$TOOLS/bin/tansu" topic create "$ID.$kind" --broker "tcp://127.0.0.1:$KAFKA_PORT" --partitions 1 >/dev/null 2>&1 || true
    done
    broker="127.0.0.1:$KAFKA_PORT"
    echo "tansu" >"$STATE/broker-kind"
  else
    start kafka "$PINPIPE" --id "$ID" kafka-mock
    for _ in $(seq 1 300); do
      broker=$(head -1 "$STATE/kafka.log" 2>/dev/null || true)
      [[ "$broker" == *:* ]] && break
      sleep 0.1
    done
    [[ "$broker" == *:* ]] || { echo "error: kafka-mock did not start: $(cat "$STATE/kafka.log")" >&2; exit 1; }
    if [ "$BROKER" = mock ]; then
      echo "librdkafka mock cluster (PINPIPE_BROKER=mock)" >"$STATE/broker-kind"
    else
      echo "librdkafka mock cluster (tansu not built; cache it at $TOOLS/bin/tansu to use it)" >"$STATE/broker-kind"
    fi
  fi

  cat >"$STATE/env" <<EOF
export PINPIPE_ID=$ID
export AWS_ENDPOINT_URL=http://127.0.0.1:$PROXY_PORT
export AWS_ENDPOINT_URL_KINESIS=http://127.0.0.1:$KINESIS_PORT
export AWS_ALLOW_HTTP=true AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
export PINPIPE_KAFKA_BROKERS=$broker
export PINPIPE_TABLES=s3://$BUCKET/tables PINPIPE_LANDING=s3://$BUCKET PINPIPE_REPORTS=s3://$BUCKET
export PINPIPE_S3_FAULTS=http://127.0.0.1:$PROXY_PORT/__fault__
EOF
  python3 - "$ID" "$BUCKET" "$S3_PORT" "$KINESIS_PORT" <<'PY'
import sys, boto3
pid, bucket, s3_port, kin_port = sys.argv[1:]
kw = dict(region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
boto3.client("s3", endpoint_url=f"http://127.0.0.1:{s3_port}", **kw).create_bucket(Bucket=bucket)
k = boto3.client("kinesis", endpoint_url=f"http://127.0.0.1:{kin_port}", **kw)
for kind in ("pin", "geo", "user"):
    k.create_stream(StreamName=f"streaming-{pid}-{kind}", ShardCount=1)
for kind in ("pin", "geo", "user"):
    k.get_waiter("stream_exists").wait(StreamName=f"streaming-{pid}-{kind}", WaiterConfig={"Delay": 0.2})
PY
  echo "stack up: S3 (moto) via fault proxy, Kinesis (kinesis-local), Kafka: $(cat "$STATE/broker-kind")" >&2
  print_env
}

down() {
  local pids=()
  for f in "$STATE"/*.pid; do
    [ -f "$f" ] || continue
    pids+=("$(cat "$f")")
    rm -f "$f"
  done
  [ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null || true
  # Wait until they are gone (their ports free), then force what is left.
  for _ in $(seq 1 100); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  echo "stack down" >&2
}

case "${1:-}" in
  up) down 2>/dev/null; up ;;
  down) down ;;
  env) print_env ;;
  *) echo "usage: $0 up|down|env" >&2; exit 2 ;;
esac
