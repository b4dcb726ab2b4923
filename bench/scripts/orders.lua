-- wrk: POST /orders with one random product, as a signed-in customer (Bearer token).
package.path = package.path .. ";" .. os.getenv("BENCH_SCRIPTS") .. "/?.lua"
local report = require("report")

local products = tonumber(os.getenv("BENCH_PRODUCTS"))
local token = os.getenv("BENCH_TOKEN")

function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
end

function request()
  local body = string.format('{"items": [{"product_id": %d, "quantity": 1}]}', math.random(1, products))
  return wrk.format("POST", "/orders", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
  }, body)
end

done = report.done
