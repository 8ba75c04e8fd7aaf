-- wrk script: prints the latency percentiles past wrk's own 99 %, and the share of latencies of
-- at least SLOW_MS milliseconds (requests that waited for the query instead of a cached answer).
-- wrk corrects its latency samples for coordinated omission (a connection stuck on one slow
-- response stands for the requests it would have sent meanwhile), so the share is of its samples,
-- not of the requests completed. One "percentiles" line, parsed by benches/swr_p99.sh.
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
    io.write(string.format(
        "percentiles p50=%.3f p99=%.3f p99.9=%.3f max=%.3f requests=%d slow=%.3f\n",
        latency:percentile(50) / 1000, latency:percentile(99) / 1000,
        latency:percentile(99.9) / 1000, latency.max / 1000,
        summary.requests, 100 - below))
end
