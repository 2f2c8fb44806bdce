-- wrk script: the same decisions as tollgate.lua, in throttlecrab-server's HTTP API.
-- TOLLGATE_BENCH_KEYS sets the number of distinct keys (default 10000).
local KEYS = tonumber(os.getenv("TOLLGATE_BENCH_KEYS") or "10000")
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = (n + 1) % KEYS
  local body = string.format(
    '{"key":"ip:10.%d.%d.%d","max_burst":1000000,"count_per_period":1000000,"period":1,"quantity":1}',
    math.floor(n / 65536), math.floor(n / 256) % 256, n % 256)
  return wrk.format(nil, "/throttle", nil, body)
end
