"""Sources defined by settings alone (``AGENTQ_HTTP_SOURCES``): any JSON API, read with JMESPath.

Each entry names a source and says where to GET (a URL template whose ``{question}`` becomes the
URL-encoded question), which values to read from the JSON answer (JMESPath expressions, such as
``articles[].title`` or ``data.items[0].text``), which headers to send (secret ones read from files
once, at start-up), its timeout, its policies and whether it is opt-in::

    AGENTQ_HTTP_SOURCES='{"headlines": {"url": "https://api.example/news?q={question}",
                          "fields": ["articles[].title", "articles[].summary"],
                          "header_files": {"Authorization": "/run/secrets/news_token"}}}'

The request goes through the worker's pooled client with the same capped streaming read and error
mapping as the built-in HTTP sources (``worker.job.sources.http``). The values read become the source's
payload, a list rendered as one line per value (``agentq.sources.render``). An answer that is not
JSON, or in which no field finds anything, is a permanent ``SourceError``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jmespath

from agentq.errors import PluginError, SourceError
from agentq.settings import HttpSourceSettings, Settings
from agentq.sources import Source, SourceContext
from worker.job.sources.http import get, shown


def secret_headers(name: str, config: HttpSourceSettings) -> dict[str, str]:
    """The headers of ``config`` with those of its ``header_files`` read in; ``PluginError`` naming the file
    (never its content) if one cannot be read or is not a header value."""
    headers = dict(config.headers)
    for header, path in config.header_files.items():
        try:
            value = Path(path).read_text().strip()
        except OSError as exc:
            raise PluginError(
                f"AGENTQ_HTTP_SOURCES: {name}: cannot read the {header} header's file {path}: {exc.strerror}"
            ) from None
        if not value or "\n" in value or "\r" in value:
            raise PluginError(
                f"AGENTQ_HTTP_SOURCES: {name}: the {header} header's file {path} is empty or has line breaks"
            )
        headers[header] = value
    return headers


def http_json_source(name: str, config: HttpSourceSettings) -> Source:
    """The :class:`Source` an ``AGENTQ_HTTP_SOURCES`` entry describes; its secret headers are read now."""
    headers = secret_headers(name, config)
    expressions = [(field, jmespath.compile(field)) for field in config.fields]

    async def fetch(question: str, ctx: SourceContext) -> list[Any]:
        url = config.url.replace("{question}", quote(question, safe=""))
        content, status = await get(ctx, url, headers=headers)
        try:
            body = json.loads(content)
        except ValueError as exc:
            raise SourceError(f"unexpected answer from {shown(url)} ({status}): not JSON ({exc})") from None
        found = [value for _, expression in expressions if (value := expression.search(body)) not in (None, [], {})]
        if not found:
            raise SourceError(f"unexpected answer from {shown(url)} ({status}): no value at {', '.join(config.fields)}")
        return found

    fetch.__name__ = fetch.__qualname__ = name
    fetch.__doc__ = f"GET {shown(config.url)} (AGENTQ_HTTP_SOURCES), reading {', '.join(config.fields)}"
    return Source(name, fetch, kind="http", opt_in=config.opt_in, timeout_s=config.timeout_s, policies=config.policies)


def http_json_sources(settings: Settings) -> Mapping[str, Source]:
    """Every source of ``AGENTQ_HTTP_SOURCES``, by name (secret headers read now)."""
    return {name: http_json_source(name, config) for name, config in settings.http_sources.items()}
