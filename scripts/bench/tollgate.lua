-- wrk script: POST /v1/check for one of KEYS client IPs, round robin.
-- TOLLGATE_BENCH_KEYS sets KEYS (default 10000).
local KEYS = tonumber(os.getenv("TOLLGATE_BENCH_KEYS") or "10000")
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = (n + 1) % KEYS
  local body = string.format(
    '{"domain":"bench","descriptors":[{"entries":[{"key":"remote_address","value":"10.%d.%d.%d"}]}],"hits":1}',
    math.floor(n / 65536), math.floor(n / 256) % 256, n % 256)
  return wrk.format(nil, "/v1/check", nil, body)
end
