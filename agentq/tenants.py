"""Tenants: whose job a job is, told by its id.

Every job belongs to one tenant: the API key's (``agentq-api keygen --tenant``), or the CLI's and
the client's ``AGENTQ_TENANT`` (``default``). A tenant's job ids begin with its name and ``_``
(``acme_3f9c...``); the default tenant's ids are plain uuid4 hex, as every id was before tenants
existed, so those ids, keys and listings keep working unchanged.

Reading the tenant from the id costs Redis nothing: the API refuses another tenant's id before it
asks Redis anything (a 404, as for an unknown id), and the worker knows a job's tenant from the
claim's reply alone. Ids are made by the producer, never taken from a caller, so a tenant cannot
make an id of another's.
"""

from __future__ import annotations

import re
import uuid

DEFAULT = "default"
#: A tenant's name: it appears in job ids, Redis keys, URLs and logs. At most 31 characters, so that
#: an id (name, ``_``, 32 hex digits) fits the 64 a job id may have; no ``_``, which ends it in an id.
NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,30}$"
_NAME = re.compile(NAME_PATTERN)
SEPARATOR = "_"


def check(name: str) -> str:
    """``name`` if it can be a tenant's; else ``ValueError`` saying what one may be."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"tenant {name!r}: 1 to 31 lowercase letters, digits or '-', beginning with a letter or digit")
    return name


def new_job_id(tenant: str = DEFAULT, *, suffix: str = "") -> str:
    """A fresh job id of ``tenant``'s; ``suffix`` (a sharded queue's ``-<shard>``) takes the place of
    as many of its hex digits, so the id still fits in 64 characters."""
    hex_id = uuid.uuid4().hex[: 32 - len(suffix)] + suffix
    return hex_id if tenant == DEFAULT else f"{tenant}{SEPARATOR}{hex_id}"


def of(job_id: str) -> str:
    """The tenant whose job ``job_id`` is (an id without a tenant's prefix is the default tenant's)."""
    head, sep, _ = job_id.partition(SEPARATOR)
    return head if sep and _NAME.fullmatch(head) else DEFAULT
