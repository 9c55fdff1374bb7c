"""Every knob of the system, typed and read in one place.

Both sides (producer and worker) build their configuration from :class:`Settings`; nothing else
reads the environment. Variables are prefixed ``AGENTQ_`` (nested fields use ``__``), a ``.env``
file in the working directory is read, and container secrets may be mounted in ``/run/secrets``.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from functools import cached_property
from typing import Annotated, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.config import JsonDict
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from agentq.policies import SourcePolicies
from agentq.protocol.keys import MAX_SHARDS, Keys
from agentq.tenants import NAME_PATTERN as TENANT_PATTERN
from agentq.tenants import check as check_tenant

ExecutorKind = Literal["auto", "interpreter", "process", "thread"]

#: What a source or analysis may be called: it appears in requests, results, Redis keys and the
#: CLI's comma-separated ``--sources``.
PLUGIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

#: Marks a setting that exists for tests, benchmarks and demos only (the simulated sources and
#: fault injection); docs/settings.md lists these apart, and a production deployment leaves them be.
DEV_ONLY: JsonDict = {"dev_only": True}

#: A list setting: in the environment, a JSON list (``["a", "b"]``) or a comma list (``a,b``).
#: ``NoDecode`` keeps pydantic-settings from insisting on JSON; ``Settings._list`` reads both.
EnvList = Annotated[tuple[str, ...], NoDecode]

#: Where one API key entry (``name:scope,scope:sha256-hex``) ends and the next begins in a comma
#: list: a comma followed by a whole entry (the scopes may hold commas, the digest cannot).
_API_KEY_START = re.compile(r",(?=[^,:]+:[a-z,]*:[0-9a-fA-F]{64}(?:,|$))")


def split_list(value: object, *, api_keys: bool = False) -> object:
    """A list setting read from the environment: a JSON list, or items separated by commas."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            items = json.loads(text)
        except ValueError:
            raise ValueError("starts with '[' but is not a JSON list; give a JSON list or a comma list") from None
        return items
    pieces = _API_KEY_START.split(text) if api_keys else text.split(",")
    return tuple(piece.strip() for piece in pieces if piece.strip())


def check_plugin_name(name: str) -> str:
    """``name`` if it is a valid source or analysis name, else ``ValueError`` saying why."""
    if not PLUGIN_NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a valid name (letters, digits, '_', '.', '-'; up to 64; not starting with '_')"
        )
    return name


class ScheduleSettings(BaseModel):
    """One recurring question of ``AGENTQ_SCHEDULES`` (``agentq.schedules``): when, and what it asks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cron: str | None = Field(None, description="five cron fields, minute first, in UTC: '0 8 * * 1-5'")
    every: float | str | None = Field(None, description="or an interval: seconds, or '90s', '10m', '1h'")
    question: str
    sources: tuple[str, ...] | None = None
    analysis: str | None = None
    priority: Literal["high", "normal", "low"] = "normal"


class HttpSourceSettings(BaseModel):
    """One source of ``AGENTQ_HTTP_SOURCES``: a JSON API read without code (``worker.job.sources.http_json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="URL template: {question} becomes the URL-encoded question")
    fields: tuple[str, ...] = Field(
        min_length=1, description="JMESPath expressions of the values to read (articles[].title, data.items[0].text)"
    )
    headers: dict[str, str] = Field(default_factory=dict, description="headers sent with every request")
    header_files: dict[str, str] = Field(
        default_factory=dict,
        description="header -> path of a file holding its value (a secret), read once at start-up, never logged",
    )
    timeout_s: PositiveFloat | None = Field(None, description="this source's timeout; default AGENTQ_SOURCE_TIMEOUT_S")
    policies: SourcePolicies = Field(default_factory=SourcePolicies, description="which source policies apply")
    opt_in: bool = Field(False, description="served only by workers whose AGENTQ_ENABLED_SOURCES names it")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if urlsplit(value.replace("{question}", "q")).scheme not in {"http", "https"}:
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("fields")
    @classmethod
    def _fields(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        import jmespath  # here: only settings that define HTTP sources need the library
        from jmespath.exceptions import JMESPathError

        for expression in value:
            try:
                jmespath.compile(expression)
            except JMESPathError as exc:
                raise ValueError(f"{expression!r} is not a JMESPath expression: {' '.join(str(exc).split())}") from None
        return value

    @field_validator("headers", "header_files")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name) or "\r" in text or "\n" in text:
                raise ValueError(f"header {name!r}: not a valid header name, or a line break in its value")
        return value


class TenantQuota(BaseModel):
    """One tenant's quota (``AGENTQ_TENANT_QUOTAS``): either part may be left out (no limit)."""

    model_config = {"extra": "forbid", "frozen": True}

    in_flight: PositiveInt | None = Field(None, description="jobs unfinished at once: queued, deferred, running")
    per_minute: PositiveInt | None = Field(None, description="jobs enqueued within any 60 s")


class Settings(BaseSettings):
    """Configuration shared by the producer and the worker."""

    model_config = SettingsConfigDict(
        env_prefix="AGENTQ_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        populate_by_name=True,
        secrets_dir="/run/secrets" if os.path.isdir("/run/secrets") else None,
        frozen=True,
    )

    # --- Redis and the queue -------------------------------------------------------------------
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("AGENTQ_REDIS_URL", "REDIS_URL"),
        description="redis://[user:password@]host:port/db or rediss:// for TLS",
    )
    redis_ca_file: str | None = Field(None, description="CA bundle for rediss:// connections")
    redis_tls_check_hostname: bool = Field(True, description="verify the server name under TLS")
    redis_connect_timeout_s: PositiveFloat = Field(2.0, description="TCP connect timeout")
    redis_connect_retries: int = Field(
        5, ge=0, description="connection attempts at start before giving up (worker side)"
    )
    redis_sentinels: EnvList = Field(
        (),
        description='Redis Sentinel addresses, "host:port" (JSON or comma list); set = the primary is found'
        " through Sentinel (the URL then gives only the password, database and TLS)",
    )
    redis_cluster: EnvList = Field(
        (),
        description='Redis Cluster startup nodes, "host:port" (JSON or comma list); set = agentq speaks to a'
        " Redis Cluster through redis-py's cluster client (the URL then gives only the user, password and TLS)",
    )
    redis_sentinel_master: str = Field(
        "agentq", min_length=1, description="the primary's name in Sentinel (its 'sentinel monitor <name>')"
    )
    redis_sentinel_password: str | None = Field(None, description="the sentinels' own password, if any")
    redis_wait_replicas: int = Field(
        0,
        ge=0,
        description="after each enqueue and each result write, wait until this many replicas hold it (WAIT);"
        " 0 = do not wait (asynchronous replication)",
    )
    redis_wait_timeout_s: PositiveFloat = Field(
        0.5, description="longest WAIT for the replicas; an enqueue not confirmed by then fails (exit 5)"
    )
    queue_name: str = Field(
        "default",
        min_length=1,
        pattern=r"^[^{}\s]+$",
        description="the queue: its keys are <key_prefix>:{<queue_name>}:..., one Redis Cluster slot (no braces)",
    )
    queue_shards: int = Field(
        1,
        ge=1,
        le=MAX_SHARDS,
        description="shards of the queue, each its own hash tag (a Redis Cluster spreads them over its primaries);"
        " every producer and worker of the queue must agree; change it only with the shards above 0 empty",
    )
    worker_shards: Annotated[tuple[int, ...], NoDecode] = Field(
        (),
        description="the shards this worker serves (JSON or comma list of numbers, from 0); empty = every shard",
    )
    key_prefix: str = Field(
        "agentq", min_length=1, pattern=r"^[^{}\s]+$", description="namespace of every Redis key (no braces)"
    )
    tenant_quotas: dict[str, TenantQuota] = Field(
        default_factory=dict,
        description='per tenant ("*": every tenant not named), a JSON object: {"team-a": {"in_flight": 100,'
        ' "per_minute": 600}}: jobs unfinished (queued, deferred, running) and jobs enqueued in any minute',
    )
    redis_max_connections: PositiveInt | None = Field(
        None, description="connections one process opens to Redis at most (none: no cap; the API sets its own)"
    )
    tenant_weights: dict[str, float] = Field(
        default_factory=dict,
        description='fair-share weight per tenant, a JSON object: {"team-a": 3} (a tenant not named: 1)',
    )
    tenant: str = Field(
        "default",
        pattern=TENANT_PATTERN,
        description="the tenant the CLI and the client enqueue as (the API takes its key's): 1 to 31 of a-z, 0-9, -",
    )

    # --- timeouts and the simulated workload ---------------------------------------------------
    source_timeout_s: PositiveFloat = Field(5.0, description="default per-source fetch timeout")
    deadline_s: PositiveFloat = Field(15.0, description="default whole-query deadline")
    max_source_timeout_s: PositiveFloat = Field(30.0, description="largest timeout a request may ask")
    max_deadline_s: PositiveFloat = Field(30.0, description="largest deadline a request may ask")
    time_scale: PositiveFloat = Field(
        1.0,
        description="multiplies simulated latencies and inference work (tests use 0.01-0.1)",
        json_schema_extra=DEV_ONLY,
    )
    inference_units: PositiveInt = Field(
        1500, description="CPU work per inference at time_scale 1 (1 unit = 1,000 token hashes)"
    )
    source_latency_s: dict[str, float] = Field(
        default_factory=dict,
        description="override a simulated source's latency (before scaling)",
        json_schema_extra=DEV_ONLY,
    )
    source_fail: Annotated[frozenset[str], NoDecode] = Field(
        default_factory=frozenset,
        description="simulated sources that raise an error (fault injection)",
        json_schema_extra=DEV_ONLY,
    )
    source_fail_rate: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="chance that any simulated fetch fails (fault injection)",
        json_schema_extra=DEV_ONLY,
    )

    # --- sources -------------------------------------------------------------------------------
    enabled_sources: EnvList = Field(
        (),
        description="the sources this worker serves (JSON or comma list); empty = every installed source except"
        " opt-in ones",
    )
    default_sources: EnvList = Field(
        (), description="sources a request that names none fans out to; empty = every source that can run here"
    )
    schedules: dict[str, ScheduleSettings] = Field(
        default_factory=dict,
        description='recurring questions (JSON): name -> {"cron": "0 8 * * *" or "every": "10m", "question": "...",'
        ' "sources": [...], "priority": "normal"}; every worker declares them at start (docs/client.md)',
    )
    http_sources: dict[str, HttpSourceSettings] = Field(
        default_factory=dict,
        description='sources defined without code (JSON): name -> {"url": ".../news?q={question}", "fields":'
        ' ["articles[].title"], "headers": {}, "header_files": {"Authorization": "/run/secrets/token"},'
        ' "timeout_s": 2, "policies": {"cache": false}, "opt_in": false}; see docs/plugins.md',
    )
    plugin_modules: EnvList = Field(
        (),
        description="modules every worker imports at start, each exposing SOURCES and/or ANALYSES lists (plugins"
        " without entry points; producers do not import them, so they accept names they cannot check)",
    )

    # --- analyses (the inference stage) ------------------------------------------------------------
    enabled_analyses: EnvList = Field(
        (),
        description="the analyses this worker runs (JSON or comma list); empty = every installed analysis except"
        " opt-in ones",
    )
    default_analysis: str = Field("bag_of_words", description="the analysis a request that names none gets")
    analysis_params: dict[str, dict[str, JsonValue]] = Field(
        default_factory=dict, description="per-analysis parameters over its defaults (JSON): name -> {param: value}"
    )
    upstream_url: str | None = Field(
        None, description="base URL of the HTTP sources' upstream (<url>/weather?q=...); unset = HTTP sources off"
    )
    source_urls: dict[str, str] = Field(
        default_factory=dict, description="an HTTP source's own URL, overriding upstream_url for that source"
    )
    upstream_connect_timeout_s: PositiveFloat = Field(2.0, description="TCP/TLS connect timeout of HTTP sources")
    upstream_max_connections: PositiveInt = Field(
        100, description="connections one worker's HTTP client may hold open at once (all upstreams)"
    )
    max_source_bytes: PositiveInt = Field(
        262_144,
        description="largest answer an HTTP source reads (decoded bytes), and the longest text any source may return"
        " (characters); past it that source fails with a permanent error",
    )

    # --- the worker ----------------------------------------------------------------------------
    executor: ExecutorKind = Field("auto", description="inference pool kind; auto picks the best")
    pool_size: PositiveInt | None = Field(None, description="inference pool size; default: usable CPUs")
    max_jobs: PositiveInt = Field(
        16, description="jobs one worker runs at once, at most (admission keeps heavy jobs to what meets deadlines)"
    )
    admission: bool = Field(
        True,
        description="take a job only if this worker can finish it within its deadline, given the inference already"
        " queued on its pool (else it stays queued for another worker or for later)",
    )
    admission_margin: float = Field(
        0.1, ge=0.0, lt=1.0, description="share of a job's deadline admission keeps free for estimation error"
    )
    poll_delay_s: PositiveFloat = Field(
        5.0,
        description="how often an idle worker looks at the queue unasked; enqueueing rings a doorbell that wakes one"
        " at once (kept below redis_socket_timeout_s)",
    )
    result_ttl_s: PositiveInt = Field(3600, description="how long results stay in Redis")
    max_tries: PositiveInt = Field(
        3,
        description="tries of one job before it fails for good: a run that ended counts, and a run whose worker"
        " died while it ran alone; a death in company gives the try back and the job runs alone next",
    )
    shutdown_grace_s: int = Field(
        0, ge=0, description="on SIGTERM, seconds to let running jobs finish before re-queueing"
    )
    lease_s: PositiveFloat = Field(
        10.0,
        description="a running job's lease: renewed every third of it; a dead worker's jobs run again after it",
    )
    redis_outage_s: PositiveFloat = Field(
        30.0, description="worker: how long it rides through Redis being unreachable before it exits"
    )
    redis_socket_timeout_s: PositiveFloat = Field(
        10.0, description="a Redis command without an answer this long counts as a connection error"
    )
    health_check_interval_s: PositiveInt = Field(10, description="how often the worker heartbeats")
    worker_id_file: str | None = Field(
        None, description="file the worker writes its id to, for 'worker --check' (the image sets one)"
    )
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="serve Prometheus /metrics on this port; 0 = any free port (shown in the heartbeat); unset = off",
    )
    metrics_host: str = Field("127.0.0.1", description="address the /metrics endpoint binds (0.0.0.0 in containers)")
    queue_depth_interval_s: PositiveFloat = Field(5.0, description="how often the queue-depth gauge is refreshed")
    log_format: Literal["text", "json"] = Field(
        "text",
        description="log lines of the worker and the API: text, or JSON (a worker's with the job id, the API's "
        "access lines with the request's fields)",
    )

    # --- progress, deduplication, priorities -----------------------------------------------------
    progress_ttl_s: PositiveInt = Field(
        600, description="how long a job's progress log stays in Redis after its last event (late watchers replay it)"
    )
    priority_step_s: PositiveFloat = Field(
        300.0,
        description="queue-score gap between priorities: a job waits behind higher-priority jobs enqueued "
        "up to this long after it, never longer (the bound on starvation)",
    )

    jobs_index_size: PositiveInt = Field(
        1000,
        description="jobs each listing index keeps (recent jobs; recent finished jobs per status); older entries"
        " are trimmed as new ones are written",
    )

    # --- source policies (worker.job.resilience) ---------------------------------------------------
    cache_ttl_s: int = Field(
        60, ge=0, description="seconds a source's fetched text stays in the shared Redis cache; 0 = no cache"
    )
    source_retries: int = Field(
        2, ge=0, description="extra attempts for a fetch that timed out or failed transiently; 0 = no retries"
    )
    retry_backoff_s: PositiveFloat = Field(
        0.1, description="back-off before the first retry; doubles each retry, plus up to as much jitter"
    )
    retry_backoff_max_s: PositiveFloat = Field(2.0, description="longest back-off between two attempts")
    breaker_failures: int = Field(
        5, ge=0, description="consecutive failed calls to a source (all workers) that open its circuit; 0 = no breaker"
    )
    breaker_cooldown_s: PositiveFloat = Field(
        30.0, description="how long an open circuit skips its source before one probe call is let through"
    )
    adaptive_timeouts: bool = Field(True, description="per-source timeout from recent latencies (p95 x 1.5)")
    adaptive_min_samples: int = Field(20, ge=2, description="latency samples a source needs before its timeout adapts")
    adaptive_window: PositiveInt = Field(100, description="recent latency samples kept per source")
    adaptive_timeout_min_s: PositiveFloat = Field(0.5, description="shortest adaptive timeout")
    adaptive_timeout_max_s: PositiveFloat | None = Field(
        None, description="longest adaptive timeout; default: the fixed one (request's or source_timeout_s)"
    )
    rate_limits: dict[str, int | str] = Field(
        default_factory=dict,
        description='per-source request limit shared by all workers: requests per second, or "100/minute"',
    )

    # --- the HTTP API and dashboard (agentq-api) ------------------------------------------------
    api_host: str = Field("127.0.0.1", description="address the API binds (0.0.0.0 in containers)")
    api_port: int = Field(8000, ge=0, le=65535, description="port the API listens on")
    api_keys: EnvList = Field(
        (),
        description="API keys, hashed: a JSON or comma list of 'name:scope,scope:sha256-hex[:tenant]' (scopes: read,"
        " submit, cancel, admin; tenant: default); 'agentq-api keygen' makes one. Also read from a secret file"
        " agentq_api_keys",
    )
    api_keys_file: str | None = Field(
        None, description="a file of more API keys, one 'name:scopes:sha256-hex[:tenant]' a line (# comments)"
    )
    api_rate_limit: str = Field(
        "600/minute",
        description="requests one API key may make, e.g. '10/second' (counted in Redis, for every API process)",
    )
    api_max_body_bytes: PositiveInt = Field(65_536, description="largest request body the API reads")
    api_max_streams: PositiveInt = Field(32, description="event streams (SSE) one API process holds open at most")
    api_max_streams_per_key: PositiveInt = Field(4, description="event streams one API key may hold open at once")
    api_stream_max_s: PositiveFloat = Field(
        600.0, description="longest life of one event stream, seconds; then it ends with an error event"
    )
    api_redis_max_connections: PositiveInt = Field(
        64, description="the API process's Redis connections at most (streams hold one each)"
    )
    api_cors_origins: EnvList = Field(
        (), description="origins allowed to call the API from a browser (JSON or comma list); empty = CORS off"
    )

    # --- tracing (agentq.tracing) --------------------------------------------------------------
    otlp_endpoint: str | None = Field(
        None,
        description="OTLP/HTTP collector base URL (http://collector:4318); set = one trace per job is exported",
    )
    service_name: str | None = Field(
        None, description="the service.name of exported spans; default: agentq-producer, agentq-worker, agentq-api"
    )

    # --- input limits --------------------------------------------------------------------------
    max_question_chars: PositiveInt = Field(2000, description="longest question accepted")

    @field_validator(
        "redis_sentinels",
        "redis_cluster",
        "enabled_sources",
        "default_sources",
        "plugin_modules",
        "enabled_analyses",
        "api_cors_origins",
        "source_fail",
        "worker_shards",
        mode="before",
    )
    @classmethod
    def _list(cls, value: object) -> object:
        return split_list(value)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _api_key_list(cls, value: object) -> object:
        return split_list(value, api_keys=True)

    @field_validator("api_keys")
    @classmethod
    def _api_keys(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from agentq.apikeys import parse_entry  # the format lives with its hashing

        for entry in value:
            parse_entry(entry)
        return value

    @field_validator("tenant_quotas")
    @classmethod
    def _tenant_quotas(cls, value: dict[str, TenantQuota]) -> dict[str, TenantQuota]:
        for name in value:
            if name != "*":
                check_tenant(name)
        return value

    def quota_of(self, tenant: str) -> TenantQuota | None:
        """``tenant``'s quota (or that of every tenant not named), if it has one."""
        return self.tenant_quotas.get(tenant) or self.tenant_quotas.get("*")

    @field_validator("tenant_weights")
    @classmethod
    def _tenant_weights(cls, value: dict[str, float]) -> dict[str, float]:
        for name, weight in value.items():
            check_tenant(name)
            if not 0.01 <= weight <= 1000:
                raise ValueError(f"tenant {name!r}: a weight is a number from 0.01 to 1000, not {weight!r}")
        return value

    @field_validator("api_rate_limit")
    @classmethod
    def _api_rate_limit(cls, value: str) -> str:
        from limits import parse as parse_rate_limit

        try:
            parse_rate_limit(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a rate limit ({exc})") from None
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if urlsplit(value).scheme not in {"redis", "rediss", "unix"}:
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("http_sources")
    @classmethod
    def _http_source_names(cls, value: dict[str, HttpSourceSettings]) -> dict[str, HttpSourceSettings]:
        for name in value:
            check_plugin_name(name)
        return value

    @field_validator("default_analysis")
    @classmethod
    def _analysis_name(cls, value: str) -> str:
        return check_plugin_name(value)

    @field_validator("redis_sentinels", "redis_cluster")
    @classmethod
    def _addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for address in value:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f'{address!r} is not "host:port"')
        return value

    @model_validator(mode="after")
    def _shards_of_the_queue(self) -> Settings:
        outside = sorted({s for s in self.worker_shards if not 0 <= s < self.queue_shards})
        if outside:
            raise ValueError(
                f"AGENTQ_WORKER_SHARDS: the queue has shards 0 to {self.queue_shards - 1} (AGENTQ_QUEUE_SHARDS),"
                f" not {', '.join(map(str, outside))}"
            )
        return self

    @model_validator(mode="after")
    def _sentinels_speak_tcp(self) -> Settings:
        for name, given in (("SENTINELS", self.redis_sentinels), ("CLUSTER", self.redis_cluster)):
            if given and urlsplit(self.redis_url).scheme == "unix":
                raise ValueError(f"AGENTQ_REDIS_{name} needs a redis:// or rediss:// AGENTQ_REDIS_URL, not unix://")
        if self.redis_sentinels and self.redis_cluster:
            raise ValueError(
                "set AGENTQ_REDIS_SENTINELS or AGENTQ_REDIS_CLUSTER, not both: a Cluster fails over by itself"
            )
        if self.redis_cluster and urlsplit(self.redis_url).path.strip("/") not in ("", "0"):
            raise ValueError("a Redis Cluster has only database 0: AGENTQ_REDIS_URL must not name another")
        return self

    @field_validator("upstream_url")
    @classmethod
    def _upstream_scheme(cls, value: str | None) -> str | None:
        if not value:  # an empty variable turns the HTTP sources off, as an unset one does
            return None
        if urlsplit(value).scheme not in {"http", "https"}:
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("source_urls")
    @classmethod
    def _source_url_schemes(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [name for name, url in value.items() if urlsplit(url).scheme not in {"http", "https"}]
        if bad:
            raise ValueError(f"URLs must start with http:// or https:// (not so for {', '.join(bad)})")
        return value

    @field_validator("rate_limits")
    @classmethod
    def _rate_limits(cls, value: dict[str, int | str]) -> dict[str, int | str]:
        from limits import parse as parse_rate_limit  # here: only a worker with rate limits needs the library

        for name, limit in value.items():
            try:
                if isinstance(limit, str):
                    parse_rate_limit(limit)
                elif limit <= 0:
                    raise ValueError("must be > 0")
            except ValueError as exc:
                raise ValueError(f"{name}: {limit!r} is not a rate limit ({exc})") from None
        return value

    @cached_property
    def redis_url_safe(self) -> str:
        """The Redis URL with its password masked, for messages and logs."""
        parts = urlsplit(self.redis_url)
        if parts.password is None:
            return self.redis_url
        user = parts.username or ""
        netloc = f"{user}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))

    @cached_property
    def redis_location(self) -> str:
        """Where Redis is, for messages and logs: the masked URL, the Cluster's startup nodes, or the
        primary's name and its sentinels."""
        if self.redis_cluster:
            return f"Redis Cluster of {', '.join(self.redis_cluster)}"
        if not self.redis_sentinels:
            return self.redis_url_safe
        return f"primary {self.redis_sentinel_master!r} of sentinels {', '.join(self.redis_sentinels)}"

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """``redis_sentinels`` as (host, port) pairs; an IPv6 host may be written in brackets."""
        return _pairs(self.redis_sentinels)

    @property
    def cluster_addresses(self) -> list[tuple[str, int]]:
        """``redis_cluster`` as (host, port) pairs."""
        return _pairs(self.redis_cluster)

    @property
    def job_timeout_s(self) -> float:
        """The hard limit on one run of a job: the largest deadline a request may ask, plus margin."""
        return self.max_deadline_s + 5.0

    @property
    def keys(self) -> Keys:
        """Every Redis key name of this prefix and queue."""
        return Keys(self.key_prefix, self.queue_name, shards=self.queue_shards)

    @property
    def served_shards(self) -> list[int]:
        """The shards this worker serves (``worker_shards``, else every one)."""
        return list(self.worker_shards) or list(range(self.queue_shards))


def _pairs(addresses: tuple[str, ...]) -> list[tuple[str, int]]:
    pairs = []
    for address in addresses:
        host, _, port = address.rpartition(":")
        pairs.append((host.strip("[]"), int(port)))
    return pairs


def get_settings(**overrides: object) -> Settings:
    """Read the settings from the environment (and ``.env``), with explicit overrides on top."""
    return Settings(**overrides)  # type: ignore[arg-type]


def settings_or_exit(flags: Mapping[str, tuple[str, object]] | None = None) -> Settings:
    """The settings, or exit 2 with one ``error:`` line naming every variable that is wrong (the CLIs' way in).

    ``flags``: command-line options that mirror settings, ``{field: (flag, value)}``; a value that is
    not None wins over the environment, and is named by its flag if it is wrong.
    """
    given = {name: value for name, (_, value) in (flags or {}).items() if value is not None}
    try:
        return get_settings(**given)
    except (ValidationError, SettingsError) as exc:
        names = {name: flag for name, (flag, value) in (flags or {}).items() if value is not None}
        print(f"error: bad settings: {describe_settings_error(exc, names)}", file=sys.stderr)
        raise SystemExit(2) from None


def describe_settings_error(exc: ValidationError | SettingsError, flags: Mapping[str, str] | None = None) -> str:
    """One line naming every setting that is wrong and why, by its environment variable (or the ``flags``
    that set it: ``{field: flag}``)."""
    if isinstance(exc, SettingsError):  # a JSON setting that is not JSON, found before validation
        field = re.search(r'field "([^"]+)"', str(exc))
        variable = f"AGENTQ_{field.group(1).upper()}" if field else "a setting"
        return f"{variable}: not valid JSON"
    parts = []
    for err in exc.errors(include_url=False):
        name = str(err["loc"][0]) if err["loc"] else "settings"
        variable = (flags or {}).get(name) or (name if name.isupper() else f"AGENTQ_{name.upper()}")
        parts.append(f"{variable}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)
