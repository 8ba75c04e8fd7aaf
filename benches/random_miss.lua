-- wrk script for `benches/pair_builds.sh MISS:/path`: every request asks `<path>?n=<random>`
-- with n drawn from 1..1e8, so nearly every one is a miss that stores, however long it runs.
init = function(args)
  math.randomseed(os.time())
end

request = function()
  return wrk.format("GET", wrk.path .. "?n=" .. math.random(1, 100000000))
end
