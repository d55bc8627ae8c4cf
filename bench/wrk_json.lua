-- wrk script of bench/run.py (measurements.py): after wrk's own report, print the run's numbers
-- as one line of JSON starting with "BENCH-JSON ", latencies in microseconds.
-- It defines no request(), so wrk sends its static request (with any -H).

done = function(summary, latency, requests)
   local errors = summary.errors
   io.write(string.format(
      'BENCH-JSON {"requests": %d, "duration_us": %d, "bytes": %d, '
      .. '"p50_us": %d, "p99_us": %d, "max_us": %d, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}}\n',
      summary.requests, summary.duration, summary.bytes,
      latency:percentile(50), latency:percentile(99), latency.max,
      errors.connect, errors.read, errors.write, errors.status, errors.timeout))
end
