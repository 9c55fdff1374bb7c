"""A worker with one extra, test-only source, ``poison``, that kills its worker process.

Run as a script (``python tests/reliability/crashing_worker.py``): it registers the source and
then runs the ordinary ``worker`` command, so everything else is the production worker. Importing
this module (the tests do, for :data:`POISON_EXIT`) registers nothing: a ``poison`` source in the
test process itself would take pytest down with it.
"""

from __future__ import annotations

import os

from worker.cli import run
from worker.sources import SourceContext, register

#: Exit status of a worker the poison source killed (EX_SOFTWARE), to tell it from other exits.
POISON_EXIT = 70


async def poison(question: str, ctx: SourceContext) -> str:
    """Take the whole worker down at once, as a segfault or the OOM killer would."""
    os._exit(POISON_EXIT)


if __name__ == "__main__":
    register("poison")(poison)
    run()
