-- wrk script for the miss-heavy run of benches/http_load.sh: every request asks for a different
-- URL, `<path>?n=1`, `?n=2`, … so each one is a miss that stores. The thread stops after
-- DISTINCT_URLS responses (default 100000). Use it with -t1: each wrk thread has its own counter.
--
--   DISTINCT_URLS=100000 wrk -t1 -c32 -d120s -s benches/distinct_urls.lua http://127.0.0.1:3001/miss

local total = tonumber(os.getenv("DISTINCT_URLS") or "100000")
local n = 0
local answered = 0

function request()
  n = n + 1
  return wrk.format("GET", wrk.path .. "?n=" .. n)
end

function response(status, headers, body)
  answered = answered + 1
  if status ~= 200 then
    io.stderr:write("unexpected status " .. status .. "\n")
  end
  if answered >= total then
    wrk.thread:stop()
  end
end
