-- wrk script of the Redress bench (tests/bench/run.py runs it; see the README's Benchmark).
--
--   wrk -t2 -c16 -d<window+tail>s --timeout 10s -s wrk.lua URL -- MODE WINDOW [KEY NPRED NONCE TOKENS]
--
-- MODE "bare":     GET /bench/bare.
-- MODE "feedback": POST /api/v1/feedback with a Bearer key, a fresh Idempotency-Key and a body
--                  that varies per request (prediction bench-NNNNN out of NPRED, a comment
--                  with numbers, an end user).
-- MODE "token":    the same from an end user's browser: Authorization: FeedbackToken, one of
--                  the tokens in the file TOKENS (one per line, each for its own end user and
--                  prediction), the same body without prediction and end user.
--
-- Requests are sent during WINDOW seconds only; wrk's -d adds a tail so that every request
-- sent gets its response before wrk stops. So the 201s counted here are every row the server
-- stored, and run.py can check that against the table. Rates are computed over the time from
-- the first request to the last response, not over wrk's -d. Latency is wrk's own histogram
-- (from writing a request to reading its response; delay() time is not included).
-- done() prints one line "BENCH_JSON {...}" for run.py.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec_t;
int clock_gettime(int clk_id, bench_timespec_t *tp);
]]
local ts = ffi.new("bench_timespec_t")
local function now()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC: the same clock in every wrk thread
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9
end

-- main state: thread bookkeeping --------------------------------------------------------------
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

-- thread state ---------------------------------------------------------------------------------
local mode, window, key, npred, nonce
local tokens = {}
local stopped = false
n = 0 -- requests sent (a global: done() reads it through thread:get)
local comments = {
  "The answer is wrong: order %d was never refunded.",
  "It ignored half of my question about invoice %d.",
  "It quoted %d EUR but the price on the site is different.",
  "Off topic, I asked about parcel %d and got a story about returns.",
}

function init(args)
  mode = args[1]
  window = tonumber(args[2])
  key, npred, nonce = args[3], tonumber(args[4] or "1"), args[5] or "x"
  if mode == "token" then
    for line in io.lines(args[6]) do
      if line ~= "" then table.insert(tokens, line) end
    end
  end
  counts = {}     -- status -> count (read by done() through thread:get)
  first_bad = ""  -- the first non-2xx response, for diagnosis
  t_first, t_last = 0, 0
end

function delay()
  -- wrk also asks before a connection's first request: the window starts at the first request.
  if t_first == 0 then
    return 0
  end
  if not stopped and now() - t_first >= window then
    stopped = true
  end
  if stopped then
    return 3600000 -- no more requests on this connection; wrk's tail lets in-flight ones finish
  end
  return 0
end

function request()
  if t_first == 0 then
    t_first = now()
  end
  n = n + 1
  if mode == "bare" then
    return wrk.format("GET", "/bench/bare", {})
  end
  if mode == "token" then
    local body = string.format(
      '{"kind":"report","categories":["incorrect","incomplete"],"comment":"%s"}',
      string.format(comments[n % #comments + 1], 10000 + n)
    )
    return wrk.format("POST", "/api/v1/feedback", {
      ["Authorization"] = "FeedbackToken " .. tokens[(n * 7 + tid * 131) % #tokens + 1],
      ["Content-Type"] = "application/json",
      ["Idempotency-Key"] = string.format("%s-t%d-%d", nonce, tid, n),
    }, body)
  end
  local body = string.format(
    '{"prediction":"bench-%05d","kind":"report","categories":["incorrect","incomplete"],' ..
    '"comment":"%s","end_user":"user-%d"}',
    (n * 7 + tid * 131) % npred,
    string.format(comments[n % #comments + 1], 10000 + n),
    (n * 13 + tid) % 5000
  )
  return wrk.format("POST", "/api/v1/feedback", {
    ["Authorization"] = "Bearer " .. key,
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = string.format("%s-%d-%d", nonce, tid, n),
  }, body)
end

function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
  t_last = now()
  if status >= 300 and first_bad == "" then
    first_bad = status .. " " .. string.sub(body or "", 1, 300)
  end
end

-- main state: the report -----------------------------------------------------------------------
local function json_string(text)
  text = string.gsub(text, '[%c"\\]', function(c)
    if c == '"' or c == "\\" then return "\\" .. c end
    return " "
  end)
  return '"' .. text .. '"'
end

function done(summary, latency, requests)
  local statuses, first, last, bad, sent = {}, nil, 0, "", 0
  for _, thread in ipairs(threads) do
    sent = sent + thread:get("n")
    for status, count in pairs(thread:get("counts")) do
      statuses[status] = (statuses[status] or 0) + count
    end
    local tf, tl = thread:get("t_first"), thread:get("t_last")
    if tf > 0 and (first == nil or tf < first) then first = tf end
    if tl > last then last = tl end
    if bad == "" then bad = thread:get("first_bad") end
  end
  local parts = {}
  for status, count in pairs(statuses) do
    table.insert(parts, string.format('"%d":%d', status, count))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"statuses":{%s},"requests_sent":%d,"responses":%d,"elapsed_s":%.6f,' ..
    '"p50_us":%d,"p90_us":%d,"p95_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,' ..
    '"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},"first_bad":%s}\n',
    -- wrk checks the request once in the first thread's state before it starts: not sent.
    table.concat(parts, ","), sent - 1, summary.requests, (first and last > first) and (last - first) or 0,
    latency:percentile(50), latency:percentile(90), latency:percentile(95),
    latency:percentile(99), latency.max, latency.mean,
    e.connect, e.read, e.write, e.timeout, json_string(bad)
  ))
end
