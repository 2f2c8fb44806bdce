-- One Tollgate decision over a batch of counters, atomically, on the store's clock.
--
-- This is tollgate-core's algorithms (crates/tollgate-core/src/algorithm) and the memory
-- store's batch rule (crates/tollgate-core/src/store/memory.rs) restated in Lua; the
-- conformance tests in crates/tollgate-redis/tests hold the two to identical answers.
--
-- Lua numbers are doubles, exact up to 2^53. Absolute times (about 2^61 ns since 1970) do
-- not fit, so a time is stored as "seconds nanoseconds" and every computation runs on
-- nanoseconds relative to now, which stay exact for anything within 104 days.
--
-- KEYS[i]: the i-th counter.
-- ARGV[1]: 0 = all or nothing, 1 = every request counts, 2 = lease (one counter: give back
--          ARGV[11] unused tokens, then take up to `cost`; see Limit::lease).
-- ARGV[2], ARGV[3]: 'server', '' to use the store's clock, or the caller's seconds and
--                   nanoseconds (tests on a manual clock).
-- ARGV[4 + 7(i-1) ..]: algorithm (1 fixed, 2 gcra, 3 sliding), requests, period ns,
--                   burst, emission ns, cost, enforce (0/1).
-- Lease reply: granted, remaining, reset_after, retry_after (-1: none), valid_for.
-- Reply: per counter, 8 integers: allowed, remaining, reset_after, retry_after (-1: none),
--        then the outcome's state: seconds, nanoseconds, a, b.
-- Stored value: "seconds nanoseconds a b" (expiry time, then the algorithm's two counts).

local E9 = 1000000000
local FRESH = -math.huge
local every = ARGV[1] == '1'
local now_s, now_n
if ARGV[2] == 'server' then
  local t = redis.call('TIME')
  now_s = tonumber(t[1])
  now_n = tonumber(t[2]) * 1000
else
  now_s = tonumber(ARGV[2])
  now_n = tonumber(ARGV[3])
end

-- floor(a / b) for non-negative integers, exact where a double division may round.
local function idiv(a, b)
  local q = math.floor(a / b)
  if q * b > a then
    q = q - 1
  elseif (q + 1) * b <= a then
    q = q + 1
  end
  return q
end

-- Relative nanoseconds back to absolute seconds and nanoseconds.
local function absolute(r)
  local t = now_n + r
  local carry = idiv(t - (t % E9), E9)
  return now_s + carry, t - carry * E9
end

-- now mod period: periods are whole seconds (every policy unit) or divide one second.
local function now_mod(p)
  if p % E9 == 0 then
    return (now_s % (p / E9)) * E9 + now_n
  elseif E9 % p == 0 then
    return now_n % p
  end
  error({ err = 'tollgate: a period of ' .. p .. ' ns is neither whole seconds nor a divisor of one second' })
end

local function load(key)
  local v = redis.call('GET', key)
  if not v then
    return { e = FRESH, a = 0, b = 0 }
  end
  local s, n, a, b = string.match(v, '^(%d+) (%d+) (%d+) (%d+)$')
  if not s then
    return { e = FRESH, a = 0, b = 0 }
  end
  return { e = (tonumber(s) - now_s) * E9 + (tonumber(n) - now_n), a = tonumber(a), b = tonumber(b) }
end

local function outcome(allowed, remaining, reset, retry, state)
  return { allowed = allowed, remaining = remaining, reset = reset, retry = retry, state = state }
end

-- Fixed window -------------------------------------------------------------------------
local function fixed_unpack(op, st)
  local current = -now_mod(op.period)
  if st.e > current and st.a > 0 then
    return st.e, st.a
  end
  return current + op.period, 0
end

local function fixed_decide(op, st, cost)
  local window_end, count = fixed_unpack(op, st)
  local after = count + cost
  if after <= op.requests then
    local state = st
    if cost > 0 then state = { e = window_end, a = after, b = 0 } end
    return outcome(true, op.requests - after, window_end, nil, state)
  end
  local retry = nil
  if cost <= op.requests then retry = window_end end
  return outcome(false, math.max(op.requests - count, 0), window_end, retry, st)
end

local function fixed_charge(op, st, cost)
  local window_end, count = fixed_unpack(op, st)
  return { e = window_end, a = count + cost, b = 0 }
end

-- GCRA -----------------------------------------------------------------------------------
local function gcra_decide(op, st, cost)
  local t = op.emission
  local capacity = op.burst * t
  local tat = math.max(st.e, 0)
  local new_tat = tat + cost * t
  if new_tat <= capacity then
    local state = st
    if cost > 0 then state = { e = new_tat, a = 0, b = 0 } end
    return outcome(true, idiv(capacity - new_tat, t), new_tat, nil, state)
  end
  local retry = nil
  if cost <= op.burst then retry = new_tat - capacity end
  return outcome(false, idiv(math.max(capacity - tat, 0), t), tat, retry, st)
end

local function gcra_charge(op, st, cost)
  local t = op.emission
  local tat = math.min(math.max(st.e, 0) + cost * t, op.burst * t)
  return { e = math.max(tat, st.e), a = 0, b = 0 }
end

-- Sliding window -------------------------------------------------------------------------
local function sliding_unpack(op, st)
  local p = op.period
  local current = -now_mod(p)
  if (st.a == 0 and st.b == 0) or st.e <= current then
    return current, 0, 0
  end
  local start = st.e - 2 * p
  if start >= current then
    return start, st.a, st.b
  elseif start + p == current then
    return current, st.b, 0
  end
  return current, 0, 0
end

local function slices(p)
  if p % 1000 == 0 then return 1000, p / 1000 end
  return p, 1
end

local function sliding_retry(op, start, prev, curr, cost)
  if cost > op.requests then return nil end
  local p = op.period
  local n, slice = slices(p)
  local function earliest(w_count, fresh)
    local room = op.requests - fresh - cost
    if room < 0 then return nil end
    if w_count == 0 then return 0 end
    local max_weight = idiv(room * n, w_count)
    return math.max(n - max_weight, 0) * slice
  end
  local e = earliest(prev, curr)
  if e and e < p then
    return math.max(start + e, 0)
  end
  e = earliest(curr, 0)
  if not e then return nil end
  return math.max(start + p + e, 0)
end

local function sliding_decide(op, st, cost)
  local p = op.period
  local start, prev, curr = sliding_unpack(op, st)
  local n, slice = slices(p)
  local elapsed = math.min(math.max(-start, 0), p - 1)
  local weight = n - idiv(elapsed, slice)
  local weighted_prev = prev * weight
  local after = curr + cost
  local allowed = weighted_prev + after * n <= op.requests * n
  local available = math.max(idiv(math.max(op.requests * n - weighted_prev, 0), n) - curr, 0)
  local window_end = start + p
  local reset = 0
  if curr > 0 or (allowed and cost > 0) then
    reset = window_end + p
  elseif prev > 0 then
    reset = window_end
  end
  if allowed then
    local state = st
    if cost > 0 then state = { e = window_end + p, a = prev, b = after } end
    return outcome(true, available - cost, reset, nil, state)
  end
  return outcome(false, available, reset, sliding_retry(op, start, prev, curr, cost), st)
end

local function sliding_charge(op, st, cost)
  local start, prev, curr = sliding_unpack(op, st)
  return { e = start + 2 * op.period, a = prev, b = math.min(curr + cost, 4294967295) }
end

-- The batch ------------------------------------------------------------------------------
local function decide(op, st, cost)
  if op.requests == 0 and cost > 0 then
    return outcome(false, 0, 0, nil, st)
  end
  if op.algorithm == 1 then return fixed_decide(op, st, cost) end
  if op.algorithm == 2 then return gcra_decide(op, st, cost) end
  return sliding_decide(op, st, cost)
end

local function charge(op, st, o)
  if o.allowed or op.cost == 0 then return o.state end
  if op.algorithm == 1 then return fixed_charge(op, st, op.cost) end
  if op.algorithm == 2 then return gcra_charge(op, st, op.cost) end
  return sliding_charge(op, st, op.cost)
end

local function refund(op, st, cost)
  if cost == 0 or st.e == FRESH then return st end
  if op.algorithm == 1 then
    local window_end, count = fixed_unpack(op, st)
    if window_end ~= st.e then return st end
    return { e = window_end, a = math.max(count - cost, 0), b = 0 }
  elseif op.algorithm == 2 then
    return { e = math.max(st.e - cost * op.emission, math.min(0, st.e)), a = 0, b = 0 }
  end
  local start, prev, curr = sliding_unpack(op, st)
  if start + 2 * op.period ~= st.e then return st end
  return { e = st.e, a = prev, b = math.max(curr - cost, 0) }
end

local function save(key, st)
  local s, n = absolute(st.e)
  -- Kept one second past the moment it is as good as fresh.
  local ttl = math.max(math.ceil(st.e / 1000000), 0) + 1000
  redis.call('SET', key, string.format('%d %d %d %d', s, n, st.a, st.b), 'PX', ttl)
end

local function parse_op(base)
  return {
    algorithm = tonumber(ARGV[base]),
    requests = tonumber(ARGV[base + 1]),
    period = tonumber(ARGV[base + 2]),
    burst = tonumber(ARGV[base + 3]),
    emission = tonumber(ARGV[base + 4]),
    cost = tonumber(ARGV[base + 5]),
    enforce = ARGV[base + 6] == '1',
  }
end

if ARGV[1] == '2' then
  local op = parse_op(4)
  local st = load(KEYS[1])
  local before = st
  st = refund(op, st, tonumber(ARGV[11]))
  local room = decide(op, st, 0).remaining
  local granted = math.min(op.cost, room)
  local o
  if granted > 0 then
    o = decide(op, st, granted)
    st = o.state
  else
    o = decide(op, st, math.max(math.min(op.cost, math.max(op.burst, 1)), 1))
  end
  if st ~= before then save(KEYS[1], st) end
  local valid_for = op.period
  if op.algorithm ~= 2 then valid_for = op.period - now_mod(op.period) end
  local retry = -1
  if granted == 0 and o.retry then retry = o.retry end
  return { granted, o.remaining, o.reset, retry, valid_for }
end

local ops, outs, staged, view = {}, {}, {}, {}
local admitted = true
for i = 1, #KEYS do
  local op = parse_op(4 + 7 * (i - 1))
  ops[i] = op
  local key = KEYS[i]
  local st = view[key] or load(key)
  local o = decide(op, st, op.cost)
  outs[i] = o
  if every then staged[i] = charge(op, st, o) else staged[i] = o.state end
  view[key] = staged[i]
  if op.enforce and not o.allowed then admitted = false end
end

if not every and not admitted then
  -- Nothing is consumed: ops that would have admitted report the counter as it is.
  for i = 1, #KEYS do
    if outs[i].allowed then
      outs[i] = decide(ops[i], load(KEYS[i]), 0)
    end
  end
else
  for i = 1, #KEYS do
    if ops[i].cost > 0 and (outs[i].allowed or every) then
      save(KEYS[i], staged[i])
    end
  end
end

local reply = {}
for i = 1, #KEYS do
  local o = outs[i]
  local s, n = 0, 0
  if o.state.e ~= FRESH then s, n = absolute(o.state.e) end
  local retry = -1
  if o.retry then retry = o.retry end
  local allowed = 0
  if o.allowed then allowed = 1 end
  local base = 8 * (i - 1)
  reply[base + 1] = allowed
  reply[base + 2] = o.remaining
  reply[base + 3] = o.reset
  reply[base + 4] = retry
  reply[base + 5] = s
  reply[base + 6] = n
  reply[base + 7] = o.state.a
  reply[base + 8] = o.state.b
end
return reply
