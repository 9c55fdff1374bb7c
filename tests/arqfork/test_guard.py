"""The guard on arq's internals: every arq function ``worker.arqfork`` overrides, or ``agentq.wire``
mirrors, must be exactly the source it was written against. An arq upgrade fails here first,
naming what to review, instead of breaking delivery quietly."""

from __future__ import annotations

import hashlib
import importlib
import inspect
from importlib import metadata

from worker.arqfork import PINNED, PINNED_VERSION


def resolve(dotted: str) -> object:
    """The object a dotted path names: the longest importable module, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def digest(dotted: str) -> str:
    """sha256 of the source of what ``dotted`` names."""
    return hashlib.sha256(inspect.getsource(resolve(dotted)).encode()).hexdigest()  # type: ignore[arg-type]


def test_every_overridden_or_mirrored_arq_function_is_the_pinned_source() -> None:
    """Each pinned arq function's source hashes as pinned; a change names the function and what to do."""
    changed = [(name, pinned, digest(name)) for name, pinned in PINNED.items() if digest(name) != pinned]
    installed = metadata.version("arq")
    assert not changed, (
        f"arq {installed} is installed, worker/arqfork.py was written against arq {PINNED_VERSION}, and the source "
        "of what it overrides or mirrors has changed:\n"
        + "\n".join(f"  {name}: pinned sha256 {old[:12]}..., now {new[:12]}..." for name, old, new in changed)
        + "\nRead the new source of each, adapt the override in worker/arqfork.py (or agentq/wire.py for the "
        "format), then put the new digests in worker/arqfork.PINNED."
    )


def test_the_overrides_are_all_pinned() -> None:
    """Every method AgentQWorker overrides is one of the pinned functions."""
    from arq.worker import Worker

    from worker.arqfork import AgentQWorker

    overridden = {
        f"arq.worker.Worker.{name}"
        for name, value in vars(AgentQWorker).items()
        if callable(value) and hasattr(Worker, name)
    }
    assert overridden <= set(PINNED), f"overridden but not pinned: {sorted(overridden - set(PINNED))}"
