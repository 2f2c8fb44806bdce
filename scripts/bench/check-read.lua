-- wrk script: scripts/bench/tollgate.lua's checks, with each answer's body read for an id
-- as scripts/bench/reserve.lua must read it. A client that reads its answers is slower, and
-- a server fed more slowly spends more CPU per request going idle and waking up; with the
-- same client work on both sides, the server's CPU per operation compares like for like.
-- Run from the repository root (as scripts/bench-holds does).
dofile("scripts/bench/tollgate.lua")
local ids = 0
response = function(status, headers, body)
  if string.match(body, '"id":"(%x+)"') and not string.find(body, '"settled"') then ids = ids + 1 end
end
