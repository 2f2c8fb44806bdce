-- wrk script: POST /v1/check for one of KEYS client IPs, round robin.
local KEYS = 10000
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = (n + 1) % KEYS
  local body = string.format(
    '{"domain":"bench","descriptors":[{"entries":[{"key":"remote_address","value":"10.0.%d.%d"}]}],"hits":1}',
    math.floor(n / 256), n % 256)
  return wrk.format(nil, "/v1/check", nil, body)
end
