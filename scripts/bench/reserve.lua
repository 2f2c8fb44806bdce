-- wrk script: reserve then commit, alternating per hold: a request is a commit when a
-- reservation's id is waiting, else a new reservation for one of KEYS client IPs.
-- TOLLGATE_BENCH_KEYS sets KEYS (default 10000).
local KEYS = tonumber(os.getenv("TOLLGATE_BENCH_KEYS") or "10000")
local n = 0
local ids = {}
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  local id = table.remove(ids)
  if id then
    return wrk.format(nil, "/v1/reservations/" .. id .. "/commit", nil, '{"actual":3}')
  end
  n = (n + 1) % KEYS
  local body = string.format(
    '{"domain":"bench","descriptors":[{"entries":[{"key":"remote_address","value":"10.%d.%d.%d"}]}],"estimate":5,"ttl_ms":60000}',
    math.floor(n / 65536), math.floor(n / 256) % 256, n % 256)
  return wrk.format(nil, "/v1/reservations", nil, body)
end
response = function(status, headers, body)
  local id = string.match(body, '"id":"(%x+)"')
  if id and not string.find(body, '"settled"') then table.insert(ids, id) end
end
