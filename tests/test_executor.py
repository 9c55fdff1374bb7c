"""The inference pool: which executor runs, that it really runs elsewhere, and clean shutdown."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from worker.pool import bag_of_words as inference
from worker.pool import pooled
from worker.pool.executor import choose, create_pool, interpreter_pool_available

ON_314 = sys.version_info >= (3, 14)


def test_auto_picks_interpreters_on_314_and_processes_before() -> None:
    """'auto' means InterpreterPoolExecutor on 3.14+, ProcessPoolExecutor otherwise, with a reason."""
    kind, reason = choose("auto")
    assert interpreter_pool_available() is ON_314
    assert kind == ("interpreter" if ON_314 else "process")
    assert reason.startswith("auto:")


@pytest.mark.skipif(not ON_314, reason="InterpreterPoolExecutor is new in 3.14")
async def test_interpreter_pool_runs_in_another_interpreter() -> None:
    """On 3.14 inference runs in a subinterpreter of this process, not the main interpreter."""
    pool = create_pool("auto", 2)
    try:
        out = await pool.run(
            pooled.run_analysis, inference.analyse, "rain?", "Rain today. Sun tomorrow.", {}, pool.kind
        )
    finally:
        pool.shutdown()
    assert pool.info.kind == "interpreter"
    assert out["ran_in"]["executor"] == "interpreter"
    assert out["ran_in"]["pid"] == os.getpid()
    assert out["ran_in"]["interpreter_id"] != 0  # 0 is the main interpreter


@pytest.mark.skipif(ON_314, reason="the fallback is for Pythons without InterpreterPoolExecutor")
def test_forcing_interpreters_before_314_is_a_clear_error() -> None:
    """executor=interpreter on 3.11 fails at start-up with the reason, not at the first job."""
    with pytest.raises(RuntimeError, match=r"needs Python 3\.14"):
        choose("interpreter")


async def test_process_pool_runs_in_child_processes_and_leaves_none() -> None:
    """The process pool runs inference in other processes and reaps them all on shutdown."""
    pool = create_pool("process", 2)
    outs = await asyncio.gather(*(pool.run(pooled.warm_up, ()) for _ in range(4)))
    pool.shutdown()
    children = set(outs)
    assert os.getpid() not in children
    for pid in children:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_thread_pool_is_available_for_benchmarks() -> None:
    """executor=thread runs in this interpreter (it exists to show the GIL)."""
    pool = create_pool("thread", 1)
    try:
        out = await pool.run(pooled.run_analysis, inference.analyse, "q", "text.", {"units": 1}, pool.kind)
    finally:
        pool.shutdown()
    assert (out["ran_in"]["pid"], out["ran_in"]["interpreter_id"]) == (os.getpid(), 0)
    assert pool.info.reason.startswith("forced by settings")


def test_inference_is_a_fixed_amount_of_deterministic_work() -> None:
    """The work done is the requested units whatever the text, and the answer is repeatable."""
    text = "Rain is expected in Paris. The market is calm. Paris rain will stop by noon."
    a = inference.analyse("will it rain in paris", text, {"units": 5})
    b = inference.analyse("will it rain in paris", text, {"units": 5})
    short = inference.analyse("will it rain in paris", "Rain.", {"units": 5})
    assert a["work_units"] == short["work_units"] == 5
    assert (a["summary"], a["top_terms"], a["relevance"]) == (b["summary"], b["top_terms"], b["relevance"])
    assert "rain" in a["top_terms"] and "paris" in a["top_terms"]
    assert "Paris" in str(a["summary"])
