"""``make bench`` / ``agentq-bench``: the numbers that show where this design stands.

One run measures, side by side on the same machine and interpreter:

1. ``workload``   one reference query: sequential, the reference design (fetch all, then infer
                  all), ours (stages overlapped, through Redis and a real worker) and the
                  critical-path floor;
2. ``executors``  the inference alone in serial, thread, process and interpreter pools;
3. ``queue``      the queue's own overhead on zero-work jobs (enqueue→start, finish→caller);
4. ``throughput`` jobs/s at saturation with 1 and 2 workers against ``cores / CPU-s per job``;
5. ``growth``     latency as the sources (3→20) and a burst of jobs (10→1,000) grow;
6. ``noop``       1,000 no-op jobs end to end with 1 and 2 workers.

Each module measures one of these and returns a JSON-able dict plus its :class:`Figure` rows;
``runner`` runs them in order, ``report`` prints the table and writes the JSON, ``charts`` draws
the PNGs. The modules are benchmarks, not tests: nothing here asserts a target.
"""
