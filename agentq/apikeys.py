"""API keys: only their sha256 is stored, in settings or a file; each carries scopes.

An entry reads ``name:scope,scope:sha256-hex``, e.g. ``ci:read,submit:9f86d0...``. Keys are random
(``agentq-api keygen`` draws 32 bytes), so one round of sha256 is enough: there is nothing to
guess a key from, and the API compares digests in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path

#: read: status, results, events, listings, workers, queue; submit: create and re-run jobs; cancel.
SCOPES = ("read", "submit", "cancel")


@dataclass(frozen=True)
class ApiKey:
    """One configured key: who it is, what it may do, the digest of its secret."""

    name: str
    scopes: frozenset[str]
    sha256: str


def digest(key: str) -> str:
    """The sha256 hex digest of a key, as entries store it."""
    return hashlib.sha256(key.encode()).hexdigest()


def parse_entry(entry: str) -> ApiKey:
    """Read one ``name:scopes:sha256`` entry; raise ``ValueError`` naming what is wrong."""
    parts = entry.strip().split(":")
    if len(parts) != 3:
        raise ValueError("an API key entry is 'name:scope,scope:sha256-hex'")
    name, scopes, sha = parts
    chosen = frozenset(s.strip() for s in scopes.split(",") if s.strip())
    if not name or not chosen or not chosen <= set(SCOPES):
        raise ValueError(f"key {name!r}: scopes must be some of {', '.join(SCOPES)}")
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha.lower()):
        raise ValueError(f"key {name!r}: the digest must be 64 hex digits (sha256)")
    return ApiKey(name, chosen, sha.lower())


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


def new_key(name: str, scopes: tuple[str, ...]) -> tuple[str, str]:
    """A fresh random key and its entry."""
    key = "aq_" + secrets.token_urlsafe(32)
    entry = f"{name}:{','.join(scopes)}:{digest(key)}"
    parse_entry(entry)
    return key, entry
