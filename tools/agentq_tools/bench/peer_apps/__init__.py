"""The benchmark's jobs on each peer queue, run in a side environment that has the peers installed.

``bench.peers`` installs arq, SAQ and streaq from PyPI into ``.venv/peers-<python>`` and runs these
modules there, with ``tools/`` and the repository root on ``PYTHONPATH``; nothing of agentq is
installed there, and nothing here imports more than the peer's library, the standard library and
``worker.pool.bag_of_words`` (the same analysis the worker runs, standard library only).

- ``common``       the settings (from the environment), the reference design, the inference pool
- ``arq_app``      arq: ``WorkerSettings`` (poll delay from the environment) and a driver
- ``saq_app``      SAQ: its ``settings`` and a driver
- ``streaq_app``   streaq: its ``worker`` and a driver
- ``drive``        ``python -m agentq_tools.bench.peer_apps.drive SYSTEM MODE N``: enqueue, wait, print JSON

Each system has two jobs: ``noop`` (returns at once) and ``reference_query`` (the reference design:
every fetch at once, then every inference at once in a pool of the same kind and size as ours).
Each driver enqueues through the peer's own client and counts unfinished jobs with one command
on the peer's own bookkeeping, so every system, ours included (``bench.peers``), is timed alike.
"""
