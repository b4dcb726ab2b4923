-- wrk: GET /products?limit=20, anonymous.
package.path = package.path .. ";" .. os.getenv("BENCH_SCRIPTS") .. "/?.lua"
local report = require("report")

wrk.method = "GET"
wrk.path = "/products?limit=20"
wrk.headers["Accept"] = "application/json"

done = report.done
