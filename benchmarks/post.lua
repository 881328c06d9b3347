-- wrk script: POST one prebuilt request over and over, count every response
-- whose status is not the expected one, and print the run as one
-- `BENCH_RESULT {json}` line (the same line benchmarks/loadgen.py prints).
--
-- Arguments after `--`: BODY_FILE EXPECTED_STATUS. Headers come from -H.
-- wrk's own "errors.status" only counts statuses above 399; a mailmux 202
-- ("queued": no vendor took it) would pass as success there, hence our count.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local file = assert(io.open(args[1], "rb"))
  local body = file:read("*a")
  file:close()
  expected = tonumber(args[2])
  unexpected = 0
  prebuilt = wrk.format("POST", nil, nil, body)
end

function request()
  return prebuilt
end

function response(status, headers, body)
  if status ~= expected then
    unexpected = unexpected + 1
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, thread in ipairs(threads) do
    bad = bad + thread:get("unexpected")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"ok": %d, "unexpected": %d, "errors": %d, "duration_s": %.6f, '
      .. '"p50_ms": %.4f, "p99_ms": %.4f, "mean_ms": %.4f}\n',
    summary.requests - bad, bad, e.connect + e.read + e.write + e.timeout,
    summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency.mean / 1000))
end
