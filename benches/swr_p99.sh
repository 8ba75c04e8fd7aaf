#!/usr/bin/env bash
# twiscope's /trending on Redis across expiries, with and without stale-while-revalidate: the
# latency the user who arrives just after an expiry pays. A private redis-server (never 6379).
#
#   benches/swr_p99.sh                    # ROUNDS alternating runs of each mode (~1 min)
#   TW=target/debug/examples/twiscope SCALE=0.05 DUR=4 ROUNDS=1 benches/swr_p99.sh   # smoke run
#
# twiscope runs with a simulated query cost (TWISCOPE_QUERY_DELAY_MS) and a short /trending TTL
# (TWISCOPE_TRENDING_TTL_MS), so a steady wrk load crosses several expiries in one run; once with
# SWR (the default on Redis) and once with TWISCOPE_SWR=0. twiscope and redis-server are pinned
# to SERVER_CPU, wrk to WRK_CPU, as in http_load.sh. wrk measures every request; the table gives
# p50, p99, p99.9 and max in milliseconds, and "slow": the share of latencies of at least half the
# query delay, i.e. of requests that waited for the query instead of getting a cached answer
# (of wrk's samples, which it corrects for coordinated omission: see latency_percentiles.lua).
#
# Settings (environment): DELAY_MS (200), TTL_MS (2000), DUR (12 s), THREADS (2), CONNS (16),
# ROUNDS (2), SERVER_CPU (0), WRK_CPU (1), SCALE (1: the data set twiscope seeds), TW (a twiscope
# binary; default: build the release one).
set -euo pipefail
cd "$(dirname "$0")/.."

DELAY_MS=${DELAY_MS:-200}
TTL_MS=${TTL_MS:-2000}
DUR=${DUR:-12}
THREADS=${THREADS:-2}
CONNS=${CONNS:-16}
ROUNDS=${ROUNDS:-2}
SERVER_CPU=${SERVER_CPU:-0}
WRK_CPU=${WRK_CPU:-1}
WRK=${WRK:-wrk}
SCALE=${SCALE:-1}
TW=${TW:-}

TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '%s\n' "$*" >&2; }

for bin in redis-server redis-cli "$WRK" taskset curl; do
    command -v "$bin" >/dev/null || { say "SKIPPED: $bin not installed"; exit 0; }
done

if [[ -z $TW ]]; then
    cargo build --release --example twiscope >&2
    TW=target/release/examples/twiscope
fi

# shellcheck source=benches/redis_here.sh
. "$(dirname "$0")/redis_here.sh"
start_redis "$SERVER_CPU"

say "# machine: $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
say "# load at start: $(uptime | sed 's/.*load average/load average/')"
say "# twiscope ($TW) and redis-server on cpu $SERVER_CPU, wrk on cpu $WRK_CPU"
say "# /trending: query delay $DELAY_MS ms, TTL $TTL_MS ms; wrk -t$THREADS -c$CONNS -d${DUR}s"

# start_twiscope SWR : starts twiscope on a flushed Redis with the knobs; sets URL and PID.
start_twiscope() {
    local log="$TMP/twiscope.log"
    redis-cli -p "$PORT" flushall >/dev/null
    TWISCOPE_QUERY_DELAY_MS=$DELAY_MS TWISCOPE_TRENDING_TTL_MS=$TTL_MS TWISCOPE_SWR=$1 \
        TWISCOPE_SCALE=$SCALE taskset -c "$SERVER_CPU" "$TW" --listen 127.0.0.1:0 --cache "$REDIS_URL" >"$log" 2>&1 &
    PID=$!
    PIDS+=("$PID")
    for _ in $(seq 1 1200); do
        URL=$(grep -o 'http://[0-9.:]*' "$log" | head -n1 || true)
        [[ -n $URL ]] && return 0
        kill -0 "$PID" 2>/dev/null || { say "twiscope exited:"; cat "$log" >&2; return 1; }
        sleep 0.1
    done
    say "twiscope did not start"; return 1
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
db_queries() { curl -fsS "$1/metrics" | awk '$1 == "twiscope_db_queries_total" { print $2 }'; }

echo "| round | SWR | req/s | p50 ms | p99 ms | p99.9 ms | max ms | requests | slow (≥ $((DELAY_MS / 2)) ms) % | queries run |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
: >"$TMP/on"; : >"$TMP/off"
for r in $(seq 1 "$ROUNDS"); do
    for mode in on off; do
        swr=1
        [[ $mode == off ]] && swr=0
        start_twiscope "$swr"
        # The first computation is not part of the run: the load starts on a fresh entry.
        curl -fsS -o /dev/null "$URL/trending"
        q0=$(db_queries "$URL")
        SLOW_MS=$((DELAY_MS / 2)) taskset -c "$WRK_CPU" "$WRK" -t"$THREADS" -c"$CONNS" -d"${DUR}s" \
            --latency --timeout 30s -s benches/latency_percentiles.lua "$URL/trending" >"$TMP/wrk.out"
        q1=$(db_queries "$URL")
        if grep -q 'Non-2xx' "$TMP/wrk.out"; then say "non-2xx answers:"; cat "$TMP/wrk.out" >&2; fi
        rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$TMP/wrk.out")
        line=$(grep '^percentiles ' "$TMP/wrk.out")
        read -r p50 p99 p999 max n slow < <(echo "$line" | sed 's/[a-z0-9.]*=//g; s/^percentiles //')
        echo "$p50 $p99 $p999 $max $slow" >>"$TMP/$mode"
        echo "| $r | $mode | $rps | $p50 | $p99 | $p999 | $max | $n | $slow | $((q1 - q0)) |"
        stop "$PID"
    done
done

echo ""
for mode in on off; do
    awk -v m="$mode" '{ p50 += $1; p99 += $2; p999 += $3; if ($4 > max) max = $4; slow += $5; n++ }
        END { printf "SWR %s: mean p50 %.2f ms, mean p99 %.2f ms, mean p99.9 %.2f ms, max %.2f ms, mean slow %.3f %% (%d runs)\n",
              m, p50 / n, p99 / n, p999 / n, max, slow / n, n }' "$TMP/$mode"
done
say ""
say "# load at end: $(uptime | sed 's/.*load average/load average/')"
