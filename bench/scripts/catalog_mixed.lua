-- wrk: GET /products?limit=20 (anonymous), and BENCH_ORDER_PERCENT of the requests a POST /orders of one
-- random product as orders.lua sends it (customers, Bearer, one buyer per connection): the orders move stock,
-- and the catalog cache coalesces their notifications within its staleness bound.
package.path = package.path .. ";" .. os.getenv("BENCH_SCRIPTS") .. "/?.lua"
local report = require("report")
dofile(os.getenv("BENCH_SCRIPTS") .. "/orders.lua")

local order_percent = tonumber(os.getenv("BENCH_ORDER_PERCENT"))
local order = request
local catalog = wrk.format("GET", "/products?limit=20", {["Accept"] = "application/json"})

function request()
  if math.random(1, 100) <= order_percent then
    return order()
  end
  return catalog
end

done = report.done
