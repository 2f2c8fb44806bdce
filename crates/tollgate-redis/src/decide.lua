-- One Tollgate decision over a batch of counters, atomically, on the store's clock.
--
-- This is tollgate-core's algorithms (crates/tollgate-core/src/algorithm) and the memory
-- store's batch rule (crates/tollgate-core/src/store/memory.rs) restated in Lua; the
-- conformance suite (crates/tollgate-testkit/src/conformance.rs) holds the two to identical
-- answers and states.
--
-- Lua numbers are doubles, exact up to 2^53 only: 104 days in nanoseconds, less than a
-- year window, far less than a GCRA bucket of 1,000 at 1 per year. So every time and every
-- span here is a pair of whole seconds and nanoseconds (0 <= ns < 10^9), exact across
-- tollgate-core's domain (`algorithm::domain`: periods up to a century, buckets up to a
-- million years deep); counts and costs are plain numbers, below 2^53.
--
-- Arguments, replies and stored values are little-endian doubles packed with `struct`:
-- converting numbers to and from text costs more than the decision itself. This script
-- runs on every decision, so it is written for the interpreter: no text formatting, the
-- TTL rewritten only when it must grow, pairs passed as two values rather than tables.
--
-- KEYS[1]: the domain's hold index (a sorted set of hold ids by deadline, milliseconds);
--         every mode first releases the holds whose deadline has passed (see `purge`).
-- KEYS[2..]: the counters; with mode '3' KEYS[2] is the new hold's record and the counters
--         follow; with modes '4' and '5' KEYS[2] is the hold's record, KEYS[3] its
--         settlement.
-- ARGV[1]: '0' all or nothing, '1' every request counts, '2' lease (one counter),
--          '3' reserve (all or nothing, then keep what was taken as a hold), '4' settle a
--          hold, '5' extend a hold (tollgate-core's `hold` module), '6' independent
--          batches one after another, each all or nothing, '7' the same, every request
--          counting (`Store::apply_many`).
-- ARGV[2]: '' for the store's clock (TIME), or <seconds, nanoseconds> of the caller's.
-- ARGV[3]: per counter 9 doubles <algorithm (1 fixed, 2 gcra, 3 sliding, 4 quota,
--          5 concurrency, 6 gcra restarting with a debt), requests, period s, period ns,
--          burst, emission s, emission ns, cost, flags>
--          (a quota is a fixed window whose bounds the caller computed from the calendar:
--          its emission slots carry the window's start, its period the window's length,
--          so no calendar arithmetic happens here); flags: 0
--          shadow, 1 enforced, 2 quota mode not enforced, 3 quota mode enforced
--          (tollgate-core's `batch_admits`: quota-mode counters deny only together, and an
--          unenforced one counts as admitting); for a lease, cost is the tokens wanted and
--          a 10th double is the unused tokens to give back first. A concurrency limit (5)
--          carries in its emission slots until when the slots it takes are held (0: it
--          only asks whether one is free). A GCRA bucket restarting with a debt (6,
--          Limit::restarting_with) carries the debt in its period slots: an idle one
--          (its TAT reached) restarts at now + debt, and a zero cost keeps the restart.
--          Mode '4': <how (1 commit, 2 release), actual>; mode '5': <deadline s, ns>.
-- ARGV[4]: modes '3', '4', '5': the hold's id; modes '6', '7': each batch's number of
--          counters, as doubles. ARGV[5]: mode '3': <kind (1 reservation,
--          2 lease), deadline s, ns>.
-- Hold record: <kind, deadline s, ns, n>, n times <algorithm, requests, period s, ns,
--         burst, emission s, ns, amount, taken s, ns>, then the n counter names joined by
--         newlines. Settlement: <how, actual, forget s, ns>, kept 120 s (`hold::SETTLED_KEPT`).
-- Reply (modes '4', '5': <code, how, actual>, code 0 unknown, 1 done, 2 repeated, 3
--        settled otherwise): per counter 10 doubles <allowed, remaining, reset_after s, ns, retry_after s
--        (-1: none), ns, state s, ns, a, b>; for a lease 8 <granted, remaining,
--        reset_after s, ns, retry_after s (-1: none), ns, valid_for s, ns>.
-- Stored: <expiry seconds, nanoseconds, a, b, TTL end seconds>; a missing counter reads
--         as expiry 0 with no counts, which every algorithm treats as fresh.

local E9 = 1000000000
local MAX_COUNT = 9007199254740992 -- 2^53, tollgate-core's `domain::MAX_COUNT`
local HALF = 1048576               -- 2^20, see `mul`
local KEEP_EXTRA_S = 60
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

-- floor(a / b) for integers below 2^53, exact where a double division may round.
local function idiv(a, b)
  local q = floor(a / b)
  if q * b > a then
    q = q - 1
  elseif (q + 1) * b <= a then
    q = q + 1
  end
  return q
end

-- Pairs: a < b, a + b, a - b (seconds may go negative; nanoseconds stay in [0, 10^9)).
local function lt(as, an, bs, bn)
  return as < bs or (as == bs and an < bn)
end

local function add(as, an, bs, bn)
  local n = an + bn
  if n >= E9 then return as + bs + 1, n - E9 end
  return as + bs, n
end

local function sub(as, an, bs, bn)
  local n = an - bn
  if n < 0 then return as - bs - 1, n + E9 end
  return as - bs, n
end

-- k x (ts, tn) exactly, for a whole k below 2^33 whose product stays below 2^53 seconds:
-- k's nanoseconds are multiplied in two halves so that no partial product passes 2^53.
local function mul(k, ts, tn)
  local hi = floor(k / HALF)
  local x = (k - hi * HALF) * tn
  local xs = idiv(x, E9)
  local y = hi * tn
  local ys = idiv(y, E9)
  local z = (y - ys * E9) * HALF
  local zs = idiv(z, E9)
  local s = k * ts + xs + ys * HALF + zs
  local n = (x - xs * E9) + (z - zs * E9)
  if n >= E9 then return s + 1, n - E9 end
  return s, n
end

-- ceil(u / t) for pairs, when the quotient is below 2^33: a double estimate, corrected by
-- whole intervals against the exact remainder.
local function ceil_div(us, un, ts, tn)
  local q = floor((us * E9 + un) / (ts * E9 + tn))
  local rs, rn = sub(us, un, mul(q, ts, tn))
  while rs < 0 do
    q = q - 1
    rs, rn = add(rs, rn, ts, tn)
  end
  while not lt(rs, rn, ts, tn) do
    q = q + 1
    rs, rn = sub(rs, rn, ts, tn)
  end
  if rs > 0 or rn > 0 then q = q + 1 end
  return q
end

-- Start of the window of period (ps, pn) that holds (ts, tn): periods are whole seconds
-- (every policy unit) or divide one second.
local function window_at(ps, pn, ts, tn)
  if pn == 0 then return ts - ts % ps, 0 end
  if ps == 0 and E9 % pn == 0 then return ts, tn - tn % pn end
  error({ err = 'tollgate: a period of ' .. ps .. ' s ' .. pn .. ' ns is neither whole seconds nor a divisor of one second' })
end

local function window_start(ps, pn)
  return window_at(ps, pn, now_s, now_n)
end

-- Start of the window an op counts in: epoch-aligned for windows, given for quotas.
local function window_of(op)
  if op[1] == 4 then return op[6], op[7] end
  return window_start(op[3], op[4])
end

-- (window start s, ns, period s, ns) of an op, to add into its window's end.
local function ws_of(op)
  local ws, wn = window_of(op)
  return ws, wn, op[3], op[4]
end

local function load(key)
  local v = redis.call('GET', key)
  if not v or #v ~= 40 then
    return { s = 0, n = 0, a = 0, b = 0, ttl = 0 }
  end
  local s, n, a, b, ttl = unpack('<ddddd', v)
  return { s = s, n = n, a = a, b = b, ttl = ttl }
end

local function save(key, st, old_ttl)
  -- Kept a while past the moment it is as good as fresh; the TTL is only rewritten when it
  -- must grow, which for a busy counter is rarely.
  if old_ttl >= st.s + 2 then
    redis.call('SET', key, pack('<ddddd', st.s, st.n, st.a, st.b, old_ttl), 'KEEPTTL')
  else
    -- Whole seconds from now (the caller's clock may not be the store's): a number Lua
    -- turns into text exactly even for a bucket a million years deep, where milliseconds
    -- would print as 3.15e+16.
    local ex = max(st.s - now_s, 0) + KEEP_EXTRA_S
    redis.call('SET', key, pack('<ddddd', st.s, st.n, st.a, st.b, now_s + ex), 'EX', ex)
  end
end

-- The TAT a GCRA decision starts from (gcra::live_tat): now for a bucket that has
-- refilled, or for one restarting with a debt (6) now + debt once its TAT is reached.
local function live_tat(op, st)
  if op[1] == 6 then
    if lt(now_s, now_n, st.s, st.n) then return st.s, st.n end
    return add(now_s, now_n, op[3], op[4])
  end
  if lt(st.s, st.n, now_s, now_n) then return now_s, now_n end
  return st.s, st.n
end

-- (window start s, ns, previous count, current count) of a sliding window.
local function sliding(ps, pn, st)
  local cs, cn = window_start(ps, pn)
  if (st.a == 0 and st.b == 0) or not lt(cs, cn, st.s, st.n) then
    return cs, cn, 0, 0
  end
  local ds, dn = add(ps, pn, ps, pn)
  local ss, sn = sub(st.s, st.n, ds, dn)
  if not lt(ss, sn, cs, cn) then
    -- Same window, or the clock stepped back: keep the newer counts.
    return ss, sn, st.a, st.b
  end
  local es, en = add(ss, sn, ps, pn)
  if es == cs and en == cn then return cs, cn, st.b, 0 end
  return cs, cn, 0, 0
end

-- An op's outcome for `cost`: {ok, rem, rs/rn reset_after, ys/yn retry_after (nil: none),
-- st the state to keep if it commits}. Mirrors Limit::decide.
local function decide(op, st, cost)
  local requests = op[2]
  if requests == 0 then
    return { ok = cost == 0, rem = 0, rs = 0, rn = 0, st = st }
  end
  local algorithm, ps, pn = op[1], op[3], op[4]
  if algorithm == 5 then
    -- Concurrency (tollgate-core's algorithm/concurrency.rs): slots held until st.
    local held = 0
    if lt(now_s, now_n, st.s, st.n) then held = st.a end
    local after = held + cost
    local us, un = op[6], op[7]
    if after <= requests then
      local takes = cost > 0 and lt(now_s, now_n, us, un)
      local state, count = st, held
      if takes then
        local es, en = st.s, st.n
        if lt(es, en, us, un) then es, en = us, un end
        state = { s = es, n = en, a = after, b = 0, ttl = st.ttl }
        count = after
      end
      local rs, rn = 0, 0
      if count > 0 then rs, rn = sub(state.s, state.n, now_s, now_n) end
      return { ok = true, rem = requests - count, rs = rs, rn = rn, st = state }
    end
    local rs, rn = 0, 0
    if held > 0 then rs, rn = sub(st.s, st.n, now_s, now_n) end
    local o = { ok = false, rem = max(requests - held, 0), rs = rs, rn = rn, st = st }
    if cost <= requests then o.ys, o.yn = rs, rn end
    return o
  end
  if algorithm == 1 or algorithm == 4 then
    local ws, wn = window_of(op)
    local es, en, count = st.s, st.n, st.a
    if count == 0 or not lt(ws, wn, es, en) then
      es, en = add(ws, wn, ps, pn)
      count = 0
    end
    local rs, rn = sub(es, en, now_s, now_n)
    -- A quota's window came from the caller's clock; the store's may be past its end.
    if rs < 0 then rs, rn = 0, 0 end
    local after = count + cost
    if after <= requests then
      local state = st
      if cost > 0 then state = { s = es, n = en, a = after, b = 0, ttl = st.ttl } end
      return { ok = true, rem = requests - after, rs = rs, rn = rn, st = state }
    end
    local o = { ok = false, rem = max(requests - count, 0), rs = rs, rn = rn, st = st }
    if cost <= requests then o.ys, o.yn = rs, rn end
    return o
  elseif algorithm == 2 or algorithm == 6 then
    local burst, ts, tn = op[5], op[6], op[7]
    local tat_s, tat_n = live_tat(op, st)
    -- used: how long until the bucket is full again.
    local us, un = sub(tat_s, tat_n, now_s, now_n)
    local o = { ok = false, rem = 0, rs = us, rn = un, st = st }
    if cost <= burst then
      local ls, ln = mul(burst - cost, ts, tn)
      if not lt(ls, ln, us, un) then
        local cs, cn = mul(cost, ts, tn)
        o.ok = true
        o.rem = burst - cost - ceil_div(us, un, ts, tn)
        o.rs, o.rn = add(us, un, cs, cn)
        if cost > 0 or algorithm == 6 then
          local ns, nn = add(tat_s, tat_n, cs, cn)
          o.st = { s = ns, n = nn, a = 0, b = 0, ttl = st.ttl }
        end
        return o
      end
      o.ys, o.yn = sub(us, un, ls, ln)
    end
    local fs, fn = mul(burst, ts, tn)
    if lt(us, un, fs, fn) then o.rem = burst - ceil_div(us, un, ts, tn) end
    return o
  end
  local ss, sn, prev, curr = sliding(ps, pn, st)
  -- The previous window's weight in slices: 1,000 when the period in nanoseconds divides
  -- into them (every policy unit), else one per nanosecond.
  local n, slice_s, slice_n = 1000, floor(ps / 1000), (ps % 1000) * 1000000
  if pn > 0 then
    if pn % 1000 == 0 then
      slice_s, slice_n = 0, pn / 1000
    else
      n, slice_s, slice_n = pn, 0, 1
    end
  end
  local es, en = sub(now_s, now_n, ss, sn)
  local idx = 0
  if es >= 0 then
    if pn == 0 then
      idx = idiv(es * 1000 + floor(en / 1000000), ps)
    else
      idx = idiv(es * E9 + en, slice_n)
    end
    idx = min(idx, n - 1)
  end
  local weighted_prev = prev * (n - idx)
  local after = curr + cost
  local allowed = weighted_prev + after * n <= requests * n
  local available = max(idiv(max(requests * n - weighted_prev, 0), n) - curr, 0)
  local we_s, we_n = add(ss, sn, ps, pn)
  local rs, rn = 0, 0
  if curr > 0 or (allowed and cost > 0) then
    local xs, xn = add(we_s, we_n, ps, pn)
    rs, rn = sub(xs, xn, now_s, now_n)
  elseif prev > 0 then
    rs, rn = sub(we_s, we_n, now_s, now_n)
  end
  if allowed then
    local state = st
    if cost > 0 then
      local xs, xn = add(we_s, we_n, ps, pn)
      state = { s = xs, n = xn, a = prev, b = after, ttl = st.ttl }
    end
    return { ok = true, rem = available - cost, rs = rs, rn = rn, st = state }
  end
  local o = { ok = false, rem = available, rs = rs, rn = rn, st = st }
  -- When the same request fits: in this window once enough slices of the previous one
  -- have passed, else in the next, where today's count becomes the previous one.
  if cost <= requests then
    local room = requests - curr - cost
    local k = nil
    if room >= 0 then
      k = 0
      if prev > 0 then k = max(n - idiv(room * n, prev), 0) end
    end
    local bs, bn = ss, sn
    if not (k and k < n) then
      room = requests - cost
      k = 0
      if curr > 0 then k = max(n - idiv(room * n, curr), 0) end
      bs, bn = we_s, we_n
    end
    local ks, kn = mul(k, slice_s, slice_n)
    bs, bn = add(bs, bn, ks, kn)
    local ys, yn = sub(bs, bn, now_s, now_n)
    if ys < 0 then ys, yn = 0, 0 end
    o.ys, o.yn = ys, yn
  end
  return o
end

-- The state after counting `cost` whether it fits or not (Limit::charge).
local function charge(op, st, o, cost)
  if o.ok or cost == 0 then return o.st end
  local algorithm, ps, pn = op[1], op[3], op[4]
  if algorithm == 5 then return st end
  if algorithm == 1 or algorithm == 4 then
    -- The window lookup of `decide`, repeated rather than shared: a helper would be one
    -- more closure rebuilt on every call.
    local ws, wn = window_of(op)
    if st.a > 0 and lt(ws, wn, st.s, st.n) then
      return { s = st.s, n = st.n, a = min(st.a + cost, MAX_COUNT), b = 0, ttl = st.ttl }
    end
    local es, en = add(ws, wn, ps, pn)
    return { s = es, n = en, a = min(cost, MAX_COUNT), b = 0, ttl = st.ttl }
  elseif algorithm == 2 or algorithm == 6 then
    -- Emptied, never into debt: at most a full bucket from now.
    local burst, ts, tn = op[5], op[6], op[7]
    local fs, fn = mul(burst, ts, tn)
    fs, fn = add(now_s, now_n, fs, fn)
    local tat_s, tat_n = fs, fn
    if cost <= burst then
      local bs, bn = live_tat(op, st)
      local cs, cn = mul(cost, ts, tn)
      bs, bn = add(bs, bn, cs, cn)
      if lt(bs, bn, fs, fn) then tat_s, tat_n = bs, bn end
    end
    if lt(tat_s, tat_n, st.s, st.n) then tat_s, tat_n = st.s, st.n end
    return { s = tat_s, n = tat_n, a = 0, b = 0, ttl = st.ttl }
  end
  local ss, sn, prev, curr = sliding(ps, pn, st)
  local es, en = add(ss, sn, ps, pn)
  es, en = add(es, en, ps, pn)
  return { s = es, n = en, a = prev, b = min(curr + cost, 4294967295), ttl = st.ttl }
end

-- The state after giving back `back` that an earlier decision took (Limit::refund).
local function refund(op, st, back)
  local fresh = st.s == 0 and st.n == 0 and st.a == 0 and st.b == 0
  if back <= 0 or fresh then return st end
  local algorithm, ps, pn = op[1], op[3], op[4]
  if algorithm == 1 or algorithm == 4 then
    -- Only to the window the op counts in.
    local es, en = add(ws_of(op))
    if st.s == es and st.n == en then
      return { s = st.s, n = st.n, a = max(st.a - back, 0), b = 0, ttl = st.ttl }
    end
  elseif algorithm == 2 or algorithm == 6 then
    -- At most a burst back, never below min(now, tat).
    local ks, kn = mul(min(back, op[5]), op[6], op[7])
    local bs, bn = sub(st.s, st.n, ks, kn)
    if bs < 0 then bs, bn = 0, 0 end
    local fs, fn = st.s, st.n
    if lt(now_s, now_n, fs, fn) then fs, fn = now_s, now_n end
    if lt(bs, bn, fs, fn) then bs, bn = fs, fn end
    return { s = bs, n = bn, a = 0, b = 0, ttl = st.ttl }
  elseif algorithm == 3 then
    local ss, sn, prev, curr = sliding(ps, pn, st)
    local es, en = add(ss, sn, ps, pn)
    es, en = add(es, en, ps, pn)
    if es == st.s and en == st.n then
      return { s = st.s, n = st.n, a = prev, b = max(curr - back, 0), ttl = st.ttl }
    end
  elseif algorithm == 5 then
    if lt(now_s, now_n, st.s, st.n) then
      return { s = st.s, n = st.n, a = max(st.a - back, 0), b = 0, ttl = st.ttl }
    end
  end
  return st
end

-- The state after charging `cost` whatever the room (Limit::force): windows count past
-- their limit, a GCRA bucket goes into debt down to one full bucket past empty.
local function force(op, st, cost)
  if cost <= 0 or op[2] == 0 then return st end
  local algorithm = op[1]
  if algorithm == 5 then return st end
  if algorithm == 2 or algorithm == 6 then
    local burst, ts, tn = op[5], op[6], op[7]
    local fs, fn = mul(2 * burst, ts, tn)
    fs, fn = add(now_s, now_n, fs, fn)
    local bs, bn = live_tat(op, st)
    local cs, cn = mul(min(cost, 2 * burst), ts, tn)
    bs, bn = add(bs, bn, cs, cn)
    if lt(fs, fn, bs, bn) then bs, bn = fs, fn end
    if lt(bs, bn, st.s, st.n) then bs, bn = st.s, st.n end
    return { s = bs, n = bn, a = 0, b = 0, ttl = st.ttl }
  end
  -- Windows: what `charge` does to a refused request.
  return charge(op, st, { ok = false }, cost)
end

-- What settling a held counter gives back and charges (hold::settlement): `how` 1 commit
-- at `actual`, 2 release; `kind` 1 reservation, 2 lease.
local function settlement(op, kind, how, actual, amount, taken_s, taken_n)
  local algorithm, back, more = op[1], 0, 0
  if how == 2 then
    if kind == 1 or algorithm == 5 then back = amount end
  elseif algorithm == 5 then
    back = amount
  else
    back, more = max(amount - actual, 0), max(actual - amount, 0)
  end
  if algorithm == 1 or algorithm == 3 then
    local ws, wn = window_start(op[3], op[4])
    local ts, tn = window_at(op[3], op[4], taken_s, taken_n)
    if ws ~= ts or wn ~= tn then back = 0 end
  end
  return back, more
end

-- Gives back and charges one held counter.
local function settle_counter(key, op, back, more)
  if back <= 0 and more <= 0 then return end
  local st = load(key)
  local next = force(op, refund(op, st, back), more)
  if next ~= st then save(key, next, st.ttl) end
end

-- A hold record's kind, counter names and held ops (see the header for its layout).
local function read_record(rec)
  local kind, _, _, n = unpack('<dddd', rec)
  local names, held = {}, {}
  for name in string.gmatch(string.sub(rec, 33 + n * 80), '[^\n]+') do names[#names + 1] = name end
  for i = 1, n do held[i] = { unpack('<dddddddddd', rec, 33 + (i - 1) * 80) } end
  return kind, n, names, held
end

-- Settles the hold recorded at `rkey` as `how` (a release for an expiry) and deletes the
-- record; false when there is none.
local function settle_record(rkey, how, actual)
  local rec = redis.call('GET', rkey)
  if not rec then return false end
  local kind, n, names, held = read_record(rec)
  for i = 1, n do
    local v = held[i]
    local back, more = settlement(v, kind, how, actual, v[8], v[9], v[10])
    if names[i] then settle_counter(names[i], v, back, more) end
  end
  redis.call('DEL', rkey)
  return true
end

-- Releases every hold of this domain whose deadline has passed: the index is scored in
-- whole milliseconds, so the record's own deadline decides to the nanosecond.
local base = string.sub(KEYS[1], 1, -6)
local function purge()
  local now_ms = now_s * 1000 + floor(now_n / 1000000)
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms, 'LIMIT', 0, 1000)
  for _, id in ipairs(due) do
    local rkey = base .. 'hold:' .. id
    local rec = redis.call('GET', rkey)
    local expired = true
    if rec then
      local _, ds, dn = unpack('<ddd', rec)
      expired = not lt(now_s, now_n, ds, dn)
      if expired then settle_record(rkey, 2, 0) end
    end
    if expired then redis.call('ZREM', KEYS[1], id) end
  end
end
purge()

if mode == '4' or mode == '5' then
  local id = ARGV[4]
  -- A settlement is remembered 120 s on the decision's clock (its record says until when;
  -- the key's own expiry, a minute later, only cleans up).
  local tomb = redis.call('GET', KEYS[3])
  if tomb then
    local _, _, fs, fn = unpack('<dddd', tomb)
    if not lt(now_s, now_n, fs, fn) then tomb = nil end
  end
  if mode == '4' then
    local how, actual = unpack('<dd', ARGV[3])
    if settle_record(KEYS[2], how, actual) then
      redis.call('ZREM', KEYS[1], id)
      redis.call('SET', KEYS[3], pack('<dddd', how, actual, now_s + 120, now_n), 'EX', 180)
      return pack('<ddd', 1, how, actual)
    end
    if tomb then
      local was, was_actual = unpack('<dd', tomb)
      if was == how and (how == 2 or was_actual == actual) then
        return pack('<ddd', 2, was, was_actual)
      end
      return pack('<ddd', 3, was, was_actual)
    end
    return pack('<ddd', 0, 0, 0)
  end
  -- Extend: a new deadline for the hold and for the concurrency slots it holds.
  local ds, dn = unpack('<dd', ARGV[3])
  local rec = redis.call('GET', KEYS[2])
  if not rec then
    if tomb then
      local was, was_actual = unpack('<dd', tomb)
      return pack('<ddd', 3, was, was_actual)
    end
    return pack('<ddd', 0, 0, 0)
  end
  local kind, n, names, held = read_record(rec)
  for i = 1, n do
    local v = held[i]
    if v[1] == 5 and names[i] then
      local st = load(names[i])
      if lt(now_s, now_n, st.s, st.n) and st.a > 0 and lt(st.s, st.n, ds, dn) then
        save(names[i], { s = ds, n = dn, a = st.a, b = 0, ttl = st.ttl }, st.ttl)
      end
    end
  end
  local ex = max(ds - now_s, 0) + 86400
  redis.call('SET', KEYS[2], pack('<dddd', kind, ds, dn, n) .. string.sub(rec, 33), 'EX', ex)
  redis.call('ZADD', KEYS[1], ds * 1000 + floor(dn / 1000000), id)
  redis.call('EXPIRE', KEYS[1], ex, 'GT')
  if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ex) end
  return pack('<ddd', 1, 0, 0)
end

local first = 2
if mode == '3' then first = 3 end
local count = #KEYS - first + 1
local function key_of(i) return KEYS[first + i - 1] end

local ops = {}
local width = 9
if mode == '2' then width = 10 end
for i = 1, count do
  ops[i] = { unpack('<ddddddddd', ARGV[3], (i - 1) * width * 8 + 1) }
end

if mode == '2' then
  -- Lease: give back unused tokens (Limit::refund), then take what fits (Limit::lease).
  local op = ops[1]
  local back = unpack('<d', ARGV[3], 73)
  local st = load(key_of(1))
  local before = st
  local algorithm, ps, pn = op[1], op[3], op[4]
  -- Leases are taken from policies' limits, which never restart with a debt.
  if algorithm == 6 then error({ err = 'tollgate: a bucket restarting with a debt is not leased' }) end
  st = refund(op, st, back)
  local want = op[8]
  local granted = min(want, decide(op, st, 0).rem)
  local o
  if granted > 0 then
    o = decide(op, st, granted)
    st = o.st
  else
    o = decide(op, st, max(min(want, max(op[5], 1)), 1))
  end
  if st ~= before then save(key_of(1), st, before.ttl) end
  local vs, vn = ps, pn
  if algorithm ~= 2 and algorithm ~= 5 then
    local ws, wn = window_of(op)
    ws, wn = add(ws, wn, ps, pn)
    vs, vn = sub(ws, wn, now_s, now_n)
    if vs < 0 then vs, vn = 0, 0 end
  end
  local ys, yn = -1, 0
  if granted == 0 and o.ys then ys, yn = o.ys, o.yn end
  return pack('<dddddddd', granted, o.rem, o.rs, o.rn, ys, yn, vs, vn)
end

local outs = {}
-- Decides ops lo..hi as one batch: every op against the counters as this batch sees them,
-- then all admitting ops committed when the batch admits (or, every request counting,
-- every op charged). Returns whether it admitted.
local function run_batch(lo, hi, every)
  local staged, view, loaded = {}, {}, {}
  local admitted = true
  local quota, quota_ok = false, false
  for i = lo, hi do
    local op, key = ops[i], key_of(i)
    local st = view[key]
    if not st then
      st = load(key)
      loaded[key] = st
    end
    local cost = op[8]
    local o = decide(op, st, cost)
    outs[i] = o
    if every then staged[i] = charge(op, st, o, cost) else staged[i] = o.st end
    view[key] = staged[i]
    local flags = op[9]
    if flags >= 2 then
      quota = true
      if flags == 2 or o.ok then quota_ok = true end
    elseif flags == 1 and not o.ok then
      admitted = false
    end
  end
  if quota and not quota_ok then admitted = false end

  if not every and not admitted then
    -- Nothing is consumed: ops that would have admitted report the counter as it is.
    for i = lo, hi do
      if outs[i].ok then
        outs[i] = decide(ops[i], loaded[key_of(i)] or load(key_of(i)), 0)
      end
    end
  else
    for i = lo, hi do
      -- A zero cost changes nothing, except that it restarts an idle bucket (6).
      if (ops[i][8] > 0 or ops[i][1] == 6) and (outs[i].ok or every) then
        local key = key_of(i)
        save(key, staged[i], loaded[key] and loaded[key].ttl or 0)
      end
    end
  end
  return admitted
end

if mode == '6' or mode == '7' then
  -- Independent batches, one after another: ARGV[4] holds each one's length.
  local lo = 1
  for b = 1, #ARGV[4] / 8 do
    local n = unpack('<d', ARGV[4], (b - 1) * 8 + 1)
    run_batch(lo, lo + n - 1, mode == '7')
    lo = lo + n
  end
else
  local admitted = run_batch(1, count, mode == '1')
  if admitted and mode == '3' then
    -- Keep what each admitting op took as the hold, released at its deadline.
    local kind, ds, dn = unpack('<ddd', ARGV[5])
    local parts, names, n = {}, {}, 0
    for i = 1, count do
      local op = ops[i]
      if op[8] > 0 and outs[i].ok then
        n = n + 1
        parts[n] = pack('<dddddddddd', op[1], op[2], op[3], op[4], op[5], op[6], op[7], op[8], now_s, now_n)
        names[n] = key_of(i)
      end
    end
    local ex = max(ds - now_s, 0) + 86400
    redis.call('SET', KEYS[2], pack('<dddd', kind, ds, dn, n) .. table.concat(parts) .. table.concat(names, '\n'), 'EX', ex)
    redis.call('ZADD', KEYS[1], ds * 1000 + floor(dn / 1000000), ARGV[4])
    redis.call('EXPIRE', KEYS[1], ex, 'GT')
    if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ex) end
  end
end

local reply = {}
for i = 1, count do
  local o = outs[i]
  local st = o.st
  local ys, yn = -1, 0
  if o.ys then ys, yn = o.ys, o.yn end
  reply[i] = pack('<dddddddddd', o.ok and 1 or 0, o.rem, o.rs, o.rn, ys, yn, st.s, st.n, st.a, st.b)
end
return table.concat(reply)
