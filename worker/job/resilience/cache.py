"""The shared source cache: a source's fetched text per normalised question, in Redis with a TTL.

What is cached is the *fetched text*, not the analysed answer: the fetch is what costs an upstream
call and a quota token, while inference is local CPU work that still runs (so a cached answer is
analysed exactly like a fresh one and its timing stays honest). Failures are never cached.
"""

from __future__ import annotations

import hashlib
import json
import time
import unicodedata
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from agentq.protocol.keys import Keys


def normalise(question: str) -> str:
    """The form two questions share when they ask the same thing: NFKC, casefolded, one space."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", question).casefold())
    return " ".join(folded.split())


def question_digest(question: str) -> str:
    """sha256 (hex) of the normalised question: the last part of the cache key."""
    return hashlib.sha256(normalise(question).encode()).hexdigest()


class SourceCache:
    """Get and put one source's text for one question; values are JSON ``{"text", "stored_at"}``."""

    def __init__(self, redis: Redis, keys: Keys, ttl_s: int) -> None:
        self.redis, self.keys, self.ttl_s = redis, keys, ttl_s

    def key(self, source: str, question: str) -> str:
        return self.keys.cache(source, question_digest(question))

    async def get(self, source: str, question: str) -> str | None:
        """The cached text, or None; a value that is not what we wrote counts as a miss."""
        raw = await self.redis.get(self.key(source, question))
        if raw is None:
            return None
        value = json.loads(raw)
        text = value.get("text") if isinstance(value, dict) else None
        return text if isinstance(text, str) else None

    async def put(self, source: str, question: str, text: str) -> None:
        """Store a successful fetch for ``ttl_s`` seconds (overwriting an older one)."""
        value = json.dumps({"text": text, "stored_at": time.time()}, separators=(",", ":"))
        await self.redis.set(self.key(source, question), value, ex=self.ttl_s)
