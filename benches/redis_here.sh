# Sourced by the benchmark scripts that need their own redis-server: `start_redis CPU` starts one
# on a free loopback port (never 6379) pinned to CPU, with nothing kept on disk, and sets PORT and
# REDIS_URL. Expects from the caller: TMP (a scratch dir), PIDS (an array its trap kills) and
# `say` (prints to stderr).

# A free loopback port, never 6379; checked twice: the kernel's answer, then nobody answering PING.
free_port() {
    local p
    while :; do
        p=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        [[ $p != 6379 ]] && ! redis-cli -p "$p" ping >/dev/null 2>&1 && { echo "$p"; return; }
    done
}

start_redis() {
    PORT=$(free_port)
    REDIS_URL="redis://127.0.0.1:$PORT/0"
    taskset -c "$1" redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$TMP" --logfile "$TMP/redis.log" &
    PIDS+=("$!")
    for _ in $(seq 1 100); do
        redis-cli -p "$PORT" ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    redis-cli -p "$PORT" ping >/dev/null || { say "redis-server did not start:"; cat "$TMP/redis.log" >&2; exit 1; }
}
