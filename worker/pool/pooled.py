"""What runs inside the inference pool around every analysis: the clock, and where it ran.

This module is imported by every pool worker (a subinterpreter, a child process or a thread), so
it uses the standard library only. :func:`run_analysis` calls the analysis's function and measures
it, so no analysis has to time itself; :func:`warm_up` starts a pool worker and imports modules in
it before the first job.
"""

from __future__ import annotations

import importlib
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

_WHERE: tuple[int, int] | None = None


def where_am_i() -> tuple[int, int]:
    """(pid, interpreter id): interpreter id 0 is the main interpreter. Found once per pool worker."""
    global _WHERE
    if _WHERE is None:
        try:
            from concurrent import interpreters  # type: ignore[attr-defined,unused-ignore]
        except ImportError:  # before 3.14: no subinterpreters
            _WHERE = os.getpid(), 0
        else:
            _WHERE = os.getpid(), int(interpreters.get_current().id)
    return _WHERE


def run_analysis(
    function: Callable[[str, str, Mapping[str, Any]], Mapping[str, Any]],
    question: str,
    text: str,
    params: Mapping[str, Any],
    executor: str,
) -> dict[str, Any]:
    """``function(question, text, params)``, with when it ran, its CPU time and where (``executor`` echoed).

    The output is passed through untouched (the worker validates it against the analysis's model).
    """
    started, cpu_started = time.monotonic(), time.thread_time()
    output = function(question, text, params)
    ended, cpu_s = time.monotonic(), time.thread_time() - cpu_started
    pid, interpreter_id = where_am_i()
    return {
        "output": output,
        "started": started,
        "ended": ended,
        "cpu_s": cpu_s,
        "ran_in": {
            "executor": executor,
            "pid": pid,
            "interpreter_id": interpreter_id,
            "thread_id": threading.get_ident(),
        },
    }


def warm_up(modules: tuple[str, ...] = ()) -> int:
    """Start a pool worker and import ``modules`` in it (the analyses' modules), so the first job does not.

    Best effort: a module that does not import here is skipped. The analyses passed their start-up
    check already, so such a module is not needed to run them (3.14 can send a function that uses
    no globals to a subinterpreter by its code alone, without importing its module).
    """
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            continue
    return os.getpid()
