#!/usr/bin/env bash
# One end-to-end run of `afterok bench` against a fresh `afterok dev`: a new
# database and a new JetStream data directory each time, so runs compare.
# Usage: scripts/bench-e2e.sh [label] [bench flags...]
#   e.g. scripts/bench-e2e.sh p8 --messages 60000 --order-size 100 --clients 8
#        AFTEROK_PARTITIONS=1 scripts/bench-e2e.sh p1 --messages 60000
# PROFILE=N keeps an N-second CPU profile of afterok, taken 10 s into the run.
# SIM=out runs the simulator as its own process (`afterok provider-sim`
# beside `afterok serve --roles all`) instead of inside `afterok dev`.
# Environment: ADMIN_URL (default postgres://postgres@127.0.0.1:5432/postgres),
# BIN (default bin/afterok: the bench client), SERVER_BIN (default $BIN: the
# system under test, e.g. an older build to compare with), OUT (default var/bench). Prints the bench report
# and `afterok verify`'s verdict; keeps both in $OUT/<label>-<time>.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
label=${1:-run}; shift || true
BIN=${BIN:-bin/afterok}
SERVER_BIN=${SERVER_BIN:-$BIN}
ADMIN_URL=${ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
OUT=${OUT:-var/bench}
mkdir -p "$OUT"
db="afterok_bench_$(date +%s)_$$"
data=$(mktemp -d)
port=$((18000 + RANDOM % 1000)); simport=$((port + 1000))
out="$OUT/$label-$(date -u +%Y%m%dT%H%M%SZ).txt"
url="${ADMIN_URL%/*}/$db"
psql -q "$ADMIN_URL" -c "CREATE DATABASE $db"
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  [ -n "${simpid:-}" ] && kill "$simpid" 2>/dev/null && wait "$simpid" 2>/dev/null || true
  psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true
  rm -rf "$data"
}
trap cleanup EXIT
export DATABASE_URL=$url AFTEROK_RATE_LIMIT=${AFTEROK_RATE_LIMIT:-100000} AFTEROK_RATE_BURST=${AFTEROK_RATE_BURST:-100000} \
  AFTEROK_DATA_DIR=$data AFTEROK_ADDR=127.0.0.1:$port AFTEROK_SIM_ADDR=127.0.0.1:$simport
if [ -n "${PROFILE:-}" ]; then
  # PROFILE=N: a CPU profile of the afterok process over N seconds, taken
  # 10 s into the run, kept beside the report (go tool pprof -top <file>).
  export AFTEROK_PPROF_ADDR=127.0.0.1:$((port + 2000))
fi
if [ "${SIM:-}" = out ]; then
  # The simulator in its own process, so that the bench reports its CPU
  # apart from afterok's: `afterok serve --roles all` beside it.
  "$SERVER_BIN" provider-sim --callback "http://127.0.0.1:$port" >"$data/sim.log" 2>&1 &
  simpid=$!
  "$SERVER_BIN" serve --roles all >"$data/dev.log" 2>&1 &
else
  "$SERVER_BIN" dev >"$data/dev.log" 2>&1 &
fi
pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done
# The server's memory while the bench runs: the Go heap in use (the
# process's own /metrics) and its RSS, every 5 s; the peaks go in the report.
(
  while kill -0 "$pid" 2>/dev/null; do
    heap=$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^go_memstats_heap_inuse_bytes /{print $2}')
    rss=$(awk '/^VmRSS/{print $2*1024}' "/proc/$pid/status" 2>/dev/null)
    echo "$(date +%s) ${heap:-0} ${rss:-0}"
    sleep 5
  done
) >"$data/memory.txt" &
if [ -n "${PROFILE:-}" ]; then
  (sleep 10; curl -s -o "${out%.txt}.pprof" "http://$AFTEROK_PPROF_ADDR/debug/pprof/profile?seconds=$PROFILE") &
fi
{
  echo "# $label $(date -u +%FT%TZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2) x$(nproc), load $(cut -d' ' -f1-3 /proc/loadavg), AFTEROK_PARTITIONS=${AFTEROK_PARTITIONS:-default}, AFTEROK_TAIL_CACHE=${AFTEROK_TAIL_CACHE:-default}, simulator ${SIM:-in process}, server $SERVER_BIN"
  "$BIN" bench --url "http://127.0.0.1:$port" --sim-url "http://127.0.0.1:$simport" "$@" || echo "# bench exited with $? (its --timeout?): verify runs all the same"
  # Where the tail reads were answered, and what the tail statements cost.
  echo "# tail"
  curl -s "http://127.0.0.1:$port/metrics" | grep -E '^afterok_tail_reads_total|^afterok_db_query_seconds_(count|sum)\{statement="tail' || true
  echo "# verify"
  "$SERVER_BIN" verify 2>&1 | tail -3
  awk '{ if ($2 > h) h = $2; if ($3 > r) r = $3 } END { printf "# memory: peak Go heap in use %.2f GB, peak RSS %.2f GB (%d samples, 5 s apart)\n", h/1e9, r/1e9, NR }' "$data/memory.txt"
} | tee "$out"
