-- wrk script: scripts/bench/tollgate.lua's checks, with each answer's body read for an id
-- as scripts/bench/reserve.lua must read it. A client that reads its answers is slower, and
-- a server fed more slowly spends more CPU per request going idle and waking up; with the
-- same client work on both sides, the server's CPU per operation compares like for like.
local KEYS = tonumber(os.getenv("TOLLGATE_BENCH_KEYS") or "10000")
local n = 0
local ids = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = (n + 1) % KEYS
  local body = string.format(
    '{"domain":"bench","descriptors":[{"entries":[{"key":"remote_address","value":"10.%d.%d.%d"}]}],"hits":1}',
    math.floor(n / 65536), math.floor(n / 256) % 256, n % 256)
  return wrk.format(nil, "/v1/check", nil, body)
end
response = function(status, headers, body)
  if string.match(body, '"id":"(%x+)"') and not string.find(body, '"settled"') then ids = ids + 1 end
end
