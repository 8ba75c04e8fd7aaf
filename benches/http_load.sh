#!/usr/bin/env bash
# HTTP load benchmark on loopback: the server pinned to one core, wrk pinned to the other.
#
#   benches/http_load.sh            # everything (~4 min on a 2-core machine)
#   benches/http_load.sh hit miss   # only some parts: hit, pair, miss, twiscope
#
# 1. hit:      /bare (a handler returning 2 KiB of JSON) against /cached (the same handler behind
#              cache.ttl), alternating ROUNDS times so drift cancels; prints req/s and cached/bare.
# 2. pair:     the same comparison measured in the same seconds: two servers share the server
#              cpu, two wrk share the wrk cpu, PAIR_ROUNDS rounds; steadier on a noisy VM.
# 3. miss:     DISTINCT_URLS distinct URLs, each a miss that stores, against the same handler with
#              no cache (/origin); throughput from the server's own clock (first to last handler
#              call), and peak RSS above the after-start-up baseline against the bytes cached.
# 4. twiscope: --cache off against --cache memory on /trending and /influencers/twitter?limit=10.
#              Skipped with a note when the example does not build yet.
#
# Settings (environment): DUR (10 s per run), ROUNDS (3), PAIR_ROUNDS (8), CONNS (32), DISTINCT_URLS (100000),
# TW_DUR (10 s), TW_ROUNDS (2), TW_CONNS (8: uncached twiscope answers in hundreds of ms),
# SERVER_CPU (0), WRK_CPU (1).
set -euo pipefail
cd "$(dirname "$0")/.."

DUR=${DUR:-10}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-32}
DISTINCT_URLS=${DISTINCT_URLS:-100000}
TW_DUR=${TW_DUR:-10}
TW_ROUNDS=${TW_ROUNDS:-2}
TW_CONNS=${TW_CONNS:-8}
SERVER_CPU=${SERVER_CPU:-0}
WRK_CPU=${WRK_CPU:-1}
PARTS=${*:-hit pair miss twiscope}
PAIR_ROUNDS=${PAIR_ROUNDS:-8}
export DISTINCT_URLS

WRK=${WRK:-wrk}
CLK_TCK=$(getconf CLK_TCK)
TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

say() { printf '%s\n' "$*" >&2; }
want() { [[ " $PARTS " == *" $1 "* ]]; }

say "# machine: $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
say "# load at start: $(uptime | sed 's/.*load average/load average/')"
say "# server on cpu $SERVER_CPU, wrk on cpu $WRK_CPU, $CONNS connections, one wrk thread"

# start NAME CMD... : starts CMD pinned to SERVER_CPU; sets URL and PID once it prints its address.
start() {
    local name=$1 log="$TMP/$1.log"
    shift
    taskset -c "$SERVER_CPU" "$@" >"$log" 2>&1 &
    PID=$!
    PIDS+=("$PID")
    for _ in $(seq 1 1200); do
        URL=$(grep -o 'http://[0-9.:]*' "$log" | head -n1 || true)
        [[ -n $URL ]] && return 0
        kill -0 "$PID" 2>/dev/null || { say "$name exited:"; cat "$log" >&2; return 1; }
        sleep 0.1
    done
    say "$name did not start"; return 1
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# Busy jiffies of every cpu and of one process, to report utilisation over a run.
cpu_busy() { awk -v c="cpu$1" '$1 == c { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
cpu_all() { awk -v c="cpu$1" '$1 == c { print $2 + $3 + $4 + $5 + $6 + $7 + $8 }' /proc/stat; }
proc_cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

# run_wrk PID URL SECONDS : prints "req/s server-cpu% cpuS-busy% cpuW-busy% req-per-server-cpu-s".
# The last figure divides out the cpu time other processes took from the server: it is the
# steadier one on a shared machine.
run_wrk() {
    local pid=$1 url=$2 secs=$3 out="$TMP/wrk.out"
    local p0 s0 sa0 w0 wa0 p1 s1 sa1 w1 wa1
    p0=$(proc_cpu "$pid"); s0=$(cpu_busy "$SERVER_CPU"); sa0=$(cpu_all "$SERVER_CPU")
    w0=$(cpu_busy "$WRK_CPU"); wa0=$(cpu_all "$WRK_CPU")
    taskset -c "$WRK_CPU" "$WRK" -t1 -c"$CONNS" -d"${secs}s" --timeout 30s "$url" >"$out"
    p1=$(proc_cpu "$pid"); s1=$(cpu_busy "$SERVER_CPU"); sa1=$(cpu_all "$SERVER_CPU")
    w1=$(cpu_busy "$WRK_CPU"); wa1=$(cpu_all "$WRK_CPU")
    if grep -q 'Non-2xx' "$out"; then say "non-2xx answers from $url:"; cat "$out" >&2; fi
    awk -v p=$((p1 - p0)) -v t="$CLK_TCK" -v secs="$secs" \
        -v s=$((s1 - s0)) -v sa=$((sa1 - sa0)) -v w=$((w1 - w0)) -v wa=$((wa1 - wa0)) \
        '/^Requests\/sec:/ { printf "%.0f %.0f %.0f %.0f %.0f\n", $2, 100 * p / t / secs,
                             100 * s / sa, 100 * w / wa, (p > 0 ? $2 * secs * t / p : 0) }' "$out"
}

mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
mean() { awk '{ s += $1; n++ } END { printf "%.0f", s / n }'; }
# summary: "M (median D, min L, max H)" of a column of ratios.
summary() {
    sort -n | awk '{ v[NR] = $1; s += $1 } END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%.3f (median %.3f, min %.3f, max %.3f, %d rounds)", s / NR, m, v[1], v[NR], NR }'
}

cargo build --release -p trc-benches --bin bench_server >&2
SERVER=target/release/bench_server

if want hit; then
    start bench_server "$SERVER" --listen 127.0.0.1:0
    say ""
    say "## hit path: /bare vs /cached (${ROUNDS} alternating rounds of ${DUR} s)"
    curl -fsS -o /dev/null "$URL/cached"
    status=$(curl -fsS -D - -o /dev/null "$URL/cached" | tr -d '\r' | grep -i '^cache-status' || true)
    say "second /cached answer: $status"
    # Warm both paths (connections, allocator) before measuring.
    run_wrk "$PID" "$URL/bare" 2 >/dev/null
    run_wrk "$PID" "$URL/cached" 2 >/dev/null
    echo "| round | route | req/s | server process CPU | req per server CPU-second | cpu$SERVER_CPU busy | cpu$WRK_CPU busy (wrk) |"
    echo "|---|---|---:|---:|---:|---:|---:|"
    : >"$TMP/bare"; : >"$TMP/cached"; : >"$TMP/ratios"; : >"$TMP/bare.cpu"; : >"$TMP/cached.cpu"
    for r in $(seq 1 "$ROUNDS"); do
        for route in bare cached; do
            read -r rps pcpu sbusy wbusy per_cpu < <(run_wrk "$PID" "$URL/$route" "$DUR")
            echo "$rps" >>"$TMP/$route"
            echo "$per_cpu" >>"$TMP/$route.cpu"
            echo "| $r | /$route | $rps | $pcpu% | $per_cpu | $sbusy% | $wbusy% |"
        done
        b=$(tail -n1 "$TMP/bare"); c=$(tail -n1 "$TMP/cached")
        awk -v b="$b" -v c="$c" 'BEGIN { printf "%.3f\n", c / b }' >>"$TMP/ratios"
    done
    b=$(mean <"$TMP/bare"); c=$(mean <"$TMP/cached")
    echo ""
    echo "hit: mean /bare $b req/s, mean /cached $c req/s," \
        "cached/bare $(awk -v b="$b" -v c="$c" 'BEGIN { printf "%.3f", c / b }')" \
        "(per round: $(paste -sd' ' "$TMP/ratios"); $(summary <"$TMP/ratios"))"
    b=$(mean <"$TMP/bare.cpu"); c=$(mean <"$TMP/cached.cpu")
    echo "hit per server CPU-second: /bare $b, /cached $c," \
        "cached/bare $(awk -v b="$b" -v c="$c" 'BEGIN { printf "%.3f", c / b }')"
    stop "$PID"
fi

if want pair; then
    # The same comparison with both routes measured in the same seconds: two bench_server
    # processes share the server cpu, two wrk processes share the wrk cpu. Whatever the VM does
    # to a core during a round, it does to both routes, so the per-round ratio is steady where
    # the alternating rounds above swing by ±15 %. Each process gets about half a core, so
    # absolute figures are not comparable with the single-server run.
    say ""
    say "## paired: /bare and /cached at once on two servers (${PAIR_ROUNDS} rounds of ${DUR} s)"
    start bench_server-a "$SERVER" --listen 127.0.0.1:0
    URL_A=$URL PID_A=$PID
    start bench_server-b "$SERVER" --listen 127.0.0.1:0
    URL_B=$URL PID_B=$PID
    for u in "$URL_A" "$URL_B"; do curl -fsS -o /dev/null "$u/cached"; done
    echo ""
    echo "| round | /bare on | /bare req/s | /cached req/s | cached/bare | /bare req per CPU-s | /cached req per CPU-s | cached/bare per CPU-s | cpu$WRK_CPU busy (both wrk) |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
    : >"$TMP/pair.rps"; : >"$TMP/pair.cpu"
    for r in $(seq 0 "$PAIR_ROUNDS"); do
        # Swap which process serves which route, and which wrk starts first, every round.
        if ((r % 2)); then
            bu=$URL_A bp=$PID_A cu=$URL_B cp=$PID_B on=a
        else
            bu=$URL_B bp=$PID_B cu=$URL_A cp=$PID_A on=b
        fi
        secs=$DUR
        ((r == 0)) && secs=2 # round 0 warms both paths and is not reported
        b0=$(proc_cpu "$bp"); c0=$(proc_cpu "$cp"); w0=$(cpu_busy "$WRK_CPU"); wa0=$(cpu_all "$WRK_CPU")
        wrk_b() { taskset -c "$WRK_CPU" "$WRK" -t1 -c"$CONNS" -d"${secs}s" "$bu/bare" >"$TMP/pb.out"; }
        wrk_c() { taskset -c "$WRK_CPU" "$WRK" -t1 -c"$CONNS" -d"${secs}s" "$cu/cached" >"$TMP/pc.out"; }
        if ((r % 2)); then
            wrk_b & wb=$!; wrk_c & wc=$!
        else
            wrk_c & wc=$!; wrk_b & wb=$!
        fi
        wait "$wb" "$wc"
        ((r == 0)) && continue
        b1=$(proc_cpu "$bp"); c1=$(proc_cpu "$cp"); w1=$(cpu_busy "$WRK_CPU"); wa1=$(cpu_all "$WRK_CPU")
        brps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$TMP/pb.out")
        crps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$TMP/pc.out")
        read -r bcpu ccpu ratio cpu_ratio wbusy < <(awk -v b="$brps" -v c="$crps" -v s="$secs" \
            -v t="$CLK_TCK" -v bp=$((b1 - b0)) -v cp=$((c1 - c0)) -v w=$((w1 - w0)) -v wa=$((wa1 - wa0)) \
            'BEGIN { bc = b * s * t / bp; cc = c * s * t / cp;
                     printf "%.0f %.0f %.3f %.3f %.0f\n", bc, cc, c / b, cc / bc, 100 * w / wa }')
        echo "$ratio" >>"$TMP/pair.rps"
        echo "$cpu_ratio" >>"$TMP/pair.cpu"
        echo "| $r | $on | $brps | $crps | $ratio | $bcpu | $ccpu | $cpu_ratio | $wbusy% |"
    done
    echo ""
    echo "paired: cached/bare req/s mean $(summary <"$TMP/pair.rps")," \
        "per server CPU-second mean $(summary <"$TMP/pair.cpu")"
    stop "$PID_A"
    stop "$PID_B"
fi

if want miss; then
    say ""
    say "## miss-heavy: $DISTINCT_URLS distinct URLs, /origin (no cache) vs /miss (stores each)"
    echo ""
    echo "| run | route | req/s (server clock) | req per server CPU-second | handler calls | entries | body bytes cached | weighted_size | RSS after start-up | peak RSS (VmHWM) | peak − baseline | (peak − baseline) / body bytes |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    : >"$TMP/origin"; : >"$TMP/miss"; : >"$TMP/origin.cpu"; : >"$TMP/miss.cpu"
    for r in 1 2; do
        for route in origin miss; do
            start bench_server "$SERVER" --listen 127.0.0.1:0
            curl -fsS -o /dev/null "$URL/stats"
            sleep 0.5
            base=$(status_kib "$PID" VmRSS)
            cpu0=$(proc_cpu "$PID")
            taskset -c "$WRK_CPU" "$WRK" -t1 -c"$CONNS" -d300s -s benches/distinct_urls.lua \
                "$URL/$route" >"$TMP/wrk.out" 2>&1 &
            wrk_pid=$!
            PIDS+=("$wrk_pid")
            # wrk sleeps for its whole -d even after the script stops its thread; interrupt it
            # once the server has seen every URL (SIGINT makes wrk print its summary and exit).
            while :; do
                calls=$(curl -fsS "$URL/stats" | sed -n "s/.*\"$route\":{\"calls\":\([0-9]*\).*/\1/p")
                ((${calls:-0} >= DISTINCT_URLS)) && break
                kill -0 "$wrk_pid" 2>/dev/null || { say "wrk ended early:"; cat "$TMP/wrk.out" >&2; break; }
                sleep 0.2
            done
            sleep 0.5
            kill -INT "$wrk_pid" 2>/dev/null || true
            wait "$wrk_pid" 2>/dev/null || true
            stats=$(curl -fsS "$URL/stats")
            hwm=$(status_kib "$PID" VmHWM)
            cpu1=$(proc_cpu "$PID")
            read -r calls secs < <(echo "$stats" |
                sed -n "s/.*\"$route\":{\"calls\":\([0-9]*\),\"first_to_last_secs\":\([0-9.]*\)}.*/\1 \2/p")
            entries=$(echo "$stats" | sed -n 's/.*"entry_count":\([0-9]*\).*/\1/p')
            weighted=$(echo "$stats" | sed -n 's/.*"weighted_size":\([0-9]*\).*/\1/p')
            body=$(echo "$stats" | sed -n 's/.*"body_bytes_cached":\([0-9]*\).*/\1/p')
            rps=$(awk -v n="$calls" -v s="$secs" 'BEGIN { printf "%.0f", (n - 1) / s }')
            echo "$rps" >>"$TMP/$route"
            per_cpu=$(awk -v n="$calls" -v c=$((cpu1 - cpu0)) -v t="$CLK_TCK" \
                'BEGIN { printf "%.0f", (c > 0 ? n * t / c : 0) }')
            echo "$per_cpu" >>"$TMP/$route.cpu"
            ratio=$(awk -v h="$hwm" -v b="$base" -v c="$body" \
                'BEGIN { if (c > 0) printf "%.2f×", (h - b) * 1024 / c; else print "—" }')
            echo "| $r | /$route | $rps | $per_cpu | $calls | $entries | $body | $weighted | $(mib "$base") | $(mib "$hwm") | $(mib $((hwm - base))) | $ratio |"
            stop "$PID"
        done
    done
    o=$(mean <"$TMP/origin"); m=$(mean <"$TMP/miss")
    echo ""
    echo "miss: mean /origin $o req/s, mean /miss $m req/s," \
        "miss/origin $(awk -v o="$o" -v m="$m" 'BEGIN { printf "%.3f", m / o }')"
    o=$(mean <"$TMP/origin.cpu"); m=$(mean <"$TMP/miss.cpu")
    echo "miss per server CPU-second: /origin $o, /miss $m," \
        "miss/origin $(awk -v o="$o" -v m="$m" 'BEGIN { printf "%.3f", m / o }')"
fi

if want twiscope; then
    say ""
    say "## twiscope: --cache off vs --cache memory (${TW_ROUNDS} alternating rounds of ${TW_DUR} s, $TW_CONNS connections)"
    if ! cargo build --release --example twiscope >&2; then
        say "twiscope does not build yet: skipped"
        exit 0
    fi
    TW=target/release/examples/twiscope
    CONNS=$TW_CONNS
    # Both servers on the server cpu: the idle one costs nothing while the other is measured.
    start twiscope-off "$TW" --listen 127.0.0.1:0 --cache off
    OFF_URL=$URL OFF_PID=$PID
    start twiscope-memory "$TW" --listen 127.0.0.1:0 --cache memory
    MEM_URL=$URL MEM_PID=$PID
    echo ""
    echo "| round | path | --cache | req/s | server process CPU | req per server CPU-second | cpu$SERVER_CPU busy | cpu$WRK_CPU busy (wrk) |"
    echo "|---|---|---|---:|---:|---:|---:|---:|"
    for path in /trending '/influencers/twitter?limit=10'; do
        curl -fsS -o /dev/null "$MEM_URL$path"
        run_wrk "$OFF_PID" "$OFF_URL$path" 2 >/dev/null
        run_wrk "$MEM_PID" "$MEM_URL$path" 2 >/dev/null
        : >"$TMP/off"; : >"$TMP/memory"; : >"$TMP/off.cpu"; : >"$TMP/memory.cpu"
        for r in $(seq 1 "$TW_ROUNDS"); do
            for mode in off memory; do
                if [[ $mode == off ]]; then u=$OFF_URL p=$OFF_PID; else u=$MEM_URL p=$MEM_PID; fi
                read -r rps pcpu sbusy wbusy per_cpu < <(run_wrk "$p" "$u$path" "$TW_DUR")
                echo "$rps" >>"$TMP/$mode"
                echo "$per_cpu" >>"$TMP/$mode.cpu"
                echo "| $r | $path | $mode | $rps | $pcpu% | $per_cpu | $sbusy% | $wbusy% |"
            done
        done
        off=$(mean <"$TMP/off"); mem=$(mean <"$TMP/memory")
        echo "twiscope $path: off $off req/s, memory $mem req/s," \
            "memory/off $(awk -v o="$off" -v m="$mem" 'BEGIN { printf "%.1f", m / o }')×"
        off=$(mean <"$TMP/off.cpu"); mem=$(mean <"$TMP/memory.cpu")
        echo "twiscope $path per server CPU-second: off $off, memory $mem," \
            "memory/off $(awk -v o="$off" -v m="$mem" 'BEGIN { printf "%.1f", m / o }')×"
    done
    stop "$OFF_PID"; stop "$MEM_PID"
fi

say ""
say "# load at end: $(uptime | sed 's/.*load average/load average/')"
