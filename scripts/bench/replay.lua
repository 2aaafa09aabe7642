-- wrk script: POSTs pre-built form bodies (one per line of the file named by $BODIES; a tab
-- then a DPoP proof may follow a body) to the path of wrk's target URL, each body at most once.
-- METHOD=GET sends GETs instead (the lines then carry only proofs), and AUTHORIZATION, when set,
-- is sent as the Authorization header of every request.
--
--   BODIES=bodies.txt wrk -t2 -c32 -d5s -s scripts/bench/replay.lua http://127.0.0.1:9401/token
--
-- Thread i of n (i from 0) sends lines i+1, i+1+n, i+1+2n, ... so threads never share a body.
-- n is read from wrk's own command line (/proc/self/cmdline); set WRK_THREADS to override.
-- A thread that runs out of bodies stops, and done() prints a WARNING (its last request, sent
-- with a dummy body, shows up as one non-2xx per connection).
--
-- done() prints one machine-readable line:
--   RESULT requests=N non2xx=N socket_errors=N rps=F p50_us=N p99_us=N duration_s=F exhausted_threads=N

-- wrk's thread count: WRK_THREADS, else -t/--threads from the command line, else wrk's default 2.
local function thread_count()
  local forced = tonumber(os.getenv("WRK_THREADS") or "")
  if forced then return forced end
  local f = io.open("/proc/self/cmdline", "rb")
  if not f then return 2 end
  local argv = {}
  for a in f:read("*a"):gmatch("[^%z]+") do argv[#argv + 1] = a end
  f:close()
  for k, a in ipairs(argv) do
    local v = a:match("^%-t(%d+)$") or a:match("^%-%-threads=(%d+)$")
    if not v and (a == "-t" or a == "--threads") then v = argv[k + 1] end
    if v then return tonumber(v) end
  end
  return 2
end

-- Setup phase (wrk's main Lua state): number the threads, keep them for done().
local threads = {}
local planned_threads = thread_count()

function setup(thread)
  thread:set("id", #threads)
  thread:set("nthreads", planned_threads)
  threads[#threads + 1] = thread
end

-- Running phase (one Lua state per thread).
local queue, pos = {}, 1
non2xx, sent, exhausted, first_error = 0, 0, false, nil

function init(args)
  local path = os.getenv("BODIES")
  local f = path and io.open(path, "r")
  if not f then error("set BODIES to a readable file of request bodies (got " .. tostring(path) .. ")") end
  local n = 0
  for line in f:lines() do
    if n % nthreads == id and #line > 0 then
      -- A line is a body, or a body, a tab and a DPoP proof.
      local body, proof = line:match("^([^\t]*)\t(.*)$")
      local method = os.getenv("METHOD") or "POST"
      local headers = { ["DPoP"] = proof, ["Authorization"] = os.getenv("AUTHORIZATION") }
      if method == "POST" then headers["Content-Type"] = "application/x-www-form-urlencoded" end
      -- Pre-format the whole HTTP request so request() is a table lookup.
      queue[#queue + 1] = wrk.format(method, wrk.path, headers, method == "POST" and (body or line) or nil)
    end
    n = n + 1
  end
  f:close()
  available = #queue
end

function request()
  local r = queue[pos]
  if r then
    queue[pos] = nil -- a body is never sent twice (and memory is given back)
    pos = pos + 1
    sent = sent + 1
    return r
  end
  if not exhausted then
    exhausted = true
    wrk.thread:stop()
  end
  return wrk.format("POST", wrk.path, { ["Content-Type"] = "application/x-www-form-urlencoded" }, "bodies_exhausted=1")
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    if not first_error then first_error = status .. " " .. string.sub(body or "", 1, 300) end
  end
end

-- Done phase (main state again): gather the per-thread counters.
function done(summary, latency, requests)
  local non2xx_total, sent_total, available_total, exhausted_threads = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    non2xx_total = non2xx_total + (t:get("non2xx") or 0)
    sent_total = sent_total + (t:get("sent") or 0)
    available_total = available_total + (t:get("available") or 0)
    if t:get("exhausted") then exhausted_threads = exhausted_threads + 1 end
    local e = t:get("first_error")
    if e then io.stderr:write("first non-2xx of thread ", t:get("id"), ": ", e, "\n") end
  end
  if #threads ~= planned_threads then
    io.stderr:write(string.format("WARNING: split the bodies for %d threads but wrk ran %d; set WRK_THREADS\n", planned_threads, #threads))
  end
  if exhausted_threads > 0 then
    io.stderr:write(string.format("WARNING: %d thread(s) ran out of bodies (%d sent of %d); generate more\n",
      exhausted_threads, sent_total, available_total))
  end
  local e = summary.errors
  local seconds = summary.duration / 1e6
  io.write(string.format(
    "RESULT requests=%d non2xx=%d socket_errors=%d rps=%.1f p50_us=%d p99_us=%d duration_s=%.2f exhausted_threads=%d\n",
    summary.requests, non2xx_total, e.connect + e.read + e.write + e.timeout,
    summary.requests / seconds, latency:percentile(50), latency:percentile(99), seconds, exhausted_threads))
end
