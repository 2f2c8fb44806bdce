-- One Tollgate decision over a batch of counters, atomically, on the store's clock.
--
-- This is tollgate-core's algorithms (crates/tollgate-core/src/algorithm) and the memory
-- store's batch rule (crates/tollgate-core/src/store/memory.rs) restated in Lua; the
-- conformance tests in crates/tollgate-redis/tests hold the two to identical answers.
--
-- Lua numbers are doubles, exact up to 2^53. Absolute times (about 2^61 ns since 1970) do
-- not fit, so a time is kept as seconds and nanoseconds and every computation runs on
-- nanoseconds relative to now, which stay exact for anything within 104 days.
--
-- Arguments, replies and stored values are little-endian doubles packed with `struct`:
-- converting numbers to and from text costs more than the decision itself. This script
-- runs on every decision, so it is written for the interpreter: few closures (each
-- `local function` is rebuilt on every call), no text formatting, the TTL rewritten only
-- when it must grow.
--
-- KEYS[i]: the i-th counter.
-- ARGV[1]: '0' all or nothing, '1' every request counts, '2' lease (one counter).
-- ARGV[2]: '' for the store's clock (TIME), or <seconds, nanoseconds> of the caller's.
-- ARGV[3]: per counter <algorithm (1 fixed, 2 gcra, 3 sliding), requests, period ns,
--          burst, emission ns, cost, flags>; flags: 0 shadow, 1 enforced, 2 quota mode
--          not enforced, 3 quota mode enforced (tollgate-core's `batch_admits`: quota-mode
--          counters deny only together, and an unenforced one counts as admitting); for a
--          lease, cost is the tokens
--          wanted and an 8th double is the unused tokens to give back first.
-- Reply: per counter <allowed, remaining, reset_after, retry_after (-1: none), state
--        seconds, nanoseconds, a, b>; for a lease <granted, remaining, reset_after,
--        retry_after, valid_for>.
-- Stored: <expiry seconds, nanoseconds, a, b, TTL end seconds>.

local E9 = 1000000000
local FRESH = -math.huge
local KEEP_EXTRA_MS = 60000
local pack, unpack = struct.pack, struct.unpack
local floor, max, min = math.floor, math.max, math.min
local mode = ARGV[1]
local now_s, now_n
if ARGV[2] == '' then
  local t = redis.call('TIME')
  now_s = tonumber(t[1])
  now_n = tonumber(t[2]) * 1000
else
  now_s, now_n = unpack('<dd', ARGV[2])
end

-- floor(a / b) for integers, exact where a double division may round.
local function idiv(a, b)
  local q = floor(a / b)
  if q * b > a then
    q = q - 1
  elseif (q + 1) * b <= a then
    q = q + 1
  end
  return q
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

-- A stored counter as {e = expiry relative to now, a, b, ttl = TTL end in seconds}.
local function load(key)
  local v = redis.call('GET', key)
  if not v or #v ~= 40 then
    return { e = FRESH, a = 0, b = 0, ttl = 0 }
  end
  local s, n, a, b, ttl = unpack('<ddddd', v)
  return { e = (s - now_s) * E9 + (n - now_n), a = a, b = b, ttl = ttl }
end

local function save(key, st, old_ttl)
  local t = now_n + st.e
  local carry = idiv(t - (t % E9), E9)
  local s, n = now_s + carry, t - carry * E9
  -- Kept a while past the moment it is as good as fresh; the TTL is only rewritten when it
  -- must grow, which for a busy counter is rarely.
  local needed = s + 2
  if old_ttl >= needed then
    redis.call('SET', key, pack('<ddddd', s, n, st.a, st.b, old_ttl), 'KEEPTTL')
  else
    local ms = max(st.e / 1000000, 0) + KEEP_EXTRA_MS
    redis.call('SET', key, pack('<ddddd', s, n, st.a, st.b, now_s + floor(ms / 1000)), 'PX', floor(ms))
  end
end

-- (window start, previous count, current count) of a sliding window.
local function sliding(p, st)
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

-- An op's outcome for `cost`: allowed, remaining, reset_after, retry_after (nil: none) and
-- the state to keep if it commits. Mirrors Limit::decide.
local function decide(op, st, cost)
  local requests = op[2]
  if requests == 0 and cost > 0 then
    return { false, 0, 0, nil, st }
  end
  local algorithm, p = op[1], op[3]
  if algorithm == 1 then
    local window_end, count = -now_mod(p) + p, 0
    if st.e > window_end - p and st.a > 0 then
      window_end, count = st.e, st.a
    end
    local after = count + cost
    if after <= requests then
      local state = st
      if cost > 0 then state = { e = window_end, a = after, b = 0, ttl = st.ttl } end
      return { true, requests - after, window_end, nil, state }
    end
    local retry = nil
    if cost <= requests then retry = window_end end
    return { false, max(requests - count, 0), window_end, retry, st }
  elseif algorithm == 2 then
    local t, burst = op[5], op[4]
    local capacity = burst * t
    local tat = max(st.e, 0)
    local new_tat = tat + cost * t
    if new_tat <= capacity then
      local state = st
      if cost > 0 then state = { e = new_tat, a = 0, b = 0, ttl = st.ttl } end
      return { true, idiv(capacity - new_tat, t), new_tat, nil, state }
    end
    local retry = nil
    if cost <= burst then retry = new_tat - capacity end
    return { false, idiv(max(capacity - tat, 0), t), tat, retry, st }
  end
  local start, prev, curr = sliding(p, st)
  local n, slice = p, 1
  if p % 1000 == 0 then n, slice = 1000, p / 1000 end
  local elapsed = min(max(-start, 0), p - 1)
  local weighted_prev = prev * (n - idiv(elapsed, slice))
  local after = curr + cost
  local allowed = weighted_prev + after * n <= requests * n
  local available = max(idiv(max(requests * n - weighted_prev, 0), n) - curr, 0)
  local window_end = start + p
  local reset = 0
  if curr > 0 or (allowed and cost > 0) then
    reset = window_end + p
  elseif prev > 0 then
    reset = window_end
  end
  if allowed then
    local state = st
    if cost > 0 then state = { e = window_end + p, a = prev, b = after, ttl = st.ttl } end
    return { true, available - cost, reset, nil, state }
  end
  -- When the same request fits: in this window once enough slices of the previous one
  -- have passed, else in the next, where today's count becomes the previous one.
  local retry = nil
  if cost <= requests then
    local room = requests - curr - cost
    local e = nil
    if room >= 0 then
      e = 0
      if prev > 0 then e = max(n - idiv(room * n, prev), 0) * slice end
    end
    if e and e < p then
      retry = max(start + e, 0)
    else
      room = requests - cost
      e = 0
      if curr > 0 then e = max(n - idiv(room * n, curr), 0) * slice end
      retry = max(start + p + e, 0)
    end
  end
  return { false, available, reset, retry, st }
end

-- The state after counting `cost` whether it fits or not (Limit::charge).
local function charge(op, st, o, cost)
  if o[1] or cost == 0 then return o[5] end
  local algorithm, p = op[1], op[3]
  if algorithm == 1 then
    -- The window lookup of `decide`, repeated rather than shared: a helper would be one
    -- more closure rebuilt on every call.
    local window_end, count = -now_mod(p) + p, 0
    if st.e > window_end - p and st.a > 0 then
      window_end, count = st.e, st.a
    end
    return { e = window_end, a = count + cost, b = 0, ttl = st.ttl }
  elseif algorithm == 2 then
    local capacity = op[4] * op[5]
    local tat = min(max(st.e, 0) + cost * op[5], capacity)
    return { e = max(tat, st.e), a = 0, b = 0, ttl = st.ttl }
  end
  local start, prev, curr = sliding(p, st)
  return { e = start + 2 * p, a = prev, b = min(curr + cost, 4294967295), ttl = st.ttl }
end

local ops = {}
local width = 7
if mode == '2' then width = 8 end
for i = 1, #KEYS do
  ops[i] = { unpack('<ddddddd', ARGV[3], (i - 1) * width * 8 + 1) }
end

if mode == '2' then
  -- Lease: give back unused tokens (Limit::refund), then take what fits (Limit::lease).
  local op = ops[1]
  local back = unpack('<d', ARGV[3], 57)
  local st = load(KEYS[1])
  local before = st
  local algorithm, p = op[1], op[3]
  if back > 0 and st.e ~= FRESH then
    if algorithm == 1 then
      if st.e > now_mod(p) * -1 and st.a > 0 then
        st = { e = st.e, a = max(st.a - back, 0), b = 0, ttl = st.ttl }
      end
    elseif algorithm == 2 then
      st = { e = max(st.e - back * op[5], min(0, st.e)), a = 0, b = 0, ttl = st.ttl }
    else
      local start, prev, curr = sliding(p, st)
      if start + 2 * p == st.e then
        st = { e = st.e, a = prev, b = max(curr - back, 0), ttl = st.ttl }
      end
    end
  end
  local want = op[6]
  local granted = min(want, decide(op, st, 0)[2])
  local o
  if granted > 0 then
    o = decide(op, st, granted)
    st = o[5]
  else
    o = decide(op, st, max(min(want, max(op[4], 1)), 1))
  end
  if st ~= before then save(KEYS[1], st, before.ttl) end
  local valid_for = p
  if algorithm ~= 2 then valid_for = p - now_mod(p) end
  local retry = -1
  if granted == 0 and o[4] then retry = o[4] end
  return pack('<ddddd', granted, o[2], o[3], retry, valid_for)
end

local every = mode == '1'
local outs, staged, view, loaded = {}, {}, {}, {}
local admitted = true
local quota, quota_ok = false, false
for i = 1, #KEYS do
  local op, key = ops[i], KEYS[i]
  local st = view[key]
  if not st then
    st = load(key)
    loaded[key] = st
  end
  local cost = op[6]
  local o = decide(op, st, cost)
  outs[i] = o
  if every then staged[i] = charge(op, st, o, cost) else staged[i] = o[5] end
  view[key] = staged[i]
  local flags = op[7]
  if flags >= 2 then
    quota = true
    if flags == 2 or o[1] then quota_ok = true end
  elseif flags == 1 and not o[1] then
    admitted = false
  end
end
if quota and not quota_ok then admitted = false end

if not every and not admitted then
  -- Nothing is consumed: ops that would have admitted report the counter as it is.
  for i = 1, #KEYS do
    if outs[i][1] then
      outs[i] = decide(ops[i], loaded[KEYS[i]] or load(KEYS[i]), 0)
    end
  end
else
  for i = 1, #KEYS do
    if ops[i][6] > 0 and (outs[i][1] or every) then
      local key = KEYS[i]
      save(key, staged[i], loaded[key] and loaded[key].ttl or 0)
    end
  end
end

local reply = {}
for i = 1, #KEYS do
  local o = outs[i]
  local state = o[5]
  local s, n = 0, 0
  if state.e ~= FRESH then
    local t = now_n + state.e
    local carry = idiv(t - (t % E9), E9)
    s, n = now_s + carry, t - carry * E9
  end
  reply[i] = pack('<dddddddd', o[1] and 1 or 0, o[2], o[3], o[4] or -1, s, n, state.a, state.b)
end
return table.concat(reply)
