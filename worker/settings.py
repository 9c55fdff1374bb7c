"""Every knob of the system, typed and read in one place.

Both sides (producer and worker) build their configuration from :class:`Settings`; nothing else
reads the environment. Variables are prefixed ``AGENTQ_`` (nested fields use ``__``), a ``.env``
file in the working directory is read, and container secrets may be mounted in ``/run/secrets``.
"""

from __future__ import annotations

import os
from functools import cached_property
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, Field, PositiveFloat, PositiveInt, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ExecutorKind = Literal["auto", "interpreter", "process", "thread"]

#: Names of the sources every installation registers (see ``worker.sources``).
DEFAULT_SOURCES = ("weather", "news", "knowledge_base")


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
    queue_name: str = Field("agentq:queue", min_length=1, description="arq queue (a sorted set)")
    key_prefix: str = Field("agentq", min_length=1, description="namespace of our own Redis keys")

    # --- timeouts and the simulated workload ---------------------------------------------------
    source_timeout_s: PositiveFloat = Field(5.0, description="default per-source fetch timeout")
    deadline_s: PositiveFloat = Field(15.0, description="default whole-query deadline")
    max_source_timeout_s: PositiveFloat = Field(30.0, description="largest timeout a request may ask")
    max_deadline_s: PositiveFloat = Field(30.0, description="largest deadline a request may ask")
    time_scale: PositiveFloat = Field(
        1.0, description="multiplies simulated latencies and inference work (tests use 0.01-0.1)"
    )
    inference_units: PositiveInt = Field(
        1500, description="CPU work per inference at time_scale 1 (1 unit = 1,000 token hashes)"
    )
    source_latency_s: dict[str, float] = Field(
        default_factory=dict, description="override a simulated source's latency (before scaling)"
    )
    source_fail: frozenset[str] = Field(
        default_factory=frozenset, description="simulated sources that raise an error (fault injection)"
    )
    source_fail_rate: float = Field(
        0.0, ge=0.0, le=1.0, description="chance that any simulated fetch fails (fault injection)"
    )

    # --- the worker ----------------------------------------------------------------------------
    executor: ExecutorKind = Field("auto", description="inference pool kind; auto picks the best")
    pool_size: PositiveInt | None = Field(None, description="inference pool size; default: usable CPUs")
    max_jobs: PositiveInt = Field(4, description="jobs one worker runs at once")
    poll_delay_s: PositiveFloat = Field(0.01, description="how often an idle worker polls the queue")
    result_ttl_s: PositiveInt = Field(3600, description="how long results stay in Redis")
    max_tries: PositiveInt = Field(3, description="starts of one job before it fails for good")
    shutdown_grace_s: int = Field(
        0, ge=0, description="on SIGTERM, seconds to let running jobs finish before re-queueing"
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
    log_format: Literal["text", "json"] = Field("text", description="worker log lines: text, or JSON with the job id")

    # --- input limits --------------------------------------------------------------------------
    max_question_chars: PositiveInt = Field(2000, description="longest question accepted")

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if urlsplit(value).scheme not in {"redis", "rediss", "unix"}:
            raise ValueError("must start with redis://, rediss:// or unix://")
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

    @property
    def job_timeout_s(self) -> float:
        """arq's hard limit on one job: the largest deadline a request may ask, plus margin."""
        return self.max_deadline_s + 5.0

    @property
    def in_progress_expiry_s(self) -> float:
        """How long ``arq:in-progress:<id>`` lives: arq sets it to the job timeout + 10 s."""
        return self.job_timeout_s + 10.0


def get_settings(**overrides: object) -> Settings:
    """Read the settings from the environment (and ``.env``), with explicit overrides on top."""
    return Settings(**overrides)  # type: ignore[arg-type]
