#!/usr/bin/env bash
# End to end on the local stack (scripts/stack.sh): `pinpipe serve` + `pinpipe consume` run;
# `pinpipe emulate` sends N posts in batch mode (Kafka) and N other posts in stream mode
# (Kinesis); the sinks land and clean them; the scheduled analysis runs. Then it checks exactly
# 2N distinct posts per table, the raw landing, an empty quarantine, and the same analysis
# results as `pinpipe clean` + `pinpipe analyze` on the generated source.
#
#   scripts/e2e.sh [N]            (default N=500)
#   E2E_CHAOS=1 scripts/e2e.sh    also takes the Kafka brokers down and S3 out mid-run
#
# Prints posts/s end to end and the ingest-to-queryable latency (p50/p99).
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-500}"
CHAOS="${E2E_CHAOS:-0}"
export PINPIPE_ID="${PINPIPE_ID:-e2e}"
export PINPIPE_STACK="${PINPIPE_STACK:-/tmp/pinpipe-e2e-stack}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/pinpipe-target}"
PINPIPE="${PINPIPE_BIN:-$CARGO_TARGET_DIR/debug/pinpipe}"
WORK="$(mktemp -d /tmp/pinpipe-e2e.XXXXXX)"
[ -x "$PINPIPE" ] || cargo build -p pinpipe-cli

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 1
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  bash scripts/stack.sh down 2>/dev/null || true
}
trap cleanup EXIT

bash scripts/stack.sh up >"$WORK/stack.env"
source "$WORK/stack.env"
echo "e2e: N=$N, chaos=$CHAOS, broker: $(cat "$PINPIPE_STACK/broker-kind"), work dir $WORK"

"$PINPIPE" generate --posts $((2 * N)) --seed 11 --out "$WORK/src" >/dev/null
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
API="http://127.0.0.1:$PORT"
"$PINPIPE" serve --listen "127.0.0.1:$PORT" --kafka "$PINPIPE_KAFKA_BROKERS" --produce-timeout-ms 3000 >"$WORK/serve.log" 2>&1 &
pids+=($!)
"$PINPIPE" consume --kafka "$PINPIPE_KAFKA_BROKERS" --kinesis --batch-window-ms 300 >"$WORK/consume.log" 2>&1 &
CONSUMER=$!
pids+=($CONSUMER)
for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done

# Under chaos the posts are spread over about 15 s so that the outages hit the sending.
PACE=()
[ "$CHAOS" = 1 ] && PACE=(--rate $((N / 15 + 1)))
START=$(date +%s.%N)
"$PINPIPE" emulate --api "$API" --mode batch --source "$WORK/src" --count "$N" --batch-size 10 --quiet --retries 30 "${PACE[@]}" >"$WORK/emulate-batch.log" 2>&1 &
EB=$!
"$PINPIPE" emulate --api "$API" --mode stream --source "$WORK/src" --skip "$N" --batch-size 10 --quiet --retries 30 "${PACE[@]}" >"$WORK/emulate-stream.log" 2>&1 &
ES=$!
if [ "$CHAOS" = 1 ]; then
  sleep 3
  KAFKA_PID=$(cat "$PINPIPE_STACK/kafka.pid")
  if grep -q mock "$PINPIPE_STACK/broker-kind"; then
    echo "chaos: Kafka brokers down for 5 s"
    kill -USR1 "$KAFKA_PID" || true; sleep 5; kill -USR2 "$KAFKA_PID" || true
  else
    echo "chaos: restarting tansu"
    kill "$KAFKA_PID" 2>/dev/null || echo "chaos: tansu had already exited (see $PINPIPE_STACK/kafka.log)"
    sleep 3
    (cd "$PINPIPE_STACK" && exec nohup "${PINPIPE_TOOLS:-/var/tmp/pinpipe-tools}/bin/tansu" broker \
      --listener-url "tcp://${PINPIPE_KAFKA_BROKERS}" --advertised-listener-url "tcp://${PINPIPE_KAFKA_BROKERS}" \
      --storage-engine sqlite://tansu.db >>"$PINPIPE_STACK/kafka.log" 2>&1) &
    echo $! >"$PINPIPE_STACK/kafka.pid"
  fi
  echo "chaos: S3 outage (every request 503) for 5 s"
  curl -fsS "$PINPIPE_S3_FAULTS/on?status=503" >/dev/null; sleep 5; curl -fsS "$PINPIPE_S3_FAULTS/off" >/dev/null
fi
wait "$EB" || { echo "e2e: FAIL: the batch-mode emulator failed:"; tail -n 20 "$WORK/emulate-batch.log"; exit 1; }
wait "$ES" || { echo "e2e: FAIL: the stream-mode emulator failed:"; tail -n 20 "$WORK/emulate-stream.log"; exit 1; }
cat "$WORK/emulate-batch.log" "$WORK/emulate-stream.log" | grep -v WARN || true

python3 scripts/e2e_check.py wait $((2 * N)) 600 >"$WORK/queryable.json"
END=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["queryable_at"])' "$WORK/queryable.json")
python3 - "$START" "$END" "$N" <<'PY'
import sys
start, end, n = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
print(f"end to end: {2 * n} posts ({6 * n} records) sent and queryable in {end - start:.1f} s: {2 * n / (end - start):.0f} posts/s")
PY

status=0
python3 scripts/e2e_check.py check $((2 * N)) "$WORK/src" || status=1

# The scheduled analysis: its catch-up from the landing must find nothing new.
cat >"$WORK/event.json" <<EOF
{"version":"0","id":"e2e","detail-type":"Scheduled Event","source":"aws.events","account":"123456789012",
 "time":"2026-11-27T02:00:00Z","region":"us-east-1","resources":[],"detail":{}}
EOF
"$PINPIPE" invoke batch-analysis --event "$WORK/event.json" >"$WORK/analysis.json"
python3 - "$WORK/analysis.json" <<'PY' || status=1
import json, sys
r = json.load(open(sys.argv[1]))
c = r["catch_up"]
ok = c["tabled"] == 0 and c["quarantined"] == 0
print(f"{'ok' if ok else 'FAIL'}: scheduled analysis catch-up added {c['tabled']} rows ({c['skipped']} already present)")
sys.exit(0 if ok else 1)
PY
"$PINPIPE" --id ref clean --landing "$WORK/src" --tables "$WORK/ref-tables" >/dev/null
"$PINPIPE" --id ref analyze --tables "$WORK/ref-tables" --out "$WORK/ref" >/dev/null
python3 scripts/e2e_check.py same "$WORK/ref" || status=1

python3 scripts/e2e_check.py probe "$API" 10 || status=1
grep -h "redeliver" "$WORK/consume.log" | sed "s/\x1b\[[0-9;]*m//g" | head -5 || true
[ $status = 0 ] && echo "e2e: PASS (N=$N, chaos=$CHAOS)" || echo "e2e: FAIL (logs in $WORK)"
exit $status
