-- completions.lua - wrk script: POST /v1/completions (non-streaming) with rotating prompts.
--
--   wrk -t2 -c8 -d20s -s bench/wrk/completions.lua http://127.0.0.1:8000 -- [MAX_TOKENS] [MODEL]
--
-- MAX_TOKENS defaults to 16; MODEL is sent only when given. NANO_VLLM_API_KEY, when set, is
-- sent as the bearer token. At the end it prints the responses by HTTP status and the
-- completion tokens per second the server delivered (requests/s times MAX_TOKENS; greedy
-- with ignore_eos, so every completion has exactly MAX_TOKENS tokens).

local prompts = {
  "The quick brown fox",
  "Once upon a time",
  "In a hole in the ground there lived",
  "It was the best of times, it was the worst of times",
  "The meaning of life is",
  "Call me Ishmael.",
  "A long time ago in a galaxy far, far away",
  "To be, or not to be",
}

local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  max_tokens = tonumber(args[1]) or 16
  local model = args[2]
  statuses = {}
  counter = 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  local key = os.getenv("NANO_VLLM_API_KEY")
  if key and key ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. key
  end
  bodies = {}
  for i, p in ipairs(prompts) do
    local m = model and string.format('"model":"%s",', model) or ""
    bodies[i] = string.format(
      '{%s"prompt":"%s","max_tokens":%d,"temperature":0,"ignore_eos":true}', m, p, max_tokens)
  end
end

function request()
  counter = counter + 1
  return wrk.format("POST", "/v1/completions", nil, bodies[(counter + id) % #bodies + 1])
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for status, n in pairs(t:get("statuses")) do
      total[status] = (total[status] or 0) + n
    end
  end
  io.write("responses by status:")
  for status, n in pairs(total) do
    io.write(string.format(" %d=%d", status, n))
  end
  io.write("\n")
  local max_tokens = threads[1] and threads[1]:get("max_tokens") or 16
  local secs = summary.duration / 1e6
  local ok = total[200] or 0
  io.write(string.format("completion tokens/s: %.1f (%d ok responses x %d tokens in %.1f s)\n",
    ok * max_tokens / secs, ok, max_tokens, secs))
  io.write(string.format("latency p50 %.1f ms, p90 %.1f ms, p99 %.1f ms\n",
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000))
end
