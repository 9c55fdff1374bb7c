"""The built-in sources, registered through the ``agentq.sources`` entry points in pyproject.toml.

- ``simulated``: the reference workload's three sources (weather, news, knowledge base), with the
  reference latencies and text derived from the question;
- ``http``: five JSON APIs fetched through the worker's one pooled HTTP client, once an upstream
  URL is configured;
- ``http_json``: the sources ``AGENTQ_HTTP_SOURCES`` defines without code (any JSON API, fields
  read with JMESPath).

See ``agentq.plugins`` and docs/plugins.md for the interface and how to add a source of your own.
"""
