"""API keys: the hashed entry format, where keys are read from, and the keygen command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from agentq import apikeys
from agentq.settings import Settings
from producer.api.cli import app
from producer.api.guard import scope_for


def test_an_entry_holds_a_name_scopes_and_a_digest_never_the_key() -> None:
    """A new key's entry parses back to its name and scopes, and holds the key's sha256, not the key."""
    key, entry = apikeys.new_key("ci", ("read", "submit"))
    parsed = apikeys.parse_entry(entry)
    assert (parsed.name, parsed.scopes, parsed.sha256) == ("ci", frozenset({"read", "submit"}), apikeys.digest(key))
    assert key not in entry
    assert apikeys.find([parsed], key) == parsed and apikeys.find([parsed], key + "x") is None


@pytest.mark.parametrize(
    "entry",
    ["ci:read", "ci:write:" + "a" * 64, ":read:" + "a" * 64, "ci:read:abc", "ci::" + "a" * 64, "ci:read:" + "g" * 64],
)
def test_malformed_entries_are_refused_as_bad_settings(entry: str) -> None:
    """A malformed entry (missing part, unknown scope, not a sha256) fails the settings with a reason."""
    with pytest.raises(ValidationError, match=r"api_keys"):
        Settings(_env_file=None, api_keys=(entry,))  # type: ignore[call-arg]


def test_keys_are_read_from_settings_and_a_file(tmp_path: Path) -> None:
    """Entries come from api_keys and from api_keys_file (one a line, # comments)."""
    _, first = apikeys.new_key("one", ("read",))
    _, second = apikeys.new_key("two", ("cancel",))
    path = tmp_path / "keys"
    path.write_text(f"# the ops team\n{second}  # rotated monthly\n\n")
    names = [k.name for k in apikeys.load((first,), str(path))]
    assert names == ["one", "two"]


def test_keys_are_read_from_a_secret_file(tmp_path: Path) -> None:
    """A container secret named agentq_api_keys (a JSON list) is read like the variable."""
    _, entry = apikeys.new_key("secret", ("read",))
    (tmp_path / "agentq_api_keys").write_text(json.dumps([entry]))
    assert Settings(_env_file=None, _secrets_dir=str(tmp_path)).api_keys == (entry,)  # type: ignore[call-arg]


def test_keygen_prints_the_key_apart_from_its_entry() -> None:
    """keygen: the key on stderr (once), the entry (or the .env line) on stdout; bad scopes or a bad tenant
    exit 2 with one line."""
    done = CliRunner().invoke(app, ["keygen", "--name", "me", "--scopes", "read", "--env"])
    assert done.exit_code == 0
    line = done.stdout.strip()
    assert line.startswith("AGENTQ_API_KEYS=")
    [entry] = json.loads(line.split("=", 1)[1])
    key = done.stderr.rsplit(": ", 1)[1].strip()
    assert apikeys.parse_entry(entry).sha256 == apikeys.digest(key)
    assert CliRunner().invoke(app, ["keygen", "--name", "me", "--scopes", "owner"]).exit_code == 2
    refused = CliRunner().invoke(app, ["keygen", "--name", "me", "--tenant", "Acme_Corp"])
    assert refused.exit_code == 2 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "tenant 'Acme_Corp'" in refused.stderr
    made = CliRunner().invoke(app, ["keygen", "--name", "me", "--scopes", "read", "--tenant", "acme"])
    assert made.exit_code == 0 and apikeys.parse_entry(made.stdout.strip()).tenant == "acme"


def test_an_entry_names_its_tenant_and_an_old_entry_is_the_default_tenants() -> None:
    """'name:scopes:sha256:tenant'; the three-field entries made before tenants read as the default tenant;
    admin allows every scope; a tenant that cannot be one is refused naming the key."""
    _, old = apikeys.new_key("old", ("read",))
    assert old.count(":") == 2 and apikeys.parse_entry(old).tenant == "default"
    _, new = apikeys.new_key("new", ("read", "submit"), "team-a")
    key = apikeys.parse_entry(new)
    assert (key.tenant, key.admin, key.allows("submit"), key.allows("cancel")) == ("team-a", False, True, False)
    _, admin = apikeys.new_key("ops", ("admin",))
    assert all(apikeys.parse_entry(admin).allows(s) for s in ("read", "submit", "cancel"))
    for tenant in ("", "Team", "a_b", "-a", "x" * 32):
        with pytest.raises(ValueError, match="key 'new': tenant"):
            apikeys.parse_entry(new.rsplit(":", 1)[0] + ":" + tenant)
    with pytest.raises(ValueError, match="an API key entry is"):
        apikeys.parse_entry(new + ":extra")


def test_each_route_needs_its_scope() -> None:
    """GETs need read; cancelling needs cancel; creating and re-running need submit."""
    assert scope_for("GET", "/api/jobs/x/events") == "read"
    assert scope_for("POST", "/api/jobs/x/cancel") == "cancel"
    assert scope_for("POST", "/api/jobs") == scope_for("POST", "/api/jobs/x/retry") == "submit"


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("tenant", "Team A", "String should match pattern"),
        ("tenant_weights", {"team_a": 2}, "tenant 'team_a'"),
        ("tenant_weights", {"team-a": 0}, "a weight is a number from 0.01 to 1000"),
        ("tenant_quotas", {"Team": {"in_flight": 1}}, "tenant 'Team'"),
        ("tenant_quotas", {"team-a": {"in_flight": 0}}, "greater than 0"),
        ("tenant_quotas", {"team-a": {"per_hour": 5}}, "Extra inputs are not permitted"),
    ],
)
def test_tenant_names_weights_and_quotas_that_cannot_be_are_refused(field: str, value: object, says: str) -> None:
    """Each new setting refuses what cannot be, saying why (every command then exits 2 with one line)."""
    with pytest.raises(ValidationError, match=says):
        Settings(_env_file=None, **{field: value})  # type: ignore[arg-type]


def test_a_quota_named_star_is_every_unnamed_tenants() -> None:
    s = Settings(_env_file=None, tenant_quotas={"*": {"per_minute": 60}, "vip": {"in_flight": 500}})  # type: ignore[arg-type]
    assert s.quota_of("vip").in_flight == 500 and s.quota_of("anyone").per_minute == 60  # type: ignore[union-attr]
    assert Settings(_env_file=None).quota_of("anyone") is None  # type: ignore[call-arg]
