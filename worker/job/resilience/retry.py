"""Retries of a source fetch: which failures are worth another attempt, and when to stop.

Built on tenacity rather than stamina: stamina only offers "N attempts within T seconds", while a
retry here must not *start* unless the whole attempt (its back-off plus its full per-attempt
timeout) still fits before the query deadline. tenacity computes the next back-off before it asks
the stop condition, so that rule is one small stop function; the back-off is tenacity's own
exponential wait plus a random jitter of up to the first back-off, the sum capped at the maximum:
before retry n (n = 1, 2, ...) it waits ``min(b * 2**(n-1) + U(0, b), max)``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential, wait_random

from agentq.errors import TransientSourceError

T = TypeVar("T")


def is_transient(exc: BaseException) -> bool:
    """Worth another attempt: a timeout, a transient upstream error (5xx, 429), a broken connection.

    A plain :class:`~agentq.errors.SourceError` is permanent (the upstream refused the request, or
    the simulated sources' injected failure, which by design repeats for the same job and try), as
    is any other exception (a bug retried is only slower).
    """
    return isinstance(exc, (TimeoutError, TransientSourceError, ConnectionError))


class _Wait:
    """Exponential back-off with jitter, at most ``max_s``, never shorter than the upstream's ``Retry-After``."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self.max_s = max_s
        self.backoff = wait_exponential(multiplier=initial_s, max=max_s, exp_base=2) + wait_random(0, initial_s)

    def __call__(self, state: RetryCallState) -> float:
        wait = min(float(self.backoff(state)), self.max_s)  # tenacity caps the exponential part, not the jitter
        exc = state.outcome.exception() if state.outcome else None
        hint = getattr(exc, "retry_after_s", None)
        return max(wait, hint) if isinstance(hint, (int, float)) else wait


class _Stop:
    """Stop after ``retries`` retries, or when the next attempt could not finish by ``deadline``."""

    def __init__(self, retries: int, attempt_timeout_s: float, deadline: float) -> None:
        self.retries, self.attempt_timeout_s, self.deadline = retries, attempt_timeout_s, deadline

    def __call__(self, state: RetryCallState) -> bool:
        if state.attempt_number > self.retries:
            return True
        return time.monotonic() + state.upcoming_sleep + self.attempt_timeout_s > self.deadline


async def with_retries(
    attempt: Callable[[], Awaitable[T]],
    *,
    retries: int,
    backoff_s: float,
    backoff_max_s: float,
    attempt_timeout_s: float,
    deadline: float,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Await ``attempt()`` until it succeeds, fails permanently, or retrying must stop.

    ``deadline`` is a ``time.monotonic()`` instant. The last failure is re-raised unchanged. With no
    retries to make, the attempt is simply awaited: tenacity's machinery costs more than a no-op job.
    """
    if retries <= 0:
        return await attempt()
    retrying = AsyncRetrying(
        stop=_Stop(retries, attempt_timeout_s, deadline),
        wait=_Wait(backoff_s, backoff_max_s),
        retry=retry_if_exception(is_transient),
        sleep=sleep,
        reraise=True,
    )

    async def call() -> T:  # a coroutine function, so tenacity awaits it
        return await attempt()

    return await retrying(call)
