"""``make bench`` / ``agentq-bench``: the numbers that show where this design stands.

One run measures, side by side on the same machine and interpreter:

1. ``workload``   one reference query: sequential, the reference design (fetch all, then infer
                  all), ours (stages overlapped, through Redis and a real worker) and the
                  critical-path floor;
2. ``executors``  the inference alone in serial, thread, process and interpreter pools;
3. ``queue``      the queue's own overhead on zero-work jobs (enqueue→start, finish→caller), and
                  the Redis commands and round trips each costs;
4. ``throughput`` jobs/s at saturation with 1 and 2 workers against ``cores / CPU-s per job``;
5. ``growth``     latency as the sources (3→20) and a burst of jobs (10→1,000) grow;
6. ``peers``      arq, SAQ and streaq beside ours: no-op bursts with 1 and 2 workers, and the
                  reference query as each peer's reference design (``peer_apps``, a side venv);
7. ``redisload``  Redis commands/s of 1, 4 and 16 idle workers, and enqueue→start with them;
8. ``bursts``     bursts bigger than the cores serve in a deadline: goodput and throughput with
                  admission, and with max_jobs 1 and 4;
9. ``fairness``   tenants sharing the fleet: a few jobs behind another tenant's backlog (fair
                  share beside first in, first out), weights 3:1, a lone tenant's throughput.

Each module measures one of these and returns a JSON-able dict plus its :class:`Figure` rows;
``runner`` runs them in order, ``report`` prints the table and writes the JSON, ``charts`` draws
the PNGs. The modules are benchmarks, not tests: nothing here asserts a target.
"""
