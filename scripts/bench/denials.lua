-- wrk script: like tollgate.lua, but one request in ten comes from a hot client limited
-- to 10/s, so about a tenth of the decisions are denials (for the events benchmark).
local KEYS = tonumber(os.getenv("TOLLGATE_BENCH_KEYS") or "10000")
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = (n + 1) % KEYS
  local body
  if n % 10 == 0 then
    body = '{"domain":"bench","descriptors":[{"entries":[{"key":"tier","value":"hot"}]}],"hits":1}'
  else
    body = string.format(
      '{"domain":"bench","descriptors":[{"entries":[{"key":"remote_address","value":"10.%d.%d.%d"}]}],"hits":1}',
      math.floor(n / 65536), math.floor(n / 256) % 256, n % 256)
  end
  return wrk.format(nil, "/v1/check", nil, body)
end
