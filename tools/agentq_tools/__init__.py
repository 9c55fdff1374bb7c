"""agentq's development tooling: not part of the product, not in its wheel or its worker image.

- ``demo``        ``make demo``: Redis, the mock upstream and workers on this machine, the reference question
- ``bench``       ``make bench``: the benchmarks, their table, JSON summary and charts
- ``soak``        ``make soak``: a steady stream of jobs for minutes, lost/doubled counts and memory
- ``upstream``    the mock upstream the HTTP sources call in the demo, the tests and compose
- ``embedded``    a throw-away redis-server on a free loopback port
- ``processes``   worker processes started with the documented ``worker`` command, and stopped
- ``plugins``     the benchmark's and the tests' plugins, for ``AGENTQ_PLUGIN_MODULES`` (not entry points):
- ``sources``     their sources (opt-in)
- ``analyses``    their analyses (opt-in): ``numpy_similarity``, whose function is in ``numeric``
"""
