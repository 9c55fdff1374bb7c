"""API keys: only their sha256 is stored, in settings or a file; each carries scopes and a tenant.

An entry reads ``name:scope,scope:sha256-hex:tenant``, e.g. ``ci:read,submit:9f86d0...:acme``. An
entry without a tenant (as every entry was before tenants) is the default tenant's. Keys are random
(``agentq-api keygen`` draws 32 bytes), so one round of sha256 is enough: there is nothing to
guess a key from, and the API compares digests in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path

from agentq import tenants

#: read: status, results, events, listings, workers, queue; submit: create and re-run jobs; cancel;
#: admin: every scope, over every tenant's jobs.
SCOPES = ("read", "submit", "cancel", "admin")


@dataclass(frozen=True)
class ApiKey:
    """One configured key: who it is, what it may do, the digest of its secret."""

    name: str
    scopes: frozenset[str]
    sha256: str
    tenant: str = tenants.DEFAULT

    @property
    def admin(self) -> bool:
        """Sees and may act on every tenant's jobs."""
        return "admin" in self.scopes

    def allows(self, scope: str) -> bool:
        return self.admin or scope in self.scopes


def digest(key: str) -> str:
    """The sha256 hex digest of a key, as entries store it."""
    return hashlib.sha256(key.encode()).hexdigest()


def parse_entry(entry: str) -> ApiKey:
    """Read one ``name:scopes:sha256[:tenant]`` entry; raise ``ValueError`` naming what is wrong."""
    parts = entry.strip().split(":")
    if len(parts) not in (3, 4):
        raise ValueError("an API key entry is 'name:scope,scope:sha256-hex' or 'name:scope,scope:sha256-hex:tenant'")
    name, scopes, sha = parts[:3]
    tenant = parts[3] if len(parts) == 4 else tenants.DEFAULT
    chosen = frozenset(s.strip() for s in scopes.split(",") if s.strip())
    if not name or not chosen or not chosen <= set(SCOPES):
        raise ValueError(f"key {name!r}: scopes must be some of {', '.join(SCOPES)}")
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha.lower()):
        raise ValueError(f"key {name!r}: the digest must be 64 hex digits (sha256)")
    try:
        tenants.check(tenant)
    except ValueError as exc:
        raise ValueError(f"key {name!r}: {exc}") from None
    return ApiKey(name, chosen, sha.lower(), tenant)


def load(entries: tuple[str, ...], path: str | None) -> list[ApiKey]:
    """Every configured key: the settings' entries, then the file's lines (``#`` starts a comment)."""
    keys = [parse_entry(e) for e in entries]
    if path:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                keys.append(parse_entry(line))
    return keys


def find(keys: list[ApiKey], presented: str) -> ApiKey | None:
    """The key whose digest matches ``presented``, compared in constant time."""
    got = digest(presented)
    found = None
    for key in keys:
        if hmac.compare_digest(key.sha256, got):
            found = key
    return found


def new_key(name: str, scopes: tuple[str, ...], tenant: str = tenants.DEFAULT) -> tuple[str, str]:
    """A fresh random key and its entry (with no tenant field for the default tenant)."""
    key = "aq_" + secrets.token_urlsafe(32)
    entry = f"{name}:{','.join(scopes)}:{digest(key)}"
    if tenant != tenants.DEFAULT:
        entry += f":{tenant}"
    parse_entry(entry)
    return key, entry
