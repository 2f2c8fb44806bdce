-- wrk script for scripts/bench-redis: POST /v1/check on descriptor key MODE (local, global
-- or leased) with one of KEYS values, round robin. KEYS=1 is one hot key.
local MODE = os.getenv("TOLLGATE_BENCH_MODE") or "global"
local KEYS = tonumber(os.getenv("TOLLGATE_BENCH_KEYS") or "1")
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = (n + 1) % KEYS
  local body = string.format(
    '{"domain":"bench","descriptors":[{"entries":[{"key":"%s","value":"v%d"}]}],"hits":1}', MODE, n)
  return wrk.format(nil, "/v1/check", nil, body)
end
