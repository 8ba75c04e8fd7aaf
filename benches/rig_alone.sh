#!/usr/bin/env bash
# Each of the peer rig's binaries alone, alternating, with the server CPU it spent per request.
#
#   benches/rig_alone.sh miss|hit BINARY...     (BINARY: a path, e.g. target/peer-bench/target/release/ours-redis)
#
# Per round and binary: a fresh server and an emptied Redis (its own `redis-server`, started here
# on RP, default 6392 — never the rig's 6391), server and Redis pinned to CPU 0, wrk on CPU 1
# (`lua/miss.lua` over 100k ids, or `/trending` warm). Prints req/s, p50/p99, and the server's and
# Redis's CPU per request from /proc/PID/stat. The rig's interleaved mode compares contestants;
# this compares builds of one contestant, and says where the CPU went (server or Redis).
# Knobs: RP (6392), ROUNDS (3), DUR (4 s), C (64), T (2), PORT (18300). Loopback only.
set -uo pipefail
SCEN=${1:?miss or hit}; shift
RP=${RP:-6392}; ROUNDS=${ROUNDS:-3}; DUR=${DUR:-4}; C=${C:-64}; T=${T:-2}; PORT=${PORT:-18300}
LUA=$(cd "$(dirname "$0")/../../shared/peer-bench/lua" 2>/dev/null && pwd) || LUA=${LUA:?set LUA to the lua folder of the peer rig}
taskset -c 0 redis-server --port "$RP" --bind 127.0.0.1 --save '' --appendonly no --logfile /dev/null & RPID=$!
SPID=
trap 'kill $RPID $SPID 2>/dev/null' EXIT
for _ in $(seq 50); do redis-cli -p "$RP" ping >/dev/null 2>&1 && break; sleep 0.1; done
REPORT='
import sys, re
r, name, out, s0, s1, r0, r1 = sys.argv[1:]
f = dict(re.findall(r"(\w+)=([0-9.]+)", out))
n = int(f["requests"]); srv = (float(s1) - float(s0)) / 100; red = (float(r1) - float(r0)) / 100
rps, p50, p99 = float(f["rps"]), f["p50_us"], f["p99_us"]
print(f"{r} {name}: {rps:.0f} req/s p50 {p50} us p99 {p99} us; "
      f"CPU per request: server {srv / n * 1e6:.1f} us, redis {red / n * 1e6:.1f} us")'
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
for r in $(seq "$ROUNDS"); do
  for b in "$@"; do
    redis-cli -p "$RP" flushall >/dev/null
    REDIS_URL="redis://127.0.0.1:$RP/0" taskset -c 0 "$b" "$PORT" 2>/dev/null & SPID=$!
    for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/static" && break; sleep 0.1; done
    if [ "$SCEN" = hit ]; then
      URL=http://127.0.0.1:$PORT/trending; S=$LUA/report.lua
      for _ in 1 2 3; do curl -s -o /dev/null "$URL"; done
    else
      URL=http://127.0.0.1:$PORT/; S=$LUA/miss.lua
    fi
    s0=$(cpu $SPID); r0=$(cpu $RPID)
    out=$(taskset -c 1 wrk -t"$T" -c"$C" -d"${DUR}s" --timeout 5s -s "$S" "$URL" -- 100000 2>/dev/null | grep RESULT)
    s1=$(cpu $SPID); r1=$(cpu $RPID)
    kill $SPID; wait $SPID 2>/dev/null; SPID=
    python3 -c "$REPORT" "$r" "$(basename "$b")" "$out" "$s0" "$s1" "$r0" "$r1"
  done
done
