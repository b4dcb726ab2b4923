-- wrk: pages of one category, anonymous, a random category (BENCH_CATEGORIES, comma-separated) each time.
-- BENCH_PAGES=keyset: from a random starting id between BENCH_FIRST_ID and BENCH_LAST_ID;
-- BENCH_PAGES=offset: a random page (offset 0 to BENCH_MAX_OFFSET), the contrast whose cost grows with depth.
package.path = package.path .. ";" .. os.getenv("BENCH_SCRIPTS") .. "/?.lua"
local report = require("report")

local keyset = os.getenv("BENCH_PAGES") == "keyset"
local first_id = tonumber(os.getenv("BENCH_FIRST_ID"))
local last_id = tonumber(os.getenv("BENCH_LAST_ID"))
local max_offset = tonumber(os.getenv("BENCH_MAX_OFFSET"))
local categories = {}
for c in string.gmatch(os.getenv("BENCH_CATEGORIES"), "%d+") do
  categories[#categories + 1] = tonumber(c)
end

function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
end

function request()
  local category = categories[math.random(1, #categories)]
  local path
  if keyset then
    path = string.format("/products?category_id=eq.%d&id=gt.%d&order=id&limit=20",
      category, math.random(first_id, last_id))
  else
    path = string.format("/products?category_id=eq.%d&order=id&limit=20&offset=%d",
      category, math.random(0, max_offset))
  end
  return wrk.format("GET", path, {["Accept"] = "application/json"})
end

done = report.done
