-- wrk script of bench/failover.py: count the responses by status and by the X-Config header
-- txproxy sets (which configuration answered), and after wrk's own report print them as two
-- lines, "FAILOVER-STATUS 200=N ..." and "FAILOVER-CONFIG one=N two=M ...". It defines no
-- request(), so wrk sends its static request.

local threads = {}

setup = function(thread)
   table.insert(threads, thread)
end

init = function(args)
   statuses = {}
   configs = {}
end

response = function(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
   local config = headers["X-Config"] or headers["x-config"] or "-"
   configs[config] = (configs[config] or 0) + 1
end

local function line(label, name)
   local totals = {}
   for _, thread in ipairs(threads) do
      for key, count in pairs(thread:get(name)) do
         totals[key] = (totals[key] or 0) + count
      end
   end
   local parts = {}
   for key, count in pairs(totals) do
      table.insert(parts, string.format("%s=%d", key, count))
   end
   table.sort(parts)
   io.write(label .. " " .. table.concat(parts, " ") .. "\n")
end

done = function(summary, latency, requests)
   line("FAILOVER-STATUS", "statuses")
   line("FAILOVER-CONFIG", "configs")
end
