#!/usr/bin/env bash
# Two builds of bench_server side by side, in the same seconds: both servers share the server
# cpu, two wrk (one per server) share the wrk cpu, so whatever the machine does during a round
# it does to both builds. Prints, per route, each round's new/base ratio of req/s and of
# requests per server CPU-second.
#
#   benches/pair_builds.sh BASE_BIN NEW_BIN [ROUTE...]
#
# ROUTE is `GET:/path`, `POST:/path` or `MISS:/path`, which asks `/path?n=<random>` (each
# request a miss that stores, through benches/random_miss.lua; both servers' stores grow
# alike). Default: GET:/bare GET:/cached POST:/app/post.
# Settings (environment): DUR (10 s), ROUNDS (6), CONNS (32), SERVER_CPU (0), WRK_CPU (1).
set -euo pipefail
BASE=$1 NEW=$2
shift 2
ROUTES=${*:-GET:/bare GET:/cached POST:/app/post}
DUR=${DUR:-10} ROUNDS=${ROUNDS:-6} CONNS=${CONNS:-32} SERVER_CPU=${SERVER_CPU:-0} WRK_CPU=${WRK_CPU:-1}
CLK_TCK=$(getconf CLK_TCK)
TMP=$(mktemp -d)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"' EXIT

start() { # start NAME BIN -> URL
    taskset -c "$SERVER_CPU" "$2" --listen 127.0.0.1:0 >"$TMP/$1.log" 2>&1 &
    PIDS+=("$!")
    eval "PID_$1=$!"
    for _ in $(seq 1 100); do
        url=$(grep -o 'http://[0-9.:]*' "$TMP/$1.log" | head -n1 || true)
        [[ -n $url ]] && { eval "URL_$1=$url"; return; }
        sleep 0.1
    done
    echo "$1 did not start" >&2; exit 1
}
proc_cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
start base "$BASE"
start new "$NEW"
printf 'wrk.method = "POST"\nwrk.body = "{}"\nwrk.headers["Content-Type"] = "application/json"\n' >"$TMP/post.lua"

for route in $ROUTES; do
    method=${route%%:*} path=${route#*:}
    script=() verb=$method
    [[ $method == POST ]] && script=(-s "$TMP/post.lua")
    [[ $method == MISS ]] && script=(-s "$(dirname "$0")/random_miss.lua") verb=GET
    curl -fsS -o /dev/null -X "$verb" "$URL_base$path"; curl -fsS -o /dev/null -X "$verb" "$URL_new$path"
    echo ""
    echo "### $method $path: $ROUNDS rounds of ${DUR} s"
    echo ""
    echo "| round | base req/s | new req/s | new/base | new/base per CPU-s |"
    echo "|---|---:|---:|---:|---:|"
    : >"$TMP/r"; : >"$TMP/c"
    for r in $(seq 0 "$ROUNDS"); do
        secs=$DUR; ((r == 0)) && secs=2
        b0=$(proc_cpu "$PID_base"); n0=$(proc_cpu "$PID_new")
        run() { taskset -c "$WRK_CPU" wrk -t1 -c"$CONNS" -d"${secs}s" "${script[@]}" "$1$path" >"$TMP/$2.out"; }
        if ((r % 2)); then run "$URL_base" b & wb=$!; run "$URL_new" n & wn=$!
        else run "$URL_new" n & wn=$!; run "$URL_base" b & wb=$!; fi
        wait "$wb" "$wn"
        ((r == 0)) && continue
        b1=$(proc_cpu "$PID_base"); n1=$(proc_cpu "$PID_new")
        brps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$TMP/b.out")
        nrps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$TMP/n.out")
        read -r ratio cratio < <(awk -v b="$brps" -v n="$nrps" -v bc=$((b1 - b0)) -v nc=$((n1 - n0)) \
            'BEGIN { printf "%.3f %.3f\n", n / b, (n / nc) / (b / bc) }')
        echo "$ratio" >>"$TMP/r"; echo "$cratio" >>"$TMP/c"
        echo "| $r | $brps | $nrps | $ratio | $cratio |"
    done
    echo ""
    awk -v p="$method $path" 'NR==FNR { a[++n]=$1; next } { c[++m]=$1 }
        END { asort(a); asort(c); sa=0; sc=0; for (i=1;i<=n;i++) sa+=a[i]; for (i=1;i<=m;i++) sc+=c[i];
              printf "%s: new/base req/s mean %.3f (median %.3f), per CPU-s mean %.3f (median %.3f)\n",
                p, sa/n, a[int((n+1)/2)], sc/m, c[int((m+1)/2)] }' "$TMP/r" "$TMP/c"
done
