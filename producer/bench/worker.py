"""``python -m producer.bench.worker``: the real ``worker`` command, plus the benchmark's sources.

Nothing else differs from ``worker``: same arq worker, same job, same pool, same settings.
"""

from __future__ import annotations

from producer.bench import sources as _sources  # noqa: F401  (registers extra_04 ... extra_20)
from worker.cli import run

if __name__ == "__main__":
    run()
