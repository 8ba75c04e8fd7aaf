-- wrk script: prints the latency percentiles past wrk's own 99 %, and how many requests took at
-- least SLOW_MS milliseconds (those that waited for the query instead of a cached answer).
-- One "percentiles" line, parsed by benches/swr_p99.sh.
local slow_ms = tonumber(os.getenv("SLOW_MS") or "100")

done = function(summary, latency, requests)
    -- The share of requests under SLOW_MS: the highest percentile still under it, by bisection
    -- (wrk's percentiles are exact ranks over every recorded latency).
    local below, above = 0, 100
    if latency.max < slow_ms * 1000 then
        below = 100
    end
    for _ = 1, 40 do
        if below == 100 then break end
        local mid = (below + above) / 2
        if latency:percentile(mid) < slow_ms * 1000 then below = mid else above = mid end
    end
    local slow = math.floor(summary.requests * (100 - below) / 100 + 0.5)
    io.write(string.format(
        "percentiles p50=%.3f p99=%.3f p99.9=%.3f max=%.3f requests=%d slow=%d\n",
        latency:percentile(50) / 1000, latency:percentile(99) / 1000,
        latency:percentile(99.9) / 1000, latency.max / 1000,
        summary.requests, slow))
end
