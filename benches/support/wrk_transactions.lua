-- wrk: PUT /_matrix/app/v1/transactions/<unique id> with 50 m.room.message events over 20 rooms,
-- hs_token from the HS_TOKEN environment variable. Ids are unique per thread, run and request, so
-- no request is a retry of another.
local events_per_txn = 50
local rooms = 20
local token = os.getenv("HS_TOKEN") or "bench-hs"
local run = os.getenv("RUN_ID") or tostring(os.time())
local threads = 0
thread_id = 0 -- set per thread by setup()
local n = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

function request()
  n = n + 1
  local txn = run .. "-" .. thread_id .. "-" .. n
  local events = {}
  for i = 1, events_per_txn do
    local id = txn .. "-" .. i
    events[i] = string.format(
      '{"type":"m.room.message","room_id":"!room%d:bench.local","sender":"@alice:bench.local",' ..
      '"event_id":"$%s","origin_server_ts":%d,"unsigned":{"age":12},' ..
      '"content":{"msgtype":"m.text","body":"message %s about the deploy plan for this week"}}',
      (n * events_per_txn + i) % rooms, id, 1764720000000 + n, id)
  end
  local body = '{"events":[' .. table.concat(events, ",") .. ']}'
  return wrk.format("PUT", "/_matrix/app/v1/transactions/" .. txn, {
    ["Authorization"] = "Bearer " .. token,
    ["Content-Type"] = "application/json",
  }, body)
end

function done(summary, latency, requests)
  -- Parsed by benches/wrk.rs: requests, errors (non-2xx, socket), seconds, p99 in µs.
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.status + summary.errors.timeout
  io.write(string.format("WRK %d %d %f %d\n", summary.requests, errors, summary.duration / 1e6,
    latency:percentile(99)))
end
