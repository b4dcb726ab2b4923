-- wrk: keyset pages of one category, anonymous: a random category (BENCH_CATEGORIES, comma-separated) and a
-- random starting id between BENCH_FIRST_ID and BENCH_LAST_ID.
package.path = package.path .. ";" .. os.getenv("BENCH_SCRIPTS") .. "/?.lua"
local report = require("report")

local first_id = tonumber(os.getenv("BENCH_FIRST_ID"))
local last_id = tonumber(os.getenv("BENCH_LAST_ID"))
local categories = {}
for c in string.gmatch(os.getenv("BENCH_CATEGORIES"), "%d+") do
  categories[#categories + 1] = tonumber(c)
end

function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
end

function request()
  local path = string.format("/products?category_id=eq.%d&id=gt.%d&order=id&limit=20",
    categories[math.random(1, #categories)], math.random(first_id, last_id))
  return wrk.format("GET", path, {["Accept"] = "application/json"})
end

done = report.done
