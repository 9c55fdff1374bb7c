"""What Redis ran, from its own ``INFO commandstats``, and how many requests the clients sent.

Commands are Redis's count (a script's own commands included, one each); the benchmark's own
``INFO`` and ``CONFIG RESETSTAT`` are left out. Round trips are counted on the client side: this
process's (``agentq.roundtrips``, the producer's) and each worker's, read from its
``agentq_redis_round_trips_total`` on its /metrics endpoint (the benchmark's workers serve one on
a free port, named in their heartbeat record).
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections import Counter
from typing import cast

import redis

from agentq.settings import get_settings

#: The benchmark's own commands, never counted.
MEASURING = frozenset({"info", "config|resetstat"})
_ROUND_TRIPS = re.compile(r"^agentq_redis_round_trips_total (\S+)$", re.M)


def reset(url: str) -> None:
    """Zero Redis's command counts."""
    with redis.Redis.from_url(url) as client:
        client.config_resetstat()


def commands(url: str) -> Counter[str]:
    """Calls per command since the last :func:`reset`, the benchmark's own left out."""
    with redis.Redis.from_url(url) as client:
        stats = cast(dict[str, dict[str, int]], client.info("commandstats"))
    return Counter(
        {
            name.removeprefix("cmdstat_"): int(v["calls"])
            for name, v in stats.items()
            if name.removeprefix("cmdstat_") not in MEASURING
        }
    )


def worker_round_trips(url: str) -> int:
    """The round trips every live worker has made so far (0 for a worker without /metrics)."""
    pattern = get_settings().keys.workers_pattern
    total = 0
    with redis.Redis.from_url(url) as client:
        for key in client.scan_iter(match=pattern):
            record = json.loads(cast(bytes, client.get(key)) or b"{}")
            port = record.get("metrics_port")
            if port is None:
                continue
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                found = _ROUND_TRIPS.search(response.read().decode())
            total += round(float(found[1])) if found else 0
    return total
