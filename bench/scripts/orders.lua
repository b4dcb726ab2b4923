-- wrk: POST /orders with one random product, as signed-in customers (Bearer tokens).
-- BENCH_TOKENS: one buyer per connection (comma-separated tokens), shared out among the BENCH_THREADS
-- threads; each thread sends its buyers' orders in turn, so a buyer's next order leaves after one of each
-- of the thread's other buyers (a customer's orders queue on the customer's lock: one buyer for every
-- connection would measure that lock).
package.path = package.path .. ";" .. os.getenv("BENCH_SCRIPTS") .. "/?.lua"
local report = require("report")

-- product ids from BENCH_FIRST_ID to BENCH_LAST_ID (all active, all in stock)
local first_id = tonumber(os.getenv("BENCH_FIRST_ID"))
local last_id = tonumber(os.getenv("BENCH_LAST_ID"))
local tokens = {}
for token in string.gmatch(os.getenv("BENCH_TOKENS"), "[^,]+") do
  tokens[#tokens + 1] = token
end
local threads = tonumber(os.getenv("BENCH_THREADS"))

-- runs in wrk's main Lua state, once per thread before it starts: numbers the threads 0, 1, ...
local numbered = 0
function setup(thread)
  thread:set("thread_number", numbered)
  numbered = numbered + 1
end

local own = {}
local turn = 0

function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
  local per_thread = math.max(1, math.floor(#tokens / threads))
  for i = thread_number * per_thread + 1, (thread_number + 1) * per_thread do
    own[#own + 1] = tokens[(i - 1) % #tokens + 1]
  end
end

function request()
  turn = turn % #own + 1
  local body = string.format('{"items": [{"product_id": %d, "quantity": 1}]}', math.random(first_id, last_id))
  return wrk.format("POST", "/orders", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. own[turn],
  }, body)
end

done = report.done
