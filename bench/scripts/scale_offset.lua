-- wrk: offset pages of one category, anonymous: a random category (BENCH_CATEGORIES) and a random page
-- (offset from 0 to BENCH_MAX_OFFSET): the contrast to keyset pages, whose cost does not grow with depth.
package.path = package.path .. ";" .. os.getenv("BENCH_SCRIPTS") .. "/?.lua"
local report = require("report")

local max_offset = tonumber(os.getenv("BENCH_MAX_OFFSET"))
local categories = {}
for c in string.gmatch(os.getenv("BENCH_CATEGORIES"), "%d+") do
  categories[#categories + 1] = tonumber(c)
end

function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
end

function request()
  local path = string.format("/products?category_id=eq.%d&order=id&limit=20&offset=%d",
    categories[math.random(1, #categories)], math.random(0, max_offset))
  return wrk.format("GET", path, {["Accept"] = "application/json"})
end

done = report.done
