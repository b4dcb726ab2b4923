-- wrk: POST /orders with one random product, as a signed-in customer (Bearer token).
package.path = package.path .. ";" .. os.getenv("BENCH_SCRIPTS") .. "/?.lua"
local report = require("report")

-- product ids from BENCH_FIRST_ID to BENCH_LAST_ID (all active, all in stock)
local first_id = tonumber(os.getenv("BENCH_FIRST_ID"))
local last_id = tonumber(os.getenv("BENCH_LAST_ID"))
local token = os.getenv("BENCH_TOKEN")

function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
end

function request()
  local body = string.format('{"items": [{"product_id": %d, "quantity": 1}]}', math.random(first_id, last_id))
  return wrk.format("POST", "/orders", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
  }, body)
end

done = report.done
