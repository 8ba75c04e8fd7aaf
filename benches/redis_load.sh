#!/usr/bin/env bash
# Redis hit throughput on loopback against its floors, with a private redis-server (never 6379).
#
#   benches/redis_load.sh                 # everything (~3 min on a 2-core machine)
#   benches/redis_load.sh floor store     # only some parts: floor, store, twiscope
#
# redis-server runs pinned to REDIS_CPU, every client (redis-benchmark, the throughput tool, wrk)
# to CLIENT_CPU. One server for the whole run, so every figure is against the same Redis.
#
# 1. floor:    redis-benchmark -t get of a SIZE-byte value (the key it reads is filled first:
#              `-t get` alone reads a missing key and measures nil replies).
# 2. store:    benches/drivers/redis_throughput.rs with the same size and concurrency: plain fred pool GETs
#              (raw_get), RedisStore::get (store_get) and full cached hits through an axum Router
#              (router_hit), alternating ROUNDS times; ratios to raw_get against the 0.8 goal.
# 3. twiscope: wrk on /trending against twiscope with --cache off, memory and redis://(this
#              server), alternating TW_ROUNDS times. twiscope runs on REDIS_CPU too, so with
#              --cache redis the app and Redis share one core, as they would on a small host.
#
# Settings (environment): SIZE (encoded entry bytes, 2300: a 2 KiB JSON body with its headers),
# CONC (32), DUR (9 s per phase, split across ROUNDS), ROUNDS (3), N (200000 floor requests),
# TW_DUR (8 s), TW_ROUNDS (2), REDIS_CPU (0), CLIENT_CPU (1), EXTRA (more tool options, e.g.
# --diagnose).
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE=${SIZE:-2300}
CONC=${CONC:-32}
DUR=${DUR:-9}
ROUNDS=${ROUNDS:-3}
N=${N:-200000}
TW_DUR=${TW_DUR:-8}
TW_ROUNDS=${TW_ROUNDS:-2}
REDIS_CPU=${REDIS_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
EXTRA=${EXTRA:-}
PARTS=${*:-floor store twiscope}

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
want() { [[ " $PARTS " == *" $1 "* ]]; }
client() { taskset -c "$CLIENT_CPU" "$@"; }

for bin in redis-server redis-cli redis-benchmark taskset; do
    command -v "$bin" >/dev/null || { say "SKIPPED: $bin not installed"; exit 0; }
done

# shellcheck source=benches/redis_here.sh
. "$(dirname "$0")/redis_here.sh"
start_redis "$REDIS_CPU"

say "# machine: $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
say "# $(redis-server --version | cut -d' ' -f1-3)"
say "# load at start: $(uptime | sed 's/.*load average/load average/')"
say "# redis-server on 127.0.0.1:$PORT pinned to cpu $REDIS_CPU; clients on cpu $CLIENT_CPU"
say "# value size $SIZE B, $CONC concurrent clients"

FLOOR_RPS="" FLOOR_P50=""
if want floor; then
    say ""
    say "## floor: redis-benchmark -t get -d $SIZE -n $N -c $CONC -P 1"
    # -x appends stdin as the last argument: a value of exactly SIZE bytes under the key -t get reads.
    head -c "$SIZE" /dev/zero | tr '\0' x | redis-cli -p "$PORT" -x set key:__rand_int__ >/dev/null
    got=$(redis-cli -p "$PORT" strlen key:__rand_int__)
    [[ $got == "$SIZE" ]] || { say "filled $got bytes, not $SIZE"; exit 1; }
    client redis-benchmark -p "$PORT" -t get -d "$SIZE" -n "$N" -c "$CONC" -P 1 -q >"$TMP/floor" 2>&1
    line=$(tr '\r' '\n' <"$TMP/floor" | grep '^GET' | tail -n1)
    echo "floor: $line"
    FLOOR_RPS=$(echo "$line" | sed -n 's/^GET: \([0-9.]*\) requests per second.*/\1/p')
    FLOOR_P50=$(echo "$line" | sed -n 's/.*p50=\([0-9.]*\) msec.*/\1/p')
fi

if want store; then
    say ""
    say "## store: raw fred GET vs RedisStore::get vs router hit (${ROUNDS} alternating rounds, ${DUR} s per phase)"
    cargo build --release -p trc-benches --bin redis_throughput >&2
    # shellcheck disable=SC2086 # EXTRA is a list of options
    client target/release/redis_throughput --redis "$REDIS_URL" --size "$SIZE" \
        --concurrency "$CONC" --seconds "$DUR" --rounds "$ROUNDS" --warmup 0.5 $EXTRA | tee "$TMP/store"
    if [[ -n $FLOOR_RPS ]]; then
        raw=$(awk -F'|' '$2 ~ /raw_get *$/ { gsub(/ /, "", $4); print $4 }' "$TMP/store" | head -n1)
        echo ""
        echo "floor: redis-benchmark $FLOOR_RPS GET/s (p50 $FLOOR_P50 ms); one fred pool $raw GET/s" \
            "= $(awk -v r="$raw" -v f="$FLOOR_RPS" 'BEGIN { printf "%.2f", r / f }')× the floor"
    fi
fi

if want twiscope; then
    say ""
    say "## twiscope /trending: --cache off vs memory vs redis (${TW_ROUNDS} alternating rounds of ${TW_DUR} s)"
    if ! command -v wrk >/dev/null; then
        say "wrk not installed: skipped"
        exit 0
    fi
    if ! cargo build --release --example twiscope >&2; then
        say "twiscope does not build: skipped"
        exit 0
    fi
    TW=target/release/examples/twiscope
    declare -A TW_URL TW_PID
    # start MODE CACHE: twiscope pinned to REDIS_CPU; waits for its one start-up line.
    start() {
        local mode=$1 log="$TMP/twiscope-$1.log" url=""
        taskset -c "$REDIS_CPU" "$TW" --listen 127.0.0.1:0 --cache "$2" >"$log" 2>&1 &
        TW_PID[$mode]=$!
        PIDS+=("$!")
        for _ in $(seq 1 1200); do
            url=$(grep -o 'twiscope listening on http://[0-9.:]*' "$log" | head -n1 | sed 's/.* //' || true)
            [[ -n $url ]] && { TW_URL[$mode]=$url; return 0; }
            kill -0 "${TW_PID[$mode]}" 2>/dev/null || { say "twiscope $mode exited:"; cat "$log" >&2; return 1; }
            sleep 0.1
        done
        say "twiscope $mode did not start"
        return 1
    }
    start off off
    start memory memory
    start redis "$REDIS_URL"
    echo ""
    echo "| round | --cache | req/s | p50 | p99 | non-2xx |"
    echo "|---|---|---:|---:|---:|---:|"
    for mode in off memory redis; do
        curl -fsS -o /dev/null "${TW_URL[$mode]}/trending"
        status=$(curl -fsS -D - -o /dev/null "${TW_URL[$mode]}/trending" | tr -d '\r' | grep -i '^cache-status' || true)
        say "$mode: second /trending answer: ${status:-no Cache-Status}"
        client wrk -t1 -c"$CONC" -d2s "${TW_URL[$mode]}/trending" >/dev/null
    done
    for r in $(seq 1 "$TW_ROUNDS"); do
        for mode in off memory redis; do
            client wrk -t1 -c"$CONC" -d"${TW_DUR}s" --latency "${TW_URL[$mode]}/trending" >"$TMP/wrk"
            rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$TMP/wrk")
            p50=$(awk '$1 == "50%" { print $2 }' "$TMP/wrk")
            p99=$(awk '$1 == "99%" { print $2 }' "$TMP/wrk")
            bad=$(awk '/Non-2xx/ { print $NF }' "$TMP/wrk")
            echo "$rps" >>"$TMP/tw-$mode"
            echo "| $r | $mode | $rps | $p50 | $p99 | ${bad:-0} |"
        done
    done
    mean() { awk '{ s += $1; n++ } END { printf "%.0f", s / n }' "$TMP/tw-$1"; }
    off=$(mean off) mem=$(mean memory) red=$(mean redis)
    echo ""
    echo "twiscope /trending: off $off req/s, memory $mem req/s, redis $red req/s;" \
        "redis/memory $(awk -v a="$red" -v b="$mem" 'BEGIN { printf "%.2f", a / b }')," \
        "redis/off $(awk -v a="$red" -v b="$off" 'BEGIN { printf "%.1f", a / b }')×"
fi

say ""
say "# load at end: $(uptime | sed 's/.*load average/load average/')"
