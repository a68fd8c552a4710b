-- wrk script of the HTTP benchmarks (bench/stack.py writes the requests file and runs wrk).
--
--   wrk -t1 -cC -dS -s bench/wrk_requests.lua URL -- REQUESTS_FILE
--
-- REQUESTS_FILE has one request per line: METHOD <tab> PATH <tab> HEADERS <tab> BODY, HEADERS being
-- "Name: value" pairs separated by \31 (unit separator). Every request is formatted once, in
-- init(); request() hands them out in order and cycles, counting how often it went round
-- ("wrapped"), so a benchmark whose requests must be distinct can check it never re-sent one.
--
-- WRK_RATE (environment, requests per second for the whole run; 0 or unset = closed loop): a
-- constant request rate, emulated with delay() (wrk 4 has no -R as wrk2 does). Each request takes
-- the next slot of a fixed schedule, t0 + k / rate; delay() waits until that slot. wrk calls
-- delay() when a connection is ready for its next request, so the schedule holds as long as there
-- are enough connections (rate x latency < connections); a slot already past is sent at once
-- and counted in "late" (its lateness is not in the latency, which wrk measures from the send).
--
-- done() prints one line "BENCH {json}" with the totals and one "BENCH_HIST us:count ..." with
-- wrk's full latency histogram (microsecond resolution), so rounds can be merged exactly.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local rate = tonumber(os.getenv("WRK_RATE") or "0") or 0

-- per-thread globals (read from done() through thread:get)
reqs = {}
idx = 0
wrapped = 0
late = 0
late_max_ms = 0
slots = 0

function init(args)
  local file = args[1]
  for line in io.lines(file) do
    local method, path, headers, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
    if method then
      local h = {}
      for pair in (headers .. "\31"):gmatch("([^\31]*)\31") do
        local name, value = pair:match("^([^:]+):%s*(.*)$")
        if name then h[name] = value end
      end
      if body == "" then body = nil end
      reqs[#reqs + 1] = wrk.format(method, path, h, body)
    end
  end
  if #reqs == 0 then error("no requests in " .. tostring(file)) end
end

function request()
  idx = idx + 1
  if idx > #reqs then
    idx = 1
    wrapped = wrapped + 1
  end
  return reqs[idx]
end

if rate > 0 then
  local interval = 1000.0 / rate -- one thread: the thread's rate is the run's rate
  local next_slot = nil
  function delay()
    local t = now_ms()
    if next_slot == nil then next_slot = t end
    local slot = next_slot
    next_slot = next_slot + interval
    slots = slots + 1
    local d = slot - t
    if d < 0 then
      if -d > 1 then late = late + 1 end
      if -d > late_max_ms then late_max_ms = -d end
      return 0
    end
    return d
  end
end

local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
end

function done(summary, latency, requests)
  local w, l, lm, s, n = 0, 0, 0, 0, 0
  for _, t in ipairs(threads) do
    w = w + t:get("wrapped")
    l = l + t:get("late")
    s = s + t:get("slots")
    n = n + #t:get("reqs")
    local m = t:get("late_max_ms")
    if m > lm then lm = m end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "bytes": %d, "connect_errors": %d, "read_errors": %d, '
      .. '"write_errors": %d, "status_errors": %d, "timeouts": %d, "wrapped": %d, "pool": %d, "rate": %g, '
      .. '"slots": %d, "late": %d, "late_max_ms": %.3f, "lat_min_us": %d, "lat_max_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    w, n, rate, s, l, lm, latency.min, latency.max))
  -- wrk 4: #latency is the number of distinct values recorded, latency(i) the i-th one (in
  -- microseconds, ascending) and its count
  local parts = {}
  for i = 1, #latency do
    local us, c = latency(i)
    parts[#parts + 1] = string.format("%d:%d", us, c)
  end
  io.write("BENCH_HIST " .. table.concat(parts, " ") .. "\n")
end
