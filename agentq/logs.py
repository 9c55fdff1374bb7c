"""Log lines for every process, in ``AGENTQ_LOG_FORMAT``: text for a terminal, one JSON object per
line for a log collector.

The worker adds the job and worker ids to every line (``worker.ops.logs``); the API adds each
request's fields to its access lines (:class:`AccessFields`). Both send everything to stderr.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Literal

from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["text", "json"]
#: The fields of every JSON line, and their names in it.
JSON_FIELDS = ("asctime", "levelname", "name", "message")
JSON_NAMES = {"asctime": "time", "levelname": "level", "name": "logger"}


def formatter(fmt: LogFormat, text: str, fields: Sequence[str] = ()) -> logging.Formatter:
    """``text`` (a %-style format) for ``text``; for ``json``, the common fields plus ``fields``."""
    if fmt == "json":
        return JsonFormatter([*JSON_FIELDS, *fields], rename_fields=JSON_NAMES, timestamp=False)
    return logging.Formatter(text)


def configure(handler_formatter: logging.Formatter, level: int, filters: Sequence[logging.Filter] = ()) -> None:
    """Send every log record to stderr through one handler, replacing any the root logger had."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(handler_formatter)
    for f in filters:
        handler.addFilter(f)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


class AccessFields(logging.Filter):
    """Gives uvicorn's access lines their request as fields: ``client``, ``method``, ``path``, ``status``.

    uvicorn logs each request as ``'%s - "%s %s HTTP/%s" %d'`` with (client, method, path, HTTP
    version, status) as the record's arguments; a JSON line then carries each one on its own.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Annotate an access record; never drop one."""
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            record.client, record.method, record.path, _, record.status = args
        return True
